"""
The real-time network through L{exp.twisted.ExpService}, end to end against
a real local server: channels, listeners (queued, callback and C{async for}),
broadcasts and responses, fling and identify, the channel rules, system
notifications and resubscription after a reconnect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from exp.protocol import encode_channel
from exp.server.testing import DEMO
from exp.twisted import (
    ApiError,
    Broadcast,
    Channel,
    ExpService,
    Listener,
    NetworkError,
    RuntimeError,
)

from ._sdk import Services, Watched, eventually, sleep, user_payload, within


@pytest_twisted.async_yield_fixture()
async def user(sdk: Services) -> AsyncIterator[ExpService]:
    service = await sdk.user()
    await within(service.whenConnected())
    yield service


@pytest_twisted.async_yield_fixture()
async def device(sdk: Services) -> AsyncIterator[ExpService]:
    service = await sdk.device()
    await within(service.whenConnected())
    yield service


def subscribed(site: Watched, channel: Channel) -> bool:
    """Whether some session of the server listens on C{channel}."""
    return any(channel.id in s.channels for s in site.server.network.sessions.values())


class Collect:
    """A listener callback that keeps what it is given."""

    def __init__(self) -> None:
        self.broadcasts: list[Broadcast] = []

    def __call__(self, broadcast: Broadcast) -> None:
        self.broadcasts.append(broadcast)

    @property
    def payloads(self) -> list[Any]:
        return [b.payload for b in self.broadcasts]


class ForeignChannel(Channel):
    """A channel of another organization than the service's own."""

    @property
    def id(self) -> str:
        return encode_channel("another-organization", self.name, self.system, self.consumer)


# -- listening ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_listen_confirms_the_subscription(device: ExpService, site: Watched) -> None:
    """listen answers a listener once the server has subscribed its channel."""
    channel = device.get_channel("confirmed")
    assert not subscribed(site, channel)
    listener = await within(channel.listen("hello"))
    assert isinstance(listener, Listener)
    assert subscribed(site, channel)
    assert listener.channel is channel and listener.name == "hello"


@pytest_twisted.ensureDeferred
async def test_listen_before_connected(sdk: Services, site: Watched) -> None:
    """A listen made while the socket is still opening is confirmed once it is up."""
    service = sdk.start(uuid=DEMO["device_uuid"], secret=DEMO["device_secret"])
    await within(service.whenAuthenticated())
    listener = await within(service.get_channel("early").listen("hello"))
    assert service.is_connected
    assert subscribed(site, listener.channel)


@pytest_twisted.ensureDeferred
async def test_concurrent_listens_on_one_channel(device: ExpService) -> None:
    """Several listens on one channel at once are all confirmed."""
    channel = device.get_channel("shared")
    listeners = await within(gatherResults([channel.listen("a"), channel.listen("b"),
                                            channel.listen("a")]))
    assert [listener.name for listener in listeners] == ["a", "b", "a"]
    await within(channel.broadcast("a", 1))
    first, _, third = listeners
    assert (await within(first.wait(10))).payload == 1
    assert (await within(third.wait(10))).payload == 1


@pytest_twisted.ensureDeferred
async def test_listen_on_another_organization_is_refused(device: ExpService) -> None:
    """Listening on another organization's channel fails with NetworkError, promptly."""
    channel = ForeignChannel(device, "lobby")
    with pytest.raises(NetworkError, match="refused"):
        # Promptly: the server's refusal, long before the listen timeout.
        await within(channel.listen("hello", timeout=60), 10)


@pytest_twisted.ensureDeferred
async def test_consumer_app_channel_rules(sdk: Services, device: ExpService) -> None:
    """A consumer app listens on consumer channels only; elsewhere NetworkError or 403."""
    app = await sdk.consumer()
    with pytest.raises(NetworkError):
        await within(app.get_channel("kiosk").listen("tap", timeout=60), 10)
    with pytest.raises(NetworkError):
        await within(app.get_channel(DEMO["device_uuid"], system=True).listen(
            "update", timeout=60), 10)
    listener = await within(app.get_channel("kiosk", consumer=True).listen("tap"))
    await within(device.get_channel("kiosk", consumer=True).broadcast("tap", {"x": 1}))
    assert (await within(listener.wait(10))).payload == {"x": 1}
    with pytest.raises(ApiError) as caught:
        await within(app.get_channel("kiosk").broadcast("tap"))
    assert (caught.value.status_code, caught.value.code) == (403, "channel.forbidden")
    assert await within(app.get_channel("kiosk", consumer=True).broadcast("tap", 2)) == []


@pytest_twisted.ensureDeferred
async def test_unconfirmed_listen_is_a_network_error(sdk: Services, site: Watched) -> None:
    """With no network answering, listen fails with NetworkError after its timeout."""
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(Protocol))
    try:
        payload = await user_payload(site.url)
        payload["network"] = {"host": f"http://127.0.0.1:{port.getHost().port}"}
        service = sdk.start(auth=payload)
        with pytest.raises(NetworkError, match="confirm"):
            await within(service.get_channel("nowhere").listen("x", timeout=0.3))
        await within(service.stopService())
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_listen_without_network_is_a_network_error(sdk: Services) -> None:
    """With enable_network=False, listen raises exp.NetworkError, as 1.0.x scripts expect
    (broadcast still works)."""
    service = await sdk.user(enable_network=False)
    channel = service.get_channel("quiet")
    with pytest.raises(NetworkError, match="enable_network"):
        await within(channel.listen("x"))
    assert await within(channel.broadcast("x", 1)) == []


@pytest_twisted.ensureDeferred
async def test_bad_names_are_runtime_errors(device: ExpService) -> None:
    """Empty channel, broadcast or listener names and bad callbacks raise exp.RuntimeError."""
    with pytest.raises(RuntimeError):
        device.get_channel("")
    channel = device.get_channel("names")
    for call in (lambda: channel.listen(""), lambda: channel.broadcast(""),
                 lambda: channel.listen("x", callback="nope"),  # type: ignore[arg-type]
                 lambda: channel.broadcast("x", timeout=-1),
                 lambda: channel.listen("x", timeout=-1),
                 lambda: channel.listen("x", max_queue=0),
                 lambda: channel.listen("x", max_queue=2.5)):  # type: ignore[arg-type]
        with pytest.raises(RuntimeError):
            await within(call())


# -- receiving ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_listener_gets_broadcasts_by_name_only(device: ExpService, user: ExpService
                                                     ) -> None:
    """A listener receives the broadcasts of its name on its channel, nothing else."""
    listener = await within(device.get_channel("by-name").listen("wanted"))
    witness = Collect()
    await within(device.get_channel("by-name").listen("other", witness))
    await within(user.get_channel("by-name").broadcast("other", 1))
    await within(user.get_channel("elsewhere").broadcast("wanted", 2))
    await within(user.get_channel("by-name", consumer=True).broadcast("wanted", 3))
    await within(user.get_channel("by-name").broadcast("wanted", 4))
    broadcast = await within(listener.wait(10))
    assert isinstance(broadcast, Broadcast)
    assert (broadcast.name, broadcast.payload) == ("wanted", 4)
    assert broadcast.channel.name == "by-name"
    assert isinstance(broadcast.id, str) and broadcast.id
    await eventually(lambda: witness.payloads == [1], "the other broadcast")
    assert await within(listener.wait(0)) is None


@pytest_twisted.ensureDeferred
async def test_listeners_get_private_copies(device: ExpService, user: ExpService) -> None:
    """Two listeners get separate deep copies: mutating one leaves the other unchanged."""
    channel = device.get_channel("copies")
    first = await within(channel.listen("data"))
    second = await within(channel.listen("data"))
    payload = {"items": [{"n": 1}], "tags": ["a"]}
    await within(user.get_channel("copies").broadcast("data", payload))
    mine = await within(first.wait(10))
    mine.payload["items"][0]["n"] = 99
    mine.payload["tags"].append("b")
    theirs = await within(second.wait(10))
    assert theirs.payload == {"items": [{"n": 1}], "tags": ["a"]}
    assert payload == {"items": [{"n": 1}], "tags": ["a"]}
    assert mine.id == theirs.id


@pytest_twisted.ensureDeferred
async def test_wait_answers_the_oldest_queued(device: ExpService, user: ExpService) -> None:
    """Broadcasts queue up; wait answers the oldest first, then None without waiting."""
    channel = device.get_channel("queue")
    listener = await within(channel.listen("n"))
    witness = Collect()
    await within(channel.listen("n", witness))
    for n in range(3):
        await within(user.get_channel("queue").broadcast("n", n, timeout=0))
    await eventually(lambda: len(witness.broadcasts) == 3, "three broadcasts delivered")
    assert [(await within(listener.wait())).payload for _ in range(3)] == [0, 1, 2]
    assert await within(listener.wait()) is None
    assert await within(listener.wait(0)) is None


@pytest_twisted.ensureDeferred
async def test_wait_times_out_with_none(device: ExpService, user: ExpService) -> None:
    """wait(timeout) answers None when nothing comes, and a broadcast that comes in time."""
    listener = await within(device.get_channel("slow").listen("n"))
    assert await within(listener.wait(0.2)) is None
    waiting = listener.wait(30)
    assert not waiting.called
    await within(user.get_channel("slow").broadcast("n", "late"))
    assert (await within(waiting)).payload == "late"


@pytest_twisted.ensureDeferred
async def test_queued_broadcasts_expire_after_max_age(device: ExpService, user: ExpService
                                                      ) -> None:
    """A queued broadcast older than max_age is dropped."""
    channel = device.get_channel("stale")
    listener = await within(channel.listen("n", max_age=0.2))
    witness = Collect()
    await within(channel.listen("n", witness))
    await within(user.get_channel("stale").broadcast("n", 1, timeout=0))
    await eventually(lambda: witness.payloads == [1], "the broadcast delivered")
    await sleep(0.5)
    assert await within(listener.wait(0)) is None


@pytest_twisted.ensureDeferred
async def test_queue_keeps_the_newest_max_queue(device: ExpService, user: ExpService) -> None:
    """A listener nobody waits on keeps its newest max_queue broadcasts, oldest dropped."""
    channel = device.get_channel("flood")
    listener = await within(channel.listen("news", max_queue=2))
    seen = Collect()
    await within(channel.listen("news", callback=seen))
    for n in range(5):
        await within(user.get_channel("flood").broadcast("news", n, timeout=0))
    await eventually(lambda: len(seen.broadcasts) == 5, "every broadcast arrived")
    assert [(await within(listener.wait())).payload for _ in range(2)] == [3, 4]
    assert await within(listener.wait()) is None


@pytest_twisted.ensureDeferred
async def test_callback_listener(device: ExpService, user: ExpService) -> None:
    """callback style: each broadcast is handed over; a Deferred result or error is fine."""
    seen: list[Any] = []
    finished: list[Any] = []

    def callback(broadcast: Broadcast) -> Any:
        seen.append(broadcast.payload)
        if broadcast.payload == "slow":
            d: Deferred[None] = deferLater(reactor, 0.05, lambda: None)
            d.addCallback(lambda _: finished.append(broadcast.payload))
            return d
        if broadcast.payload == "boom":
            raise ValueError("a buggy callback")
        return None

    await within(device.get_channel("callback").listen("n", callback))
    for payload in ("slow", "boom", "after"):
        await within(user.get_channel("callback").broadcast("n", payload, timeout=0))
    await eventually(lambda: seen == ["slow", "boom", "after"] and finished == ["slow"],
                     "all three handed to the callback")


@pytest_twisted.ensureDeferred
async def test_async_for_ends_after_cancel(device: ExpService, user: ExpService) -> None:
    """async for over a listener yields broadcasts in order and ends once it is cancelled."""
    listener = await within(device.get_channel("loop").listen("n"))
    received: list[Any] = []

    async def consume() -> None:
        async for broadcast in listener:
            received.append(broadcast.payload)

    done = ensureDeferred(consume())
    for n in range(3):
        await within(user.get_channel("loop").broadcast("n", n, timeout=0))
    await eventually(lambda: received == [0, 1, 2], "three broadcasts iterated")
    assert not done.called
    listener.cancel()
    await within(done)
    assert received == [0, 1, 2]


@pytest_twisted.ensureDeferred
async def test_cancel_stops_receiving(device: ExpService, user: ExpService) -> None:
    """cancel() answers pending waits with None and receives nothing more, for good."""
    channel = device.get_channel("cancel")
    listener = await within(channel.listen("n"))
    witness = Collect()
    await within(channel.listen("n", witness))
    pending = listener.wait(30)
    listener.cancel()
    assert listener.cancelled
    assert await within(pending) is None
    listener.cancel()  # harmless
    await within(user.get_channel("cancel").broadcast("n", 1))
    await eventually(lambda: witness.payloads == [1], "the broadcast delivered")
    assert await within(listener.wait(0)) is None
    assert await within(listener.wait(0.1)) is None
    callback = Collect()
    cancelled = await within(channel.listen("n", callback))
    cancelled.cancel()
    await within(user.get_channel("cancel").broadcast("n", 2))
    await eventually(lambda: witness.payloads == [1, 2], "the second broadcast delivered")
    assert callback.broadcasts == []


@pytest_twisted.ensureDeferred
async def test_listener_survives_a_reconnection(device: ExpService, user: ExpService,
                                                site: Watched) -> None:
    """After the server drops the socket, the SDK reconnects and resubscribes its listeners."""
    channel = device.get_channel("resubscribe")
    listener = await within(channel.listen("n"))
    offline: list[None] = []
    device.on("offline", lambda: offline.append(None))
    sessions = set(site.server.network.sessions)
    for session in list(site.server.network.sessions.values()):
        if session.identity.type == "device":
            session.close()
    await eventually(lambda: offline, "the device offline")
    await eventually(lambda: subscribed(site, channel)
                     and not set(site.server.network.sessions) <= sessions,
                     "a new session subscribed to the channel")
    await within(user.get_channel("resubscribe").broadcast("n", "again"))
    assert (await within(listener.wait(10))).payload == "again"


@pytest_twisted.ensureDeferred
async def test_listener_survives_a_new_server_key(sdk: Services, site: Watched) -> None:
    """When the socket's token is refused, the SDK logs in once, reconnects, resubscribes."""
    device = await sdk.device()
    channel = device.get_channel("new-key")
    listener = await within(channel.listen("n"))
    before = device.auth["token"]
    await site.restart_fresh()
    await eventually(lambda: subscribed(site, channel), "the channel subscribed again")
    assert device.auth["token"] != before
    assert site.logins() == 1
    user = await sdk.user(enable_network=False)
    await within(user.get_channel("new-key").broadcast("n", "after"))
    assert (await within(listener.wait(10))).payload == "after"
    assert site.logins() == 2


# -- sending ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_broadcast_returns_the_responses(device: ExpService, user: ExpService,
                                               sdk: Services) -> None:
    """broadcast answers the payloads of the responses sent with respond()."""
    other = await sdk.device()

    def responder(tag: str) -> Any:
        def respond(broadcast: Broadcast) -> Any:
            return broadcast.respond({"from": tag, "echo": broadcast.payload})
        return respond

    await within(device.get_channel("ask").listen("ping", responder("first")))
    await within(other.get_channel("ask").listen("ping", responder("second")))
    responses = await within(user.get_channel("ask").broadcast("ping", [1], timeout=3))
    assert sorted(r["from"] for r in responses) == ["first", "second"]
    assert all(r["echo"] == [1] for r in responses)
    assert await within(user.get_channel("nobody-listens").broadcast("ping", timeout=0.2)
                        ) == []


@pytest_twisted.ensureDeferred
async def test_respond_from_a_waited_broadcast(device: ExpService, user: ExpService) -> None:
    """A broadcast taken with wait() can be responded to, with any JSON or nothing."""
    listener = await within(device.get_channel("waited").listen("q"))
    asking = user.get_channel("waited").broadcast("q", "hello", timeout=3)
    broadcast = await within(listener.wait(10))
    assert broadcast.payload == "hello"
    assert await within(broadcast.respond("Nice to meet you!")) is None
    await within(broadcast.respond())
    assert await within(asking) == ["Nice to meet you!", None]


@pytest_twisted.ensureDeferred
async def test_sender_hears_its_own_broadcast(device: ExpService) -> None:
    """A broadcast reaches the sender's own listeners too."""
    listener = await within(device.get_channel("self").listen("echo"))
    await within(device.get_channel("self").broadcast("echo", {"me": True}))
    assert (await within(listener.wait(10))).payload == {"me": True}


@pytest_twisted.ensureDeferred
async def test_fling_and_identify(device: ExpService, user: ExpService) -> None:
    """fling is a broadcast named fling; identify one named identify with no payload."""
    channel = device.get_channel(DEMO["device_uuid"])
    flung = await within(channel.listen("fling"))
    identify = await within(channel.listen("identify", lambda b: b.respond("it's me")))
    theirs = user.get_channel(DEMO["device_uuid"])
    assert await within(theirs.fling({"content": "abc"})) == []
    broadcast = await within(flung.wait(10))
    assert (broadcast.name, broadcast.payload) == ("fling", {"content": "abc"})
    assert await within(theirs.identify(timeout=3)) == ["it's me"]
    assert identify.name == "identify"


@pytest_twisted.ensureDeferred
async def test_unserializable_payload_is_a_type_error(device: ExpService,
                                                      site: Watched) -> None:
    """A payload that is not JSON raises TypeError before anything is sent."""
    channel = device.get_channel("json")
    listener = await within(channel.listen("x"))
    await within(channel.broadcast("x", 1))
    broadcast = await within(listener.wait(10))
    before = site.count("POST", "/api/networks/current/broadcasts")
    responses = site.count("POST", "/api/networks/current/responses")
    for bad in (object(), {"a": {1, 2}}, [float("inf")], {("tuple", "key"): 1}):
        with pytest.raises(TypeError):
            channel.broadcast("x", bad)
        with pytest.raises(TypeError):
            channel.fling(bad)
        with pytest.raises(TypeError):
            broadcast.respond(bad)
    await sleep(0.1)
    assert site.count("POST", "/api/networks/current/broadcasts") == before
    assert site.count("POST", "/api/networks/current/responses") == responses


@pytest_twisted.ensureDeferred
async def test_nobody_broadcasts_on_system_channels(user: ExpService) -> None:
    """A broadcast on a system channel is ApiError 403."""
    with pytest.raises(ApiError) as caught:
        await within(user.get_channel(DEMO["device_uuid"], system=True).broadcast("update"))
    assert (caught.value.status_code, caught.value.code) == (403, "channel.forbidden")


# -- system notifications -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_system_notifications_of_a_device(device: ExpService, user: ExpService) -> None:
    """Listening on a device's system channel gives an update broadcast when it changes."""
    current = await within(device.get_current_device())
    assert current is not None
    listener = await within(current.get_channel(system=True).listen("update"))
    mine = await within(user.get_device(DEMO["device_uuid"]))
    assert mine is not None
    mine.name = "renamed lobby"
    await within(mine.save())
    broadcast = await within(listener.wait(10))
    assert broadcast.name == "update"
    assert broadcast.payload["uuid"] == DEMO["device_uuid"]
    assert broadcast.payload["name"] == "renamed lobby"


@pytest_twisted.ensureDeferred
async def test_system_notifications_of_create_delete_and_data(
        device: ExpService, user: ExpService) -> None:
    """create and delete of a resource and writes of a data item are announced."""
    created = await within(device.get_channel("my-thing", system=True).listen("create"))
    deleted = await within(device.get_channel("my-thing", system=True).listen("delete"))
    thing = await within(user.create_thing({"uuid": "my-thing", "name": "announced"}))
    assert thing.uuid == "my-thing"
    assert (await within(created.wait(10))).payload["name"] == "announced"
    await within(thing.delete())
    assert (await within(deleted.wait(10))).payload["uuid"] == "my-thing"

    item = await within(user.create_data("level", "tank", 1))
    updates = await within(item.get_channel(system=True).listen("update"))
    item.value = 2
    await within(item.save())
    broadcast = await within(updates.wait(10))
    assert broadcast.payload == {"group": "tank", "key": "level", "value": 2}
