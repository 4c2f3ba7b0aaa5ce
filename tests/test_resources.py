"""
The common resources, data items and logs of PROTOCOL.md A6 over real HTTP:
create, get, find (dotted filters, paging, sorting), patch and delete.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
import pytest_twisted

from exp.protocol import device_token, encode_channel
from exp.server.testing import RunningServer

from ._support import Recorder, assert_error
from .conftest import Http

#: Every collection of common resources, by its path under /api/.
COLLECTIONS = ["devices", "things", "experiences", "locations", "connectors/feeds"]


async def create(http: Http, token: str, collection: str, document: dict[str, Any]
                 ) -> dict[str, Any]:
    answer = await http.call("POST", f"/api/{collection}", document, token=token)
    assert answer.code == 200, answer
    return dict(answer.json)


async def find(http: Http, token: str, collection: str, **params: Any) -> dict[str, Any]:
    answer = await http.call("GET", f"/api/{collection}", token=token, params=params)
    assert answer.code == 200, answer
    assert set(answer.json) == {"results", "total"}, answer
    return dict(answer.json)


def data_path(group: str, key: str) -> str:
    return f"/api/data/{quote(group, safe='')}/{quote(key, safe='')}"


# -- create and get -------------------------------------------------------------


@pytest.mark.parametrize("collection", COLLECTIONS)
@pytest_twisted.ensureDeferred
async def test_create_assigns_uuid(http: Http, token: str, collection: str) -> None:
    """POST stores the document with a server-assigned uuid, and GET returns it."""
    created = await create(http, token, collection,
                           {"name": "new one", "subtype": "x:y", "extra": {"a": [1, 2]}})
    assert isinstance(created["uuid"], str) and created["uuid"]
    assert created["name"] == "new one"
    assert created["extra"] == {"a": [1, 2]}
    answer = await http.call("GET", f"/api/{collection}/{created['uuid']}", token=token)
    assert answer.code == 200, answer
    assert answer.json == created
    other = await create(http, token, collection, {"name": "new one"})
    assert other["uuid"] != created["uuid"]


@pytest.mark.parametrize("collection", COLLECTIONS)
@pytest_twisted.ensureDeferred
async def test_create_keeps_free_uuid_and_replaces_taken_one(
        http: Http, token: str, collection: str) -> None:
    """A client-given uuid is kept when free and replaced when already taken."""
    first = await create(http, token, collection, {"uuid": "chosen-uuid", "name": "first"})
    assert first["uuid"] == "chosen-uuid"
    second = await create(http, token, collection, {"uuid": "chosen-uuid", "name": "second"})
    assert second["uuid"] != "chosen-uuid"
    assert second["name"] == "second"
    answer = await http.call("GET", f"/api/{collection}/chosen-uuid", token=token)
    assert answer.json["name"] == "first"
    answer = await http.call("GET", f"/api/{collection}/{second['uuid']}", token=token)
    assert answer.json["name"] == "second"


@pytest_twisted.ensureDeferred
async def test_create_with_uuid_of_seeded_document_replaces_it(http: Http, token: str) -> None:
    """A uuid taken by a seeded document is replaced; the seeded one is untouched."""
    created = await create(http, token, "things", {"uuid": "demo-thing", "name": "impostor"})
    assert created["uuid"] != "demo-thing"
    answer = await http.call("GET", "/api/things/demo-thing", token=token)
    assert answer.json["name"] == "badge reader"


@pytest_twisted.ensureDeferred
async def test_created_device_has_a_secret_it_can_log_in_with(http: Http, token: str) -> None:
    """A created device's document includes a fresh secret that works for login."""
    device = await create(http, token, "devices", {"name": "screen"})
    assert isinstance(device["secret"], str) and len(device["secret"]) >= 16
    other = await create(http, token, "devices", {"name": "screen"})
    assert other["secret"] != device["secret"]
    answer = await http.call("GET", f"/api/devices/{device['uuid']}", token=token)
    assert answer.json["secret"] == device["secret"]
    auth = await http.login(token=device_token(device["uuid"], device["secret"]))
    assert auth["identity"] == {"type": "device", "uuid": device["uuid"],
                                "organization": "scala", "paired": True}


@pytest_twisted.ensureDeferred
async def test_created_device_keeps_a_given_secret(http: Http, token: str) -> None:
    """A device created with a secret keeps it; an empty secret is replaced."""
    device = await create(http, token, "devices", {"name": "screen", "secret": "my-secret"})
    assert device["secret"] == "my-secret"
    await http.login(token=device_token(device["uuid"], "my-secret"))
    blank = await create(http, token, "devices", {"name": "screen", "secret": ""})
    assert isinstance(blank["secret"], str) and blank["secret"]


@pytest.mark.parametrize("collection", COLLECTIONS)
@pytest_twisted.ensureDeferred
async def test_get_unknown_is_404(http: Http, token: str, collection: str) -> None:
    """GET of a uuid nobody created is 404 with {code, message}."""
    answer = await http.call("GET", f"/api/{collection}/no-such-uuid", token=token)
    assert_error(answer, 404, "resource.notFound")


@pytest_twisted.ensureDeferred
async def test_get_with_escaped_uuid(http: Http, token: str) -> None:
    """A uuid with reserved characters is a URL-escaped path segment."""
    created = await create(http, token, "things", {"uuid": "a/b c?d", "name": "odd"})
    assert created["uuid"] == "a/b c?d"
    answer = await http.call("GET", f"/api/things/{quote('a/b c?d', safe='')}", token=token)
    assert answer.code == 200, answer
    assert answer.json["name"] == "odd"


@pytest.mark.parametrize("collection", COLLECTIONS)
@pytest_twisted.ensureDeferred
async def test_create_update_delete_are_announced(
        server: RunningServer, http: Http, token: str, collection: str) -> None:
    """Create, update and delete broadcast the document on its system channel."""
    created = await create(http, token, collection, {"uuid": "watched", "name": "a"})
    recorder = Recorder()
    server.server.hub.subscribe(encode_channel("scala", "watched", system=True), recorder)
    patched = await http.call("PATCH", f"/api/{collection}/watched", {"name": "b"},
                              token=token)
    await http.call("DELETE", f"/api/{collection}/watched", token=token)
    assert [(m["name"], m["payload"]) for m in recorder.messages] == [
        ("update", patched.json), ("delete", patched.json)]
    other = Recorder()
    server.server.hub.subscribe(encode_channel("scala", "watched-2", system=True), other)
    created = await create(http, token, collection, {"uuid": "watched-2"})
    assert [(m["name"], m["payload"]) for m in other.messages] == [("create", created)]


# -- find -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_find_by_name_and_subtype(http: Http, token: str) -> None:
    """Top-level field params select the documents with that exact value."""
    a = await create(http, token, "things", {"name": "alpha", "subtype": "scala:thing:rfid"})
    b = await create(http, token, "things", {"name": "beta", "subtype": "scala:thing:rfid"})
    await create(http, token, "things", {"name": "alpha", "subtype": "scala:thing:beacon"})
    found = await find(http, token, "things", name="alpha", subtype="scala:thing:rfid")
    assert [d["uuid"] for d in found["results"]] == [a["uuid"]]
    assert found["total"] == 1
    found = await find(http, token, "things", subtype="scala:thing:rfid")
    assert {d["uuid"] for d in found["results"]} == {a["uuid"], b["uuid"], "demo-thing"}
    assert found["total"] == 3
    found = await find(http, token, "things", name="Alpha")
    assert found == {"results": [], "total": 0}


@pytest_twisted.ensureDeferred
async def test_find_by_dotted_path_through_lists(http: Http, token: str) -> None:
    """location.uuid and location.zones.key match nested fields, through lists."""
    both = await create(http, token, "things", {"batch": "z", "location": {
        "uuid": "loc-1", "zones": [{"key": "entrance"}, {"key": "cafe"}]}})
    cafe = await create(http, token, "things", {"batch": "z", "location": {
        "uuid": "loc-2", "zones": [{"key": "cafe"}]}})
    await create(http, token, "things", {"batch": "z", "location": {"uuid": "loc-2"}})
    await create(http, token, "things", {"batch": "z"})

    async def uuids(**params: Any) -> set[str]:
        found = await find(http, token, "things", batch="z", **params)
        assert found["total"] == len(found["results"])
        return {d["uuid"] for d in found["results"]}

    assert await uuids(**{"location.zones.key": "entrance"}) == {both["uuid"]}
    assert await uuids(**{"location.zones.key": "cafe"}) == {both["uuid"], cafe["uuid"]}
    assert await uuids(**{"location.zones.key": "nowhere"}) == set()
    assert await uuids(**{"location.uuid": "loc-1"}) == {both["uuid"]}
    assert len(await uuids(**{"location.uuid": "loc-2"})) == 2
    assert await uuids(**{"location.uuid": "loc-1", "location.zones.key": "cafe"}) == {
        both["uuid"]}


@pytest_twisted.ensureDeferred
async def test_find_seeded_devices_by_location_and_experience(http: Http, token: str) -> None:
    """The demo device is found by its location zone and experience uuid."""
    found = await find(http, token, "devices", **{"location.zones.key": "entrance"})
    assert [d["uuid"] for d in found["results"]] == ["test-uuid"]
    found = await find(http, token, "devices", **{"experience.uuid": "demo-experience"})
    assert [d["uuid"] for d in found["results"]] == ["test-uuid"]
    found = await find(http, token, "locations", **{"zones.key": "cafe"})
    assert [d["uuid"] for d in found["results"]] == ["demo-location"]


@pytest_twisted.ensureDeferred
async def test_find_matches_list_of_scalars(http: Http, token: str) -> None:
    """A param matches a field holding a list if any element equals it."""
    tagged = await create(http, token, "experiences", {"tags": ["red", "blue"]})
    await create(http, token, "experiences", {"tags": ["green"]})
    found = await find(http, token, "experiences", tags="blue")
    assert [d["uuid"] for d in found["results"]] == [tagged["uuid"]]


@pytest_twisted.ensureDeferred
async def test_find_matches_numbers_and_bools(http: Http, token: str) -> None:
    """Numbers and booleans in documents match their text in query params."""
    three = await create(http, token, "things", {"batch": "n", "count": 3, "active": True})
    half = await create(http, token, "things", {"batch": "n", "count": 3.5, "active": False})
    none = await create(http, token, "things", {"batch": "n", "count": None})

    async def uuids(**params: Any) -> set[str]:
        found = await find(http, token, "things", batch="n", **params)
        return {d["uuid"] for d in found["results"]}

    assert await uuids(count="3") == {three["uuid"]}
    assert await uuids(count="3.0") == {three["uuid"]}
    assert await uuids(count="3.5") == {half["uuid"]}
    assert await uuids(count="three") == set()
    assert await uuids(active="true") == {three["uuid"]}
    assert await uuids(active="false") == {half["uuid"]}
    assert await uuids(count="null") == {none["uuid"]}


@pytest_twisted.ensureDeferred
async def test_finds_on_deeply_nested_documents(http: Http, token: str) -> None:
    """A document nested just under the JSON limit can be found on its deepest field:
    matching never exhausts the stack (no 500 for the organization's finds)."""
    depth = 497
    document: Any = "deep"
    for _ in range(depth):
        document = {"a": document}
    made = await create(http, token, "things", {"batch": "deep", "a": document})
    path = ".".join(["a"] * (depth + 1))
    found = await find(http, token, "things", **{path: "deep"})
    assert [d["uuid"] for d in found["results"]] == [made["uuid"]]
    assert (await find(http, token, "things", **{path: "shallow"}))["total"] == 0
    assert (await find(http, token, "things", batch="deep", sort=path))["total"] == 1
    # Lists in lists: SQLite matches through them, PostgreSQL does not (README); neither
    # fails.
    nested: Any = "deep"
    for _ in range(depth):
        nested = [nested]
    await create(http, token, "things", {"batch": "lists", "b": nested})
    assert (await find(http, token, "things", b="deep"))["total"] in (0, 1)
    assert (await find(http, token, "things", batch="lists", sort="b"))["total"] == 1


@pytest_twisted.ensureDeferred
async def test_created_resources_have_the_hosted_defaults(http: Http, token: str) -> None:
    """Created with no name, a resource has name ""; a location has zones []; what is
    given is kept."""
    for collection in ("devices", "things", "experiences", "locations", "connectors/feeds"):
        made = await create(http, token, collection, {})
        assert made["name"] == "" and made["uuid"], made
        stored = await http.call("GET", f"/api/{collection}/{made['uuid']}", token=token)
        assert stored.json == made
    location = await create(http, token, "locations", {})
    assert location["zones"] == []
    kept = await create(http, token, "locations", {"name": "hall", "zones": [{"key": "a"}]})
    assert (kept["name"], kept["zones"]) == ("hall", [{"key": "a"}])


@pytest_twisted.ensureDeferred
async def test_find_sorts_ascending_descending_missing_last(http: Http, token: str) -> None:
    """sort=field sorts ascending, sort=-field descending; documents without it go last."""
    for name, rank in (("bravo", 10), ("alpha", 2), ("charlie", 33)):
        await create(http, token, "experiences", {"batch": "s", "label": name, "rank": rank})
    await create(http, token, "experiences", {"batch": "s"})

    async def names(sort: str) -> list[Any]:
        found = await find(http, token, "experiences", batch="s", sort=sort)
        assert found["total"] == 4
        return [d.get("label") for d in found["results"]]

    assert await names("label") == ["alpha", "bravo", "charlie", None]
    assert await names("-label") == ["charlie", "bravo", "alpha", None]
    assert await names("rank") == ["alpha", "bravo", "charlie", None]
    assert await names("-rank") == ["charlie", "bravo", "alpha", None]


@pytest_twisted.ensureDeferred
async def test_find_sorts_by_dotted_field(http: Http, token: str) -> None:
    """sort takes a dotted path into nested objects."""
    for uuid in ("loc-b", "loc-c", "loc-a"):
        await create(http, token, "things", {"batch": "d", "location": {"uuid": uuid}})
    found = await find(http, token, "things", batch="d", sort="-location.uuid")
    assert [d["location"]["uuid"] for d in found["results"]] == ["loc-c", "loc-b", "loc-a"]


@pytest_twisted.ensureDeferred
async def test_find_pages_with_limit_and_skip(http: Http, token: str) -> None:
    """limit and skip select a page; total counts every match."""
    for rank in (5, 3, 1, 4, 2):
        await create(http, token, "things", {"batch": "p", "rank": rank})

    async def ranks(**params: Any) -> tuple[list[int], int]:
        found = await find(http, token, "things", batch="p", sort="rank", **params)
        return [d["rank"] for d in found["results"]], found["total"]

    assert await ranks() == ([1, 2, 3, 4, 5], 5)
    assert await ranks(limit="2") == ([1, 2], 5)
    assert await ranks(limit="2", skip="1") == ([2, 3], 5)
    assert await ranks(skip="4") == ([5], 5)
    assert await ranks(skip="3", limit="10") == ([4, 5], 5)
    assert await ranks(skip="10") == ([], 5)
    assert await ranks(limit="0") == ([], 5)
    assert await ranks(limit="0", skip="2") == ([], 5)


@pytest_twisted.ensureDeferred
async def test_find_pages_without_sort_are_disjoint(http: Http, token: str) -> None:
    """Unsorted pages follow one stable order: together they hold every match once."""
    made = {(await create(http, token, "experiences", {"batch": "q"}))["uuid"]
            for _ in range(5)}
    seen: list[str] = []
    for skip in (0, 2, 4):
        found = await find(http, token, "experiences", batch="q", limit="2", skip=str(skip))
        assert found["total"] == 5
        seen += [d["uuid"] for d in found["results"]]
    assert sorted(seen) == sorted(made)


@pytest_twisted.ensureDeferred
async def test_find_limit_zero_counts_without_results(http: Http, token: str) -> None:
    """limit=0 answers no results and the total of all matches."""
    found = await find(http, token, "locations", limit="0")
    assert found == {"results": [], "total": 1}
    await create(http, token, "locations", {"name": "annex"})
    assert await find(http, token, "locations", limit="0") == {"results": [], "total": 2}


@pytest.mark.parametrize("unset", ["", "undefined", "null", " "])
@pytest_twisted.ensureDeferred
async def test_unset_paging_is_not_given(http: Http, token: str, unset: str) -> None:
    """limit and skip of "", "undefined" or "null" (unset JavaScript values) are not given."""
    everything = await http.call("GET", "/api/things", token=token)
    answer = await http.call("GET", "/api/things", token=token,
                             params={"limit": unset, "skip": unset})
    assert (answer.code, answer.json) == (200, everything.json)


@pytest.mark.parametrize("params", [
    {"limit": "abc"}, {"limit": "-1"}, {"limit": "1.5"}, {"limit": "none"},
    {"skip": "x"}, {"skip": "-3"}, {"sort": ""}, {"sort": "-"},
])
@pytest_twisted.ensureDeferred
async def test_find_with_invalid_paging_is_400(http: Http, token: str,
                                               params: dict[str, str]) -> None:
    """A limit or skip that is not a whole number >= 0, or an empty sort, is 400."""
    answer = await http.call("GET", "/api/things", token=token, params=params)
    assert_error(answer, 400, "request.invalidParameter")
    answer = await http.call("GET", "/api/data", token=token, params=params)
    assert_error(answer, 400, "request.invalidParameter")


# -- patch and delete -------------------------------------------------------------


@pytest.mark.parametrize("collection", COLLECTIONS)
@pytest_twisted.ensureDeferred
async def test_patch_merges_top_level_fields(http: Http, token: str, collection: str) -> None:
    """PATCH replaces the given top-level fields, keeps the others and the uuid."""
    created = await create(http, token, collection, {
        "name": "old", "subtype": "x:y", "location": {"uuid": "loc-1", "zones": [{"key": "a"}]},
    })
    uuid = created["uuid"]
    answer = await http.call("PATCH", f"/api/{collection}/{uuid}", {
        "name": "new", "location": {"uuid": "loc-2"}, "added": [1], "uuid": "hijacked",
    }, token=token)
    assert answer.code == 200, answer
    expected = dict(created, name="new", location={"uuid": "loc-2"}, added=[1])
    assert answer.json == expected
    assert (await http.call("GET", f"/api/{collection}/{uuid}", token=token)).json == expected
    assert (await http.call("GET", f"/api/{collection}/hijacked", token=token)).code == 404


@pytest_twisted.ensureDeferred
async def test_patch_with_whole_document_is_idempotent(http: Http, token: str) -> None:
    """Existing clients PATCH the whole document back: nothing changes but what they edited."""
    answer = await http.call("GET", "/api/devices/test-uuid", token=token)
    document = dict(answer.json, name="renamed")
    answer = await http.call("PATCH", "/api/devices/test-uuid", document, token=token)
    assert answer.json == document
    auth = await http.login(token=device_token("test-uuid", "test-secret"))
    assert auth["identity"]["uuid"] == "test-uuid"


@pytest.mark.parametrize("collection", COLLECTIONS)
@pytest_twisted.ensureDeferred
async def test_patch_unknown_is_404(http: Http, token: str, collection: str) -> None:
    """PATCH of an unknown uuid is 404 and creates nothing."""
    answer = await http.call("PATCH", f"/api/{collection}/no-such-uuid", {"name": "x"},
                             token=token)
    assert_error(answer, 404, "resource.notFound")
    assert (await http.call("GET", f"/api/{collection}/no-such-uuid", token=token)).code == 404


@pytest.mark.parametrize("collection", COLLECTIONS)
@pytest_twisted.ensureDeferred
async def test_delete_removes_document(http: Http, token: str, collection: str) -> None:
    """DELETE answers 200; the document is gone from get and find; a second DELETE is 404."""
    created = await create(http, token, collection, {"name": "doomed", "batch": "del"})
    kept = await create(http, token, collection, {"name": "kept", "batch": "del"})
    path = f"/api/{collection}/{created['uuid']}"
    answer = await http.call("DELETE", path, token=token)
    assert answer.code == 200, answer
    assert answer.body in (b"", b"null", b"{}")
    assert_error(await http.call("GET", path, token=token), 404, "resource.notFound")
    assert_error(await http.call("DELETE", path, token=token), 404, "resource.notFound")
    found = await find(http, token, collection, batch="del")
    assert [d["uuid"] for d in found["results"]] == [kept["uuid"]]
    assert found["total"] == 1


@pytest_twisted.ensureDeferred
async def test_deleted_uuid_can_be_reused(http: Http, token: str) -> None:
    """Once deleted, a uuid is free again for a new document."""
    await create(http, token, "things", {"uuid": "recycled", "name": "first"})
    await http.call("DELETE", "/api/things/recycled", token=token)
    again = await create(http, token, "things", {"uuid": "recycled", "name": "second"})
    assert again["uuid"] == "recycled"
    assert (await http.call("GET", "/api/things/recycled", token=token)).json == again


# -- data -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_seeded_data_item(http: Http, token: str) -> None:
    """The demo data item reads back as {group, key, value}."""
    answer = await http.call("GET", "/api/data/cats/fluffy", token=token)
    assert answer.code == 200, answer
    assert answer.json == {"group": "cats", "key": "fluffy", "value": {"age": 3}}


@pytest.mark.parametrize(("group", "key"), [
    ("my group", "a key"),
    ("a/b", "c/d"),
    ("kätzchen", "кот 🐈"),
    ("100%", "what?#&=+"),
])
@pytest_twisted.ensureDeferred
async def test_data_with_escaped_segments(http: Http, token: str, group: str, key: str) -> None:
    """Group and key are URL-escaped path segments: spaces, slashes and unicode survive."""
    answer = await http.call("PUT", data_path(group, key), {"v": 1}, token=token)
    assert answer.code == 200, answer
    assert answer.json == {"group": group, "key": key, "value": {"v": 1}}
    answer = await http.call("GET", data_path(group, key), token=token)
    assert answer.json == {"group": group, "key": key, "value": {"v": 1}}
    found = await find(http, token, "data", group=group)
    assert found == {"results": [{"group": group, "key": key, "value": {"v": 1}}], "total": 1}
    answer = await http.call("DELETE", data_path(group, key), token=token)
    assert answer.code == 200, answer
    assert (await http.call("GET", data_path(group, key), token=token)).code == 404


@pytest_twisted.ensureDeferred
async def test_data_slash_in_key_is_not_a_separator(http: Http, token: str) -> None:
    """g/'a/b' and 'g/a'/b are two different items."""
    await http.call("PUT", data_path("g", "a/b"), 1, token=token)
    await http.call("PUT", data_path("g/a", "b"), 2, token=token)
    assert (await http.call("GET", data_path("g", "a/b"), token=token)).json["value"] == 1
    assert (await http.call("GET", data_path("g/a", "b"), token=token)).json["value"] == 2


@pytest_twisted.ensureDeferred
async def test_data_put_overwrites(http: Http, token: str) -> None:
    """A second PUT replaces the value of the same item."""
    await http.call("PUT", "/api/data/g/k", {"a": 1, "b": 2}, token=token)
    answer = await http.call("PUT", "/api/data/g/k", {"c": 3}, token=token)
    assert answer.json == {"group": "g", "key": "k", "value": {"c": 3}}
    assert (await http.call("GET", "/api/data/g/k", token=token)).json["value"] == {"c": 3}
    assert (await find(http, token, "data", group="g"))["total"] == 1


@pytest.mark.parametrize("value", [None, [1, "two", None], 42, -1.5, "text", "", True,
                                   False, {}, {"deep": {"er": [{}]}}])
@pytest_twisted.ensureDeferred
async def test_data_value_is_any_json(http: Http, token: str, value: Any) -> None:
    """The PUT body is the value, whatever JSON it is."""
    import json

    answer = await http.call("PUT", "/api/data/any/thing", raw=json.dumps(value).encode(),
                             token=token)
    assert answer.code == 200, answer
    assert answer.json == {"group": "any", "key": "thing", "value": value}
    answer = await http.call("GET", "/api/data/any/thing", token=token)
    assert answer.json == {"group": "any", "key": "thing", "value": value}


@pytest_twisted.ensureDeferred
async def test_data_put_without_body_stores_an_empty_object(http: Http, token: str) -> None:
    """A PUT with no body (the JS SDK's createData(group, key)) stores the value {}."""
    answer = await http.call("PUT", "/api/data/g/empty", raw=b"", token=token)
    assert (answer.code, answer.json) == (200, {"group": "g", "key": "empty", "value": {}})
    answer = await http.call("GET", "/api/data/g/empty", token=token)
    assert answer.json == {"group": "g", "key": "empty", "value": {}}


@pytest_twisted.ensureDeferred
async def test_data_find_by_group_with_paging(http: Http, token: str) -> None:
    """GET /api/data?group= lists that group's items; limit pages, total counts all."""
    for i in range(5):
        await http.call("PUT", f"/api/data/birds/b{i}", i, token=token)
    await http.call("PUT", "/api/data/fish/f0", 0, token=token)
    found = await find(http, token, "data", group="birds")
    assert found["total"] == 5
    assert sorted(item["key"] for item in found["results"]) == [f"b{i}" for i in range(5)]
    assert all(set(item) == {"group", "key", "value"} for item in found["results"])
    page = await find(http, token, "data", group="birds", limit="2", sort="-key")
    assert page == {"results": [{"group": "birds", "key": "b4", "value": 4},
                                {"group": "birds", "key": "b3", "value": 3}], "total": 5}
    assert await find(http, token, "data", group="birds", limit="0") == {
        "results": [], "total": 5}
    found = await find(http, token, "data", value="3")
    assert found["results"] == [{"group": "birds", "key": "b3", "value": 3}]
    everything = await find(http, token, "data")
    assert everything["total"] == 7


@pytest_twisted.ensureDeferred
async def test_data_unknown_is_404(http: Http, token: str) -> None:
    """GET and DELETE of an unknown item are 404; delete then get is 404."""
    assert_error(await http.call("GET", "/api/data/cats/nobody", token=token),
                 404, "resource.notFound")
    assert_error(await http.call("DELETE", "/api/data/cats/nobody", token=token),
                 404, "resource.notFound")
    answer = await http.call("DELETE", "/api/data/cats/fluffy", token=token)
    assert answer.code == 200, answer
    assert_error(await http.call("GET", "/api/data/cats/fluffy", token=token), 404)
    assert_error(await http.call("DELETE", "/api/data/cats/fluffy", token=token), 404)


@pytest_twisted.ensureDeferred
async def test_data_changes_are_announced(server: RunningServer, http: Http,
                                          token: str) -> None:
    """Data writes broadcast create, update and delete on data:<group>:<key>."""
    recorder = Recorder()
    server.server.hub.subscribe(encode_channel("scala", "data:a b:c/d", system=True), recorder)
    path = data_path("a b", "c/d")
    await http.call("PUT", path, 1, token=token)
    await http.call("PUT", path, 2, token=token)
    await http.call("DELETE", path, token=token)
    item = {"group": "a b", "key": "c/d"}
    assert [(m["name"], m["payload"]) for m in recorder.messages] == [
        ("create", dict(item, value=1)), ("update", dict(item, value=2)),
        ("delete", dict(item, value=2))]


# -- logs -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_logs_are_stored(server: RunningServer, http: Http, token: str) -> None:
    """POST /api/logs stores every entry of the array and answers 200 with an empty body."""
    storage = server.server.storage
    assert await storage.count_logs("scala") == 0
    entries = [{"level": "info", "message": "hello", "time": 1700000000000},
               {"level": "error", "message": "oops", "extra": [1]}]
    answer = await http.call("POST", "/api/logs", entries, token=token)
    assert answer.code == 200, answer
    assert answer.body == b""
    assert await storage.count_logs("scala") == 2
    device = await http.login(token=device_token("test-uuid", "test-secret"))
    answer = await http.call("POST", "/api/logs", [{"message": "from a device"}],
                             token=device["token"])
    assert answer.code == 200, answer
    assert await storage.count_logs("scala") == 3
    answer = await http.call("POST", "/api/logs", [], token=token)
    assert answer.code == 200 and answer.body == b""
    assert await storage.count_logs("scala") == 3


@pytest.mark.parametrize("body", [b'{"message": "x"}', b'"x"', b"3", b"null",
                                  b'[{"message": "x"}, 3]', b'["x"]'])
@pytest_twisted.ensureDeferred
async def test_logs_that_are_not_an_array_of_objects_are_400(
        server: RunningServer, http: Http, token: str, body: bytes) -> None:
    """A logs body that is not an array of objects is 400 and stores nothing."""
    answer = await http.call("POST", "/api/logs", raw=body, token=token)
    assert_error(answer, 400)
    assert await server.server.storage.count_logs("scala") == 0
