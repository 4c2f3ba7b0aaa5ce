"""
The resources of API.md through L{exp.twisted.ExpService}, end to end
against a real local server with the demo seed: devices, things,
experiences, locations, zones, feeds, data and content.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web import resource, server, static

from exp.server import demo_seed_path
from exp.server.testing import DEMO
from exp.twisted import (
    ApiError,
    Content,
    Data,
    Device,
    Experience,
    ExpService,
    Feed,
    Location,
    ResourceList,
    RuntimeError,
    Thing,
    Zone,
)

from ._sdk import Services, within

DEMO_DIR = os.path.dirname(demo_seed_path())
LOGO = "0f2fc261-c240-59a0-bda3-2828a535fee0"
WELCOME = "8d998bce-bedd-5c3c-8091-edfca9b734ed"
HOMEPAGE = "45b7421d-14a5-5477-9a29-ac63d548bccc"
IMAGES = "3dda8f60-d3d2-52f6-b198-9dcb6fa8fd4e"


def demo_bytes(*path: str) -> bytes:
    with open(os.path.join(DEMO_DIR, *path), "rb") as f:
        return f.read()


@pytest_twisted.async_yield_fixture()
async def user(sdk: Services) -> AsyncIterator[ExpService]:
    yield await sdk.user(enable_network=False)


async def fetch(url: str) -> tuple[int, bytes]:
    """GET C{url} with a plain client, as a browser or player would."""
    response = await within(treq.get(url, persistent=False))
    return response.code, await within(treq.content(response))


# -- the common resources ----------------------------------------------------------

KINDS = {
    "device": (Device, "devices"),
    "thing": (Thing, "things"),
    "experience": (Experience, "experiences"),
    "location": (Location, "locations"),
    "feed": (Feed, "feeds"),
}


def calls(service: ExpService, kind: str) -> tuple[Any, Any, Any, Any]:
    plural = KINDS[kind][1]
    return (getattr(service, f"get_{kind}"), getattr(service, f"find_{plural}"),
            getattr(service, f"create_{kind}"), getattr(service, f"delete_{kind}"))


@pytest.mark.parametrize("kind", list(KINDS))
@pytest_twisted.ensureDeferred
async def test_create_get_find_delete(user: ExpService, kind: str) -> None:
    """create_*, get_*, find_* and delete_* of every common resource."""
    cls = KINDS[kind][0]
    get, find, create, delete = calls(user, kind)
    created = await within(create({"name": f"new {kind}", "subtype": "test:sdk",
                                   "extra": {"n": 1}}))
    assert type(created) is cls
    assert created.uuid and created.name == f"new {kind}"
    assert created.document["extra"] == {"n": 1}
    got = await within(get(created.uuid))
    assert type(got) is cls and got.document == created.document
    found = await within(find({"subtype": "test:sdk"}))
    assert isinstance(found, ResourceList) and isinstance(found, list)
    assert [r.uuid for r in found] == [created.uuid] and found.total == 1
    assert all(type(r) is cls for r in found)
    assert [r.uuid for r in await within(find(subtype="test:sdk"))] == [created.uuid]
    assert await within(delete(created.uuid)) is None
    assert await within(get(created.uuid)) is None
    assert (await within(find(subtype="test:sdk"))).total == 0
    with pytest.raises(ApiError) as caught:
        await within(delete(created.uuid))
    assert caught.value.status_code == 404


@pytest.mark.parametrize("kind", list(KINDS))
@pytest_twisted.ensureDeferred
async def test_getters_answer_none_for_missing_uuid(user: ExpService, kind: str) -> None:
    """get_* answers None for an unknown, empty or missing uuid, and for odd characters."""
    get = calls(user, kind)[0]
    for uuid in ("no-such-uuid", "", None, "a/b?c#d", "..", "ü ñ"):
        assert await within(get(uuid)) is None


@pytest.mark.parametrize("kind", list(KINDS))
@pytest_twisted.ensureDeferred
async def test_getters_and_creators_without_arguments(user: ExpService, kind: str) -> None:
    """As in 1.0.x scripts: get_*() is None; create_*() and create_*(None) create from {},
    with the server's defaults (uuid, name "")."""
    get, _, create, delete = calls(user, kind)
    assert await within(get()) is None
    for made in (await within(create()), await within(create(None))):
        assert isinstance(made, KINDS[kind][0])
        assert made.uuid and made.name == ""
        await within(delete(made.uuid))
    if kind == "location":
        location = await within(create())
        assert location.document["zones"] == [] and location.get_zones() == []
    assert await within(user.get_data()) is None


@pytest.mark.parametrize("kind", list(KINDS))
@pytest_twisted.ensureDeferred
async def test_create_needs_a_dict(user: ExpService, kind: str) -> None:
    """create_* of something other than a dict raises exp.RuntimeError."""
    create = calls(user, kind)[2]
    with pytest.raises(RuntimeError):
        await within(create(["name", "x"]))


@pytest_twisted.ensureDeferred
async def test_find_params_as_dict_and_keywords(user: ExpService) -> None:
    """find_* takes a dict, keywords or both; total counts every match."""
    for n in range(5):
        await within(user.create_thing({"name": f"t{n}", "subtype": "test:many",
                                        "rank": n}))
    page = await within(user.find_things({"subtype": "test:many", "limit": 2, "sort": "-rank"}))
    assert [t.name for t in page] == ["t4", "t3"]
    assert page.total == 5
    both = await within(user.find_things({"subtype": "test:many"}, limit=2, skip=1,
                                         sort="rank"))
    assert [t.name for t in both] == ["t1", "t2"] and both.total == 5
    counted = await within(user.find_things(subtype="test:many", limit=0))
    assert list(counted) == [] and counted.total == 5
    nested = await within(user.find_things({"location.uuid": "demo-location"}))
    assert [t.uuid for t in nested] == ["demo-thing"]
    everything = await within(user.find_devices())
    assert everything.total == len(everything) == 1


@pytest_twisted.ensureDeferred
async def test_bad_find_params_are_an_api_error(user: ExpService) -> None:
    """A query the server cannot run is an ApiError 400."""
    with pytest.raises(ApiError) as caught:
        await within(user.find_devices(limit="many"))
    assert caught.value.status_code == 400


@pytest_twisted.ensureDeferred
async def test_save_refresh_delete(user: ExpService, sdk: Services) -> None:
    """save() PATCHes and takes the server's document; refresh() GETs; delete() deletes."""
    thing = await within(user.create_thing({"name": "before", "tags": ["a"]}))
    thing.name = "after"
    thing.document["tags"].append("b")
    assert await within(thing.save()) is thing
    assert thing.name == "after"
    stored = await within(user.get_thing(thing.uuid))
    assert stored is not None and stored.name == "after" and stored.document["tags"] == ["a", "b"]

    other = await sdk.device(enable_network=False)
    theirs = await within(other.get_thing(thing.uuid))
    assert theirs is not None
    theirs.document["colour"] = "red"
    await within(theirs.save())
    assert "colour" not in thing.document
    assert await within(thing.refresh()) is thing
    assert thing.document["colour"] == "red"

    assert await within(thing.delete()) is None
    assert await within(user.get_thing(thing.uuid)) is None
    with pytest.raises(ApiError) as caught:
        await within(thing.refresh())
    assert caught.value.status_code == 404
    with pytest.raises(ApiError):
        await within(thing.save())


@pytest_twisted.ensureDeferred
async def test_resource_channels(user: ExpService) -> None:
    """get_channel of a resource is named by its uuid, with its flags."""
    device = await within(user.get_device(DEMO["device_uuid"]))
    assert device is not None
    channel = device.get_channel()
    assert (channel.name, channel.system, channel.consumer) == (DEMO["device_uuid"], False,
                                                                 False)
    system = device.get_channel(system=True, consumer=True)
    assert (system.name, system.system, system.consumer) == (DEMO["device_uuid"], True, True)
    assert system.id != channel.id


@pytest_twisted.ensureDeferred
async def test_created_device_can_log_in(user: ExpService, sdk: Services) -> None:
    """create_device answers the device's secret, and the device can log in with it."""
    created = await within(user.create_device({"name": "kiosk"}))
    secret = created.document["secret"]
    assert isinstance(secret, str) and secret
    kiosk = await sdk.authenticated(uuid=created.uuid, secret=secret, enable_network=False)
    current = await within(kiosk.get_current_device())
    assert current is not None and current.uuid == created.uuid and current.name == "kiosk"


# -- devices, things, experiences and locations together ------------------------------


@pytest_twisted.ensureDeferred
async def test_device_location_zones_experience(user: ExpService) -> None:
    """A device finds its location, its zones in it and its experience."""
    device = await within(user.get_device(DEMO["device_uuid"]))
    assert device is not None
    location = await within(device.get_location())
    assert isinstance(location, Location) and location.uuid == "demo-location"
    assert location.name == "head office"
    zones = await within(device.get_zones())
    assert [(z.key, z.name) for z in zones] == [("entrance", "Entrance")]
    assert all(isinstance(z, Zone) for z in zones)
    experience = await within(device.get_experience())
    assert isinstance(experience, Experience) and experience.uuid == "demo-experience"
    assert experience.name == "welcome"


@pytest_twisted.ensureDeferred
async def test_device_without_location_or_experience(user: ExpService) -> None:
    """A device with no (or an unknown) location and experience answers None and []."""
    bare = await within(user.create_device({"name": "bare"}))
    assert await within(bare.get_location()) is None
    assert await within(bare.get_zones()) == []
    assert await within(bare.get_experience()) is None
    lost = await within(user.create_device({
        "name": "lost", "location": {"uuid": "gone", "zones": [{"key": "x"}]},
        "experience": {"uuid": "gone"}}))
    assert await within(lost.get_location()) is None
    assert await within(lost.get_zones()) == []
    assert await within(lost.get_experience()) is None


@pytest_twisted.ensureDeferred
async def test_thing_location_and_zones(user: ExpService) -> None:
    """A thing finds its location and zones."""
    thing = await within(user.get_thing("demo-thing"))
    assert thing is not None and thing.subtype == "scala:thing:rfid"
    location = await within(thing.get_location())
    assert location is not None and location.uuid == "demo-location"
    assert [z.key for z in await within(thing.get_zones())] == ["entrance"]


@pytest_twisted.ensureDeferred
async def test_current_resources_of_the_demo_device(sdk: Services) -> None:
    """As the demo device, get_current_* answer its device, experience, location, zones."""
    device = await sdk.device(enable_network=False)
    current = await within(device.get_current_device())
    assert isinstance(current, Device) and current.uuid == DEMO["device_uuid"]
    experience = await within(device.get_current_experience())
    assert isinstance(experience, Experience) and experience.uuid == "demo-experience"
    location = await within(device.get_current_location())
    assert isinstance(location, Location) and location.uuid == "demo-location"
    zones = await within(device.get_current_zones())
    assert [z.key for z in zones] == ["entrance"]


@pytest.mark.parametrize("who", ["user", "consumer"])
@pytest_twisted.ensureDeferred
async def test_current_resources_of_others_are_none(sdk: Services, who: str) -> None:
    """Users and consumer apps have no current device, experience, location or zones."""
    service = await (sdk.user if who == "user" else sdk.consumer)(enable_network=False)
    assert await within(service.get_current_device()) is None
    assert await within(service.get_current_experience()) is None
    assert await within(service.get_current_location()) is None
    assert await within(service.get_current_zones()) == []


@pytest_twisted.ensureDeferred
async def test_experience_devices(user: ExpService) -> None:
    """experience.get_devices lists the devices of that experience, with params."""
    experience = await within(user.get_experience("demo-experience"))
    assert experience is not None
    await within(user.create_device({"name": "second", "experience": {"uuid": experience.uuid}}))
    await within(user.create_device({"name": "elsewhere"}))
    devices = await within(experience.get_devices())
    assert sorted(d.name for d in devices) == ["lobby", "second"] and devices.total == 2
    only = await within(experience.get_devices({"name": "second"}))
    assert [d.name for d in only] == ["second"]
    assert [d.name for d in await within(experience.get_devices(name="lobby"))] == ["lobby"]
    counted = await within(experience.get_devices(limit=0))
    assert counted.total == 2


@pytest_twisted.ensureDeferred
async def test_location_devices_things_zones(user: ExpService) -> None:
    """A location lists its devices, things and zones."""
    location = await within(user.get_location("demo-location"))
    assert location is not None
    assert [d.uuid for d in await within(location.get_devices())] == [DEMO["device_uuid"]]
    assert [t.uuid for t in await within(location.get_things())] == ["demo-thing"]
    assert [d.uuid for d in await within(location.get_devices({"name": "nobody"}))] == []
    assert [t.uuid for t in await within(location.get_things(name="badge reader"))] == [
        "demo-thing"]
    zones = location.get_zones()
    assert [(z.key, z.name) for z in zones] == [("entrance", "Entrance"), ("cafe", "Cafe")]


@pytest_twisted.ensureDeferred
async def test_location_layout_url_serves_the_image(user: ExpService) -> None:
    """get_layout_url is fetchable without a header and answers the PNG layout."""
    location = await within(user.get_location("demo-location"))
    assert location is not None
    url = location.get_layout_url()
    assert url.startswith(user.auth["api"]["host"])
    code, body = await fetch(url)
    assert code == 200
    assert body.startswith(b"\x89PNG\r\n\x1a\n")
    assert body == demo_bytes("layout.png")


@pytest_twisted.ensureDeferred
async def test_zone_devices_things_location_channel(user: ExpService) -> None:
    """A zone has a key and name, lists its devices and things, knows its location."""
    location = await within(user.get_location("demo-location"))
    assert location is not None
    entrance, cafe = location.get_zones()
    assert (entrance.key, entrance.name) == ("entrance", "Entrance")
    assert [d.uuid for d in await within(entrance.get_devices())] == [DEMO["device_uuid"]]
    assert [t.uuid for t in await within(entrance.get_things())] == ["demo-thing"]
    assert list(await within(cafe.get_devices())) == []
    assert list(await within(cafe.get_things())) == []
    assert (await within(cafe.get_location())).uuid == "demo-location"
    channel = cafe.get_channel(system=True)
    assert channel.name == "demo-location:zone:cafe" and channel.system


@pytest_twisted.ensureDeferred
async def test_zone_save_and_refresh_go_through_the_location(
        user: ExpService, sdk: Services) -> None:
    """zone.save() saves its location; zone.refresh() takes the location's new zone."""
    location = await within(user.get_location("demo-location"))
    assert location is not None
    cafe = location.get_zones()[1]
    cafe.name = "Coffee bar"
    assert await within(cafe.save()) is cafe
    stored = await within(user.get_location("demo-location"))
    assert stored is not None
    assert [z.name for z in stored.get_zones()] == ["Entrance", "Coffee bar"]

    other = await sdk.device(enable_network=False)
    theirs = await within(other.get_location("demo-location"))
    assert theirs is not None
    theirs.document["zones"][1]["name"] = "Canteen"
    await within(theirs.save())
    assert cafe.name == "Coffee bar"
    assert await within(cafe.refresh()) is cafe
    assert cafe.name == "Canteen"
    assert cafe.key == "cafe"


# -- feeds ----------------------------------------------------------------------------


class SearchResource(resource.Resource):
    """C{/search/<value>}: a JSON document naming the value searched for."""

    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        value = request.postpath[0].decode("utf-8") if request.postpath else ""
        return json.dumps({"searched": value}).encode("utf-8")


@pytest.fixture
def server_config() -> dict[str, Any]:
    """The feeds' sources are on loopback: the server may fetch from there."""
    return {"feed_allow": ["127.0.0.0/8"]}


@pytest_twisted.async_yield_fixture()
async def source() -> AsyncIterator[str]:
    """A little web server that serves JSON feeds."""
    root = resource.Resource()
    root.putChild(b"feed.json", static.Data(
        json.dumps({"items": [{"title": "one"}, {"title": "two"}]}).encode("utf-8"),
        "application/json"))
    root.putChild(b"search", SearchResource())
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        server.Site(root))
    yield f"http://127.0.0.1:{port.getHost().port}"
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_feed_data(user: ExpService, source: str) -> None:
    """feed.get_data() answers the feed's decoded JSON data."""
    feed = await within(user.create_feed({"name": "news", "subtype": "scala:feed:json",
                                          "url": f"{source}/feed.json"}))
    assert await within(feed.get_data()) == {"items": [{"title": "one"}, {"title": "two"}]}
    again = await within(user.get_feed(feed.uuid))
    assert again is not None
    assert (await within(again.get_data()))["items"][1]["title"] == "two"


@pytest_twisted.ensureDeferred
async def test_dynamic_feed_data(user: ExpService, source: str) -> None:
    """A dynamic feed takes its search value from get_data's keyword parameters."""
    feed = await within(user.create_feed({"name": "search", "subtype": "scala:feed:json",
                                          "url": source + "/search/{searchValue}"}))
    assert await within(feed.get_data(searchValue="tea time")) == {"searched": "tea time"}
    with pytest.raises(ApiError) as caught:
        await within(feed.get_data())
    assert caught.value.code == "feed.searchValueRequired"


@pytest_twisted.ensureDeferred
async def test_unavailable_feed_is_an_api_error(user: ExpService) -> None:
    """A feed the server has no provider for is ApiError feed.unavailable, no made-up data."""
    feed = await within(user.create_feed({"name": "weather", "subtype": "scala:feed:weather"}))
    with pytest.raises(ApiError) as caught:
        await within(feed.get_data())
    assert caught.value.code == "feed.unavailable"
    assert caught.value.status_code == 422


@pytest_twisted.ensureDeferred
async def test_unreachable_feed_source_is_a_server_error(user: ExpService) -> None:
    """A feed whose source cannot be fetched is an ApiError 502 feed.fetchFailed."""
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        server.Site(resource.Resource()))
    gone = f"http://127.0.0.1:{port.getHost().port}/feed.json"
    await port.stopListening()
    feed = await within(user.create_feed({"name": "gone", "subtype": "scala:feed:json",
                                          "url": gone}))
    with pytest.raises(ApiError) as caught:
        await within(feed.get_data())
    assert (caught.value.status_code, caught.value.code) == (502, "feed.fetchFailed")


# -- data -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_get_data(user: ExpService) -> None:
    """get_data answers the item with key, group and value; None when missing."""
    fluffy = await within(user.get_data("fluffy", "cats"))
    assert isinstance(fluffy, Data)
    assert (fluffy.key, fluffy.group, fluffy.value) == ("fluffy", "cats", {"age": 3})
    assert await within(user.get_data("rex", "cats")) is None
    assert await within(user.get_data("fluffy")) is None  # group 'default'


@pytest_twisted.ensureDeferred
async def test_create_data_default_group_and_overwrite(user: ExpService) -> None:
    """create_data stores (overwriting) any JSON value; the group defaults to 'default'."""
    item = await within(user.create_data("colour", value="blue"))
    assert (item.key, item.group, item.value) == ("colour", "default", "blue")
    item = await within(user.create_data("colour", "default", [1, {"a": None}]))
    assert item.value == [1, {"a": None}]
    stored = await within(user.get_data("colour"))
    assert stored is not None and stored.value == [1, {"a": None}]
    assert (await within(user.create_data(key="4", group="cats",
                                          value={"name": "fluffy"}))).value == {
        "name": "fluffy"}


@pytest_twisted.ensureDeferred
async def test_find_data(user: ExpService) -> None:
    """find_data takes a dict or keywords and carries total."""
    for n in range(3):
        await within(user.create_data(f"k{n}", "counts", n))
    found = await within(user.find_data({"group": "counts"}))
    assert sorted(d.key for d in found) == ["k0", "k1", "k2"] and found.total == 3
    assert all(isinstance(d, Data) for d in found)
    page = await within(user.find_data(group="counts", limit=1, sort="-value"))
    assert [d.value for d in page] == [2] and page.total == 3


@pytest_twisted.ensureDeferred
async def test_data_value_save_refresh_delete(user: ExpService, sdk: Services) -> None:
    """The value setter plus save() stores it; refresh() reloads; delete() removes."""
    item = await within(user.create_data("door", "sensors", {"open": False}))
    item.value = {"open": True}
    assert await within(item.save()) is item
    stored = await within(user.get_data("door", "sensors"))
    assert stored is not None and stored.value == {"open": True}

    other = await sdk.device(enable_network=False)
    await within(other.create_data("door", "sensors", {"open": "ajar"}))
    assert item.value == {"open": True}
    assert await within(item.refresh()) is item
    assert item.value == {"open": "ajar"}

    assert await within(item.delete()) is None
    assert await within(user.get_data("door", "sensors")) is None
    channel = item.get_channel(system=True)
    assert channel.name == "data:sensors:door" and channel.system


@pytest_twisted.ensureDeferred
async def test_delete_data(user: ExpService) -> None:
    """delete_data removes an item; deleting a missing one is ApiError 404."""
    await within(user.create_data("gone", "tmp", 1))
    assert await within(user.delete_data("gone", "tmp")) is None
    assert await within(user.get_data("gone", "tmp")) is None
    with pytest.raises(ApiError) as caught:
        await within(user.delete_data("gone", "tmp"))
    assert caught.value.status_code == 404


@pytest_twisted.ensureDeferred
async def test_data_keys_with_odd_characters(user: ExpService) -> None:
    """Keys and groups with slashes, spaces and non-ASCII are escaped path segments."""
    item = await within(user.create_data("a/b c?d#e", "grüppe/1", "odd"))
    assert (item.key, item.group) == ("a/b c?d#e", "grüppe/1")
    stored = await within(user.get_data("a/b c?d#e", "grüppe/1"))
    assert stored is not None and stored.value == "odd"
    found = await within(user.find_data(group="grüppe/1"))
    assert [d.key for d in found] == ["a/b c?d#e"]
    await within(user.delete_data("a/b c?d#e", "grüppe/1"))
    assert await within(user.get_data("a/b c?d#e", "grüppe/1")) is None


@pytest.mark.parametrize(("key", "group"), [("", "g"), ("k", ""), (None, "g"), ("k", 5)])
@pytest_twisted.ensureDeferred
async def test_bad_data_key_or_group(user: ExpService, key: Any, group: Any) -> None:
    """An empty or non-string key or group raises exp.RuntimeError on writes; the getter
    answers None for a missing one, as getters do."""
    for call in (lambda: user.create_data(key, group, 1), lambda: user.delete_data(key, group)):
        with pytest.raises(RuntimeError):
            await within(call())
    if key in (None, "") or group == "":
        assert await within(user.get_data(key, group)) is None
    else:
        with pytest.raises(RuntimeError):
            await within(user.get_data(key, group))


# -- content ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_find_and_get_content(user: ExpService) -> None:
    """find_content lists the tree (dict or keywords); get_content gets one, None if unknown."""
    everything = await within(user.find_content())
    assert everything.total == 9
    assert all(isinstance(c, Content) for c in everything)
    files = await within(user.find_content({"subtype": "scala:content:file"}))
    assert sorted(c.name for c in files) == ["logo.png", "star.png", "welcome.txt"]
    assert [c.name for c in await within(user.find_content(name="homepage"))] == ["homepage"]
    root = await within(user.get_content("root"))
    assert root is not None and root.subtype == "scala:content:folder"
    assert await within(user.get_content("no-such-item")) is None
    assert await within(user.get_content(None)) is None


@pytest_twisted.ensureDeferred
async def test_content_children(user: ExpService) -> None:
    """get_children lists an item's children, with params."""
    root = await within(user.get_content("root"))
    assert root is not None
    children = await within(root.get_children())
    assert sorted(c.name for c in children) == ["apps", "homepage", "images", "welcome.txt"]
    assert children.total == 4
    folders = await within(root.get_children({"subtype": "scala:content:folder"}))
    assert sorted(c.name for c in folders) == ["apps", "images"]
    assert [c.name for c in await within(root.get_children(name="images"))] == ["images"]
    images = await within(user.get_content(IMAGES))
    assert images is not None
    assert sorted(c.name for c in await within(images.get_children())) == ["icons", "logo.png"]
    logo = await within(user.get_content(LOGO))
    assert logo is not None
    assert list(await within(logo.get_children())) == []


@pytest_twisted.ensureDeferred
async def test_content_urls_deliver_the_files(user: ExpService) -> None:
    """get_url of a file delivers its bytes; a URL item's is its URL; a folder's is None."""
    welcome = await within(user.get_content(WELCOME))
    assert welcome is not None and welcome.subtype == "scala:content:file"
    url = welcome.get_url()
    assert url is not None and url.startswith(user.auth["api"]["host"])
    assert await fetch(url) == (200, demo_bytes("content", "welcome.txt"))
    assert demo_bytes("content", "welcome.txt") == b"Welcome to EXP.\n"
    logo = await within(user.get_content(LOGO))
    assert logo is not None
    assert await fetch(logo.get_url()) == (200, demo_bytes("content", "images", "logo.png"))
    homepage = await within(user.get_content(HOMEPAGE))
    assert homepage is not None and homepage.subtype == "scala:content:url"
    assert homepage.get_url() == "https://www.goexp.io/"
    root = await within(user.get_content("root"))
    assert root is not None and root.get_url() is None


@pytest_twisted.ensureDeferred
async def test_content_app_url_delivers_its_index(user: ExpService) -> None:
    """An app's get_url is its index.html, delivered; its own files are under its path."""
    [app] = await within(user.find_content(subtype="scala:content:app"))
    assert (app.name, app.document["path"]) == ("hello", "/apps/hello")
    url = app.get_url()
    assert url is not None and "/api/delivery/apps/hello/index.html?" in url
    assert await fetch(url) == (200, demo_bytes("content", "apps", "hello", "index.html"))
    script = url.replace("/index.html?", "/app.js?")
    assert await fetch(script) == (200, demo_bytes("content", "apps", "hello", "app.js"))


@pytest_twisted.ensureDeferred
async def test_content_variants(user: ExpService) -> None:
    """has_variant and get_variant_url: the small logo is delivered; unknown variants are None."""
    logo = await within(user.get_content(LOGO))
    assert logo is not None
    assert logo.has_variant("small")
    assert not logo.has_variant("large")
    url = logo.get_variant_url("small")
    assert url is not None
    small = demo_bytes("content", "images", "logo.small.png")
    assert small != demo_bytes("content", "images", "logo.png")
    assert await fetch(url) == (200, small)
    assert logo.get_variant_url("large") is None
    welcome = await within(user.get_content(WELCOME))
    assert welcome is not None and not welcome.has_variant("small")


@pytest_twisted.ensureDeferred
async def test_content_is_read_only(user: ExpService) -> None:
    """Content cannot be saved or deleted: exp.RuntimeError."""
    logo = await within(user.get_content(LOGO))
    assert logo is not None
    with pytest.raises(RuntimeError):
        await within(logo.save())
    with pytest.raises(RuntimeError):
        await within(logo.delete())


@pytest_twisted.ensureDeferred
async def test_consumer_app_reads_but_cannot_write(sdk: Services) -> None:
    """A consumer app reads resources, data and content; writes are ApiError 403."""
    app = await sdk.consumer(enable_network=False)
    device = await within(app.get_device(DEMO["device_uuid"]))
    assert device is not None and "secret" not in device.document
    assert (await within(app.get_data("fluffy", "cats"))).value == {"age": 3}
    assert (await within(app.find_content())).total == 9
    for call in (lambda: app.create_thing({"name": "x"}),
                 lambda: app.create_data("k", "g", 1),
                 lambda: device.save(),
                 lambda: app.delete_device(DEMO["device_uuid"])):
        with pytest.raises(ApiError) as caught:
            await within(call())
        assert caught.value.status_code == 403
