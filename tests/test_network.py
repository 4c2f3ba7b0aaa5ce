"""
The server's real-time network of PROTOCOL.md A5 (Engine.IO 3 / Socket.IO
over long-polling and WebSocket), with the channel rules of A3 and Part B and
the broadcasts of A4, over real sockets.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import ensureDeferred

from exp.protocol import sign
from exp.server.testing import DEMO, RunningServer, start_server

from ._eio import (
    Clients,
    Closed,
    Polling,
    Refused,
    WebSocket,
    assert_served,
    event,
    frame,
    guard,
    parse_event,
    parse_open,
    subscribe,
    unframe,
    unframe_binary,
    utf16_length,
)
from ._network import (
    LOBBY,
    ORG,
    TRANSPORTS,
    Bystander,
    Client,
    Clocked,
    assert_sid_unknown,
    broadcast,
    channel,
    clocked_server,
    in_lobby,
    login,
    next_broadcast,
    pending_poll,
    respond,
    running,
)
from .conftest import Answer, Http


@pytest_twisted.async_yield_fixture()
async def clocked() -> AsyncIterator[Clocked]:
    """A L{clocked_server} whose broadcasts collect for at most 5 s."""
    async with clocked_server(max_broadcast_timeout=5.0) as server:
        yield server


# -- handshakes ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_polling_handshake_answers_open_and_connect(net: Clients, token: str) -> None:
    """A polling handshake answers the open packet (times in ms) and then 40."""
    client = net.polling(token)
    packets = await client.open()
    assert packets[1:] == ["40"]
    handshake = parse_open(packets[0])
    assert set(handshake) == {"sid", "upgrades", "pingInterval", "pingTimeout"}
    assert isinstance(handshake["sid"], str) and handshake["sid"]
    assert handshake["upgrades"] == ["websocket"]
    assert (handshake["pingInterval"], handshake["pingTimeout"]) == (25000, 20000)


@pytest_twisted.ensureDeferred
async def test_polling_sessions_have_distinct_sids(net: Clients, token: str) -> None:
    """Each handshake opens a new session with its own sid."""
    first, second = net.polling(token), net.polling(token)
    await first.open()
    await second.open()
    assert first.sid != second.sid


@pytest_twisted.ensureDeferred
async def test_polling_ping_is_answered_by_pong(net: Clients, token: str) -> None:
    """A POSTed 2 is answered ok and the next GET brings 3."""
    client = await net.connect("polling", token)
    await client.send("2")
    assert await client.next() == "3"


@pytest_twisted.ensureDeferred
async def test_polling_payload_lengths_count_utf16_units(
    net: Clients, http: Http, token: str
) -> None:
    """Payload lengths count UTF-16 code units, both ways, with non-BMP text."""
    client = await in_lobby(net, "polling", token)
    # A packet with non-BMP characters, then a ping: the ping is only found
    # if the server reads the first length in UTF-16 units.
    await client.send(event("chatter", "😀𝄞"), "2")
    assert await client.get() == ["3"]
    text = "cat 🐈 and 𝄞"
    assert (await broadcast(http, token, LOBBY, "music", text)).code == 200
    await client.send("2")
    answer = await client.request("GET")
    assert answer.code == 200, answer
    body = answer.body.decode("utf-8")
    first = body[:body.index(":")]
    packets = unframe(body)
    assert len(packets) == 2 and packets[1] == "3"
    assert int(first) == utf16_length(packets[0]) != len(packets[0])
    assert parse_event(packets[0])[1][0]["payload"] == text


def content_type(answer: Answer) -> bytes:
    return bytes(answer.headers.getRawHeaders(b"content-type", [b""])[0])


@pytest_twisted.ensureDeferred
async def test_polling_without_b64_is_binary(http: Http, token: str) -> None:
    """A client that does not ask b64 at the handshake (an XHR2 browser) gets binary polls."""
    client = Polling(http, token, b64=False)
    answer = await client.request("GET")
    assert (answer.code, content_type(answer)) == (200, b"application/octet-stream"), answer
    packets = unframe_binary(answer.body)
    client.sid = parse_open(packets[0])["sid"]
    assert packets[1:] == ["40"]
    assert await subscribe(client, [LOBBY]) == [LOBBY]
    text = "cat 🐈 and é"
    assert (await broadcast(http, token, LOBBY, "music", text)).code == 200
    answer = await client.request("GET")
    assert content_type(answer) == b"application/octet-stream", answer
    assert parse_event(unframe_binary(answer.body)[0])[1][0]["payload"] == text
    ping = await client.request("POST", frame(["2"]))
    assert (ping.code, ping.body) == (200, b"ok"), ping
    assert await client.next() == "3"


@pytest_twisted.ensureDeferred
async def test_polling_with_b64_stays_text(net: Clients, token: str) -> None:
    """b64=1 at the handshake (socket.io-client in node) keeps later polls, without it, text."""
    client = net.polling(token)
    assert client.b64
    answer = await client.request("GET")
    assert content_type(answer) == b"text/plain; charset=UTF-8", answer
    client.sid = parse_open(unframe(answer.body.decode("utf-8"))[0])["sid"]
    await client.send("2")
    answer = await client.request("GET")
    assert "b64" not in client.params(), client.params()
    assert content_type(answer) == b"text/plain; charset=UTF-8", answer
    assert unframe(answer.body.decode("utf-8")) == ["3"]


@pytest_twisted.ensureDeferred
async def test_websocket_handshake_answers_open_and_connect(net: Clients, token: str) -> None:
    """A direct WebSocket gets the open packet (no upgrades), 40, and pongs pings."""
    client = await net.websocket(token)
    handshake = parse_open(await client.next())
    assert isinstance(handshake["sid"], str) and handshake["sid"]
    assert handshake["upgrades"] == []
    assert (handshake["pingInterval"], handshake["pingTimeout"]) == (25000, 20000)
    assert await client.next() == "40"
    await client.send("2")
    assert await client.next() == "3"
    await client.send("2probe")
    assert await client.next() == "3probe"


async def probe(net: Clients, token: str, polling: Polling) -> WebSocket:
    """
    Open a WebSocket for C{polling}'s session and probe it, as engine.io-client
    does: the server answers 3probe and ends the pending poll with 6, since the
    client waits for that poll to complete before it sends 5.
    """
    assert polling.sid is not None
    poll = await pending_poll(polling)
    websocket = await net.websocket(token, sid=polling.sid)
    await websocket.send("2probe")
    assert await websocket.next() == "3probe"
    assert await guard(poll) == ["6"]
    return websocket


@pytest_twisted.ensureDeferred
async def test_upgrade_from_polling_to_websocket(net: Clients, http: Http, token: str) -> None:
    """Probe, then 5: from then on the WebSocket alone carries the session."""
    polling = await in_lobby(net, "polling", token)
    websocket = await probe(net, token, polling)
    # Until 5, packets still go over polling, and a poll with nothing to
    # bring is ended at once so that the client can pause.
    await assert_served(polling)
    assert await polling.get() == ["6"]
    await websocket.send("5")
    await websocket.send("2")
    assert await websocket.next() == "3"
    assert (await broadcast(http, token, LOBBY, "hello", {"n": 1})).code == 200
    assert (await next_broadcast(websocket))["payload"] == {"n": 1}
    assert await subscribe(websocket, [channel(ORG, "other")]) == [channel(ORG, "other")]


@pytest_twisted.ensureDeferred
async def test_upgrade_ends_the_pending_poll(net: Clients, token: str) -> None:
    """A poll still pending when the client sends 5 is ended with 6."""
    polling = await net.connect("polling", token)
    assert polling.sid is not None
    poll = await pending_poll(polling)
    websocket = await net.websocket(token, sid=polling.sid)
    await websocket.send("5")
    assert await guard(poll) == ["6"]
    await assert_served(websocket)


@pytest_twisted.ensureDeferred
async def test_packets_queued_before_the_upgrade_come_over_websocket(
    net: Clients, http: Http, token: str
) -> None:
    """What the polling transport had not yet delivered is sent over the new WebSocket."""
    polling = await in_lobby(net, "polling", token)
    websocket = await probe(net, token, polling)
    assert (await broadcast(http, token, LOBBY, "queued", 1)).code == 200
    await websocket.send("5")
    assert (await next_broadcast(websocket))["name"] == "queued"
    await assert_served(websocket)


@pytest_twisted.ensureDeferred
async def test_polling_after_upgrade_is_refused(net: Clients, token: str) -> None:
    """Once a session is on WebSocket, polling with its sid is a bad request."""
    polling = await net.connect("polling", token)
    websocket = await probe(net, token, polling)
    await websocket.send("5")
    await assert_served(websocket)
    for method, body in (("GET", None), ("POST", frame(["2"]))):
        answer = await polling.request(method, body)
        assert answer.code == 400, answer
        assert answer.json == {"code": 3, "message": "Bad request"}
    await assert_served(websocket)


# -- refused handshakes ------------------------------------------------------------


async def bad_tokens(server: RunningServer, http: Http) -> dict[str, str | None]:
    """Tokens the network must refuse, by what is wrong with them."""
    auth = await http.login(username=DEMO["username"], password=DEMO["password"],
                            organization=ORG)
    assert server.server.tokens is not None
    now = int(time.time())
    expired = sign({"typ": "user", "sub": auth["identity"]["uuid"], "org": ORG,
                    "usr": DEMO["username"], "iat": now - 60, "exp": now - 10},
                   server.server.tokens.key)
    forged = sign({"typ": "user", "sub": auth["identity"]["uuid"], "org": ORG,
                   "iat": now, "exp": now + 60}, "not the key of this server")
    return {"missing": None, "empty": "", "garbage": "garbage", "expired": expired,
            "forged": forged, "restricted": auth["restrictedToken"]}


@pytest_twisted.ensureDeferred
async def test_polling_handshake_needs_a_valid_token(
    server: RunningServer, net: Clients, http: Http
) -> None:
    """A missing, invalid, expired or restricted token is 401 on the polling handshake."""
    for what, bad in (await bad_tokens(server, http)).items():
        answer = await net.polling(bad).request("GET")
        assert answer.code == 401, (what, answer)
        assert answer.json["code"] == "auth.invalid", (what, answer)


@pytest_twisted.ensureDeferred
async def test_websocket_handshake_needs_a_valid_token(
    server: RunningServer, net: Clients, http: Http
) -> None:
    """A missing, invalid, expired or restricted token refuses the WebSocket with 401."""
    for what, bad in (await bad_tokens(server, http)).items():
        with pytest.raises(Refused) as refused:
            await net.websocket(bad)
        assert refused.value.status == 401, (what, refused.value)


@pytest_twisted.ensureDeferred
async def test_other_engine_io_versions_are_400(net: Clients, token: str) -> None:
    """EIO other than 3 (or none) is 400 on both transports."""
    for version in ("4", "2", ""):
        answer = await net.polling(token).request("GET", EIO=version)
        assert answer.code == 400, (version, answer)
        assert answer.json["code"] == 5, answer
        with pytest.raises(Refused) as refused:
            await net.websocket(token, EIO=version)
        assert refused.value.status == 400, (version, refused.value)


@pytest_twisted.ensureDeferred
async def test_unknown_transport_is_400(net: Clients, token: str) -> None:
    """A transport other than polling or websocket is 400 Transport unknown."""
    for transport in ("flashsocket", ""):
        answer = await net.polling(token).request("GET", transport=transport)
        assert answer.code == 400, answer
        assert answer.json == {"code": 0, "message": "Transport unknown"}


@pytest_twisted.ensureDeferred
async def test_unknown_sid_is_400(net: Clients, http: Http, token: str) -> None:
    """Polls, posts and upgrades with an unknown sid are refused with 400."""
    await assert_sid_unknown(http, "no-such-session")
    with pytest.raises(Refused) as refused:
        await net.websocket(token, sid="no-such-session")
    assert refused.value.status == 400


@pytest_twisted.ensureDeferred
async def test_upgrade_with_another_identitys_token_is_refused(
    net: Clients, http: Http, token: str
) -> None:
    """A WebSocket may only join a session with a token of the session's identity."""
    polling = await net.connect("polling", token)
    assert polling.sid is not None
    device = await login(http, "device")
    with pytest.raises(Refused) as refused:
        await net.websocket(device["token"], sid=polling.sid)
    assert refused.value.status == 403
    await assert_served(polling)


# -- subscribing -----------------------------------------------------------------


OWN_CHANNELS = [channel(ORG, "lobby"), channel(ORG, "kiosk", consumer=True),
                channel(ORG, "test-uuid", system=True),
                channel(ORG, "data:cats:fluffy", system=True, consumer=True)]


def refused_channels(organization: str) -> list[Any]:
    """Ids nobody of C{organization} may listen on: foreign, garbage, non-canonical."""
    spaced = json.dumps([organization, "lobby", 0, 0]).encode("utf-8")
    booleans = json.dumps([organization, "lobby", False, True], separators=(",", ":"))
    padded = next(c for c in (channel(organization, "x" * n) for n in (1, 2, 3))
                  if c.endswith("="))
    return [
        channel("other-org", "lobby"),
        channel("other-org", "lobby", system=True),
        channel("other-org", "kiosk", consumer=True),
        "not a channel", "", 42, None, ["x"], {"a": 1},
        base64.b64encode(b"[1,2,3]").decode(),
        base64.b64encode(b'{"organization":"scala"}').decode(),
        base64.b64encode(spaced).decode(),
        base64.b64encode(booleans.encode("utf-8")).decode(),
        padded.rstrip("="),
        channel(organization, "lobby") + "\n",
        channel(organization, "lobby").replace("=", "") + "====",
    ]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("who", ["user", "device"])
@pytest_twisted.ensureDeferred
async def test_users_and_devices_listen_on_their_organizations_channels(
    net: Clients, http: Http, token: str, transport: str, who: str
) -> None:
    """Users and devices are accepted on their own organization's channels of every kind."""
    auth_token = token if who == "user" else (await login(http, "device"))["token"]
    client = await net.connect(transport, auth_token)
    assert await subscribe(client, OWN_CHANNELS) == OWN_CHANNELS


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest_twisted.ensureDeferred
async def test_foreign_and_malformed_channels_are_left_out(
    net: Clients, http: Http, token: str, transport: str
) -> None:
    """Other organizations' channels, garbage and non-canonical ids are not subscribed."""
    client = await net.connect(transport, token)
    asked = [*refused_channels(ORG), LOBBY]
    assert await subscribe(client, asked) == [LOBBY]
    device = await net.connect(transport, (await login(http, "device"))["token"])
    assert await subscribe(device, refused_channels(ORG)) == []
    assert await subscribe(device, []) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest_twisted.ensureDeferred
async def test_consumer_app_only_gets_consumer_channels(
    net: Clients, http: Http, transport: str
) -> None:
    """A consumer app is subscribed to its organization's consumer channels only."""
    consumer = await login(http, "consumer")
    client = await net.connect(transport, consumer["token"])
    kiosk = channel(ORG, "kiosk", consumer=True)
    asked = [LOBBY, channel(ORG, "test-uuid", system=True), kiosk,
             channel("other-org", "kiosk", consumer=True), *refused_channels(ORG)]
    assert await subscribe(client, asked) == [kiosk]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest_twisted.ensureDeferred
async def test_unpaired_device_only_gets_its_own_system_channel(
    net: Clients, http: Http, token: str, transport: str
) -> None:
    """An unpaired device listens on ("", its uuid, system) only, and is told it is paired."""
    auth = await login(http, "unpaired")
    identity = auth["identity"]
    assert identity["paired"] is False and identity["organization"] == ""
    own = channel("", identity["uuid"], system=True)
    client = await net.connect(transport, auth["token"])
    asked = [channel("", identity["uuid"]), channel("", "someone-else", system=True),
             channel(ORG, identity["uuid"], system=True), LOBBY,
             channel(ORG, "kiosk", consumer=True), own, *refused_channels("")]
    assert await subscribe(client, asked) == [own]
    answer = await http.call("POST", "/api/devices/pair",
                             {"pairingCode": identity["pairingCode"], "name": "new"},
                             token=token)
    assert answer.code == 200, answer
    message = await next_broadcast(client)
    assert message["channel"] == own and message["name"] == "paired"
    assert message["payload"] == {"uuid": answer.json["uuid"], "secret": answer.json["secret"]}


# -- broadcasts ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_broadcast_reaches_every_subscriber(net: Clients, http: Http, token: str) -> None:
    """A broadcast reaches all subscribed connections, the sender's own included, alike."""
    device_token_ = (await login(http, "device"))["token"]
    own_polling = await net.connect("polling", token)
    own_websocket = await net.connect("websocket", token)
    device_polling = await net.connect("polling", device_token_)
    device_websocket = await net.connect("websocket", device_token_)
    listeners = [own_polling, own_websocket, device_polling, device_websocket]
    for client in listeners:
        assert await subscribe(client, [LOBBY]) == [LOBBY]
    elsewhere = await net.connect("websocket", device_token_)
    assert await subscribe(elsewhere, [channel(ORG, "other")]) == [channel(ORG, "other")]
    silent_polling = await net.connect("polling", token)
    silent_websocket = await net.connect("websocket", token)

    payload = {"text": "hello", "list": [1, 2.5, None, True], "ü": "😀"}
    answer = await broadcast(http, token, LOBBY, "greeting", payload)
    assert answer.code == 200, answer
    assert answer.json == []
    messages = [await next_broadcast(client) for client in listeners]
    assert set(messages[0]) == {"id", "channel", "name", "payload"}
    assert isinstance(messages[0]["id"], str) and messages[0]["id"]
    assert messages[0]["channel"] == LOBBY
    assert messages[0]["name"] == "greeting"
    assert messages[0]["payload"] == payload
    assert all(message == messages[0] for message in messages)
    for client in [*listeners, elsewhere, silent_polling, silent_websocket]:
        await assert_served(client)


@pytest_twisted.ensureDeferred
async def test_each_broadcast_has_its_own_id(net: Clients, http: Http, token: str) -> None:
    """Two broadcasts, even identical ones, carry different ids."""
    client = await in_lobby(net, "websocket", token)
    for _ in range(2):
        assert (await broadcast(http, token, LOBBY, "same", 1)).code == 200
    first, second = await next_broadcast(client), await next_broadcast(client)
    assert first["id"] != second["id"]
    assert {**first, "id": None} == {**second, "id": None}


@pytest_twisted.ensureDeferred
async def test_consumer_app_broadcasts_on_consumer_channels(
    net: Clients, http: Http, token: str
) -> None:
    """A consumer app's broadcast on a consumer channel reaches users listening there."""
    kiosk = channel(ORG, "kiosk", consumer=True)
    client = await net.connect("polling", token)
    assert await subscribe(client, [kiosk]) == [kiosk]
    consumer = await login(http, "consumer")
    assert (await broadcast(http, consumer["token"], kiosk, "tap", 7)).code == 200
    message = await next_broadcast(client)
    assert (message["channel"], message["name"], message["payload"]) == (kiosk, "tap", 7)


@pytest_twisted.ensureDeferred
async def test_forbidden_broadcasts(net: Clients, http: Http, token: str) -> None:
    """System, foreign and (for consumer apps) non-consumer channels refuse broadcasts."""
    system = channel(ORG, "test-uuid", system=True)
    client = await net.connect("websocket", token)
    assert await subscribe(client, [system, LOBBY]) == [system, LOBBY]
    consumer = (await login(http, "consumer"))["token"]
    for sender, channel_id in ((token, system), (token, channel("other-org", "lobby")),
                               (consumer, LOBBY),
                               (consumer, channel(ORG, "kiosk", system=True, consumer=True))):
        answer = await broadcast(http, sender, channel_id, "nope", 1)
        assert answer.code == 403, answer
        assert answer.json["code"] == "channel.forbidden"
    answer = await broadcast(http, token, "garbage", "nope", 1)
    assert answer.code == 400 and answer.json["code"] == "channel.invalid"
    await assert_served(client)


@pytest_twisted.ensureDeferred
async def test_responses_come_back_in_arrival_order(clocked: Clocked) -> None:
    """Responses POSTed during the timeout are the broadcast's answer, in arrival order."""
    http, net = clocked.http, clocked.net
    token = await http.user_token()
    device = (await login(http, "device"))["token"]
    user_client = await net.connect("websocket", token)
    device_client = await net.connect("polling", device)
    for client in (user_client, device_client):
        assert await subscribe(client, [LOBBY]) == [LOBBY]
    pending = ensureDeferred(broadcast(http, token, LOBBY, "identify", None, timeout=2000))
    seen_by_user = await next_broadcast(user_client)
    assert await next_broadcast(device_client) == seen_by_user
    for sender, payload in ((device, "first"), (token, {"second": 2}), (device, [3])):
        assert (await respond(http, sender, seen_by_user, payload)).code == 200
    stray = {"id": "not-a-broadcast", "channel": LOBBY}
    assert (await respond(http, token, stray, "stray")).code == 200
    clocked.clock.advance(1.5)
    assert (await respond(http, token, seen_by_user, "last")).code == 200
    clocked.clock.advance(0.5)
    answer = await guard(pending)
    assert answer.code == 200, answer
    assert answer.json == ["first", {"second": 2}, [3], "last"]


@pytest_twisted.ensureDeferred
async def test_responses_after_the_timeout_are_dropped(clocked: Clocked) -> None:
    """A response after its broadcast's timeout is accepted but ends up in no answer."""
    http = clocked.http
    token, client = await clocked.listener("websocket")
    first, asked_first = await clocked.ask(token, client, 100)
    clocked.clock.advance(0.1)
    answer = await guard(first)
    assert (answer.code, answer.json) == (200, [])
    second, asked_second = await clocked.ask(token, client, 100)
    late = await respond(http, token, asked_first, "too late")
    assert (late.code, late.body) == (200, b"")
    assert (await respond(http, token, asked_second, "in time")).code == 200
    clocked.clock.advance(0.1)
    answer = await guard(second)
    assert (answer.code, answer.json) == (200, ["in time"])


@pytest_twisted.ensureDeferred
async def test_broadcast_timeout_is_capped(clocked: Clocked) -> None:
    """A timeout above max_broadcast_timeout (here 5 s) collects for that maximum."""
    token, client = await clocked.listener("polling")
    pending, message = await clocked.ask(token, client, 3600_000)
    clocked.clock.advance(4.5)
    assert (await respond(clocked.http, token, message, "in time")).code == 200
    clocked.clock.advance(0.5)
    answer = await guard(pending)
    assert (answer.code, answer.json) == (200, ["in time"])


@pytest_twisted.ensureDeferred
async def test_broadcast_without_timeout_answers_empty_at_once(
    net: Clients, http: Http, token: str
) -> None:
    """Without a timeout (or with 0, or an unset JavaScript value such as the JS SDK's
    ?timeout=undefined) a broadcast is answered [] once delivered."""
    client = await in_lobby(net, "websocket", token)
    for timeout in (None, 0, "undefined", "null", ""):
        answer = await broadcast(http, token, LOBBY, "tell", None, timeout=timeout)
        assert (answer.code, answer.json) == (200, [])
        assert (await next_broadcast(client))["name"] == "tell"


# -- system notifications ----------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest_twisted.ensureDeferred
async def test_device_changes_are_announced_on_its_system_channel(
    net: Clients, http: Http, token: str, transport: str
) -> None:
    """Creating, updating and deleting a device broadcast create/update/delete with it."""
    system = channel(ORG, "net-device", system=True)
    client = await net.connect(transport, token)
    assert await subscribe(client, [system]) == [system]
    created = await http.call("POST", "/api/devices", {"uuid": "net-device", "name": "a"},
                              token=token)
    assert created.code == 200, created
    updated = await http.call("PATCH", "/api/devices/net-device", {"name": "b"}, token=token)
    assert updated.code == 200, updated
    deleted = await http.call("DELETE", "/api/devices/net-device", token=token)
    assert deleted.code == 200, deleted
    announced = [await next_broadcast(client) for _ in range(3)]
    assert [m["name"] for m in announced] == ["create", "update", "delete"]
    assert all(m["channel"] == system for m in announced)
    assert announced[0]["payload"] == created.json
    assert announced[1]["payload"] == updated.json
    assert announced[2]["payload"] == updated.json
    assert updated.json["name"] == "b" and "secret" in created.json
    await assert_served(client)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest_twisted.ensureDeferred
async def test_data_changes_are_announced_on_its_system_channel(
    net: Clients, http: Http, token: str, transport: str
) -> None:
    """PUT and DELETE of a data item broadcast on the system channel data:<group>:<key>,
    and on data:<key>:<group>, the name the official JS SDK listens on."""
    system = channel(ORG, "data:cats:tom", system=True)
    js_sdk = channel(ORG, "data:tom:cats", system=True)
    client = await net.connect(transport, token)
    assert await subscribe(client, [system, js_sdk]) == [system, js_sdk]
    for value in ({"age": 1}, {"age": 2}):
        assert (await http.call("PUT", "/api/data/cats/tom", value, token=token)).code == 200
    assert (await http.call("DELETE", "/api/data/cats/tom", token=token)).code == 200
    announced = [await next_broadcast(client) for _ in range(6)]
    assert [(m["name"], m["channel"]) for m in announced] == [
        (event, name) for event in ("create", "update", "delete") for name in (system, js_sdk)]
    assert [m["payload"] for m in announced[::2]] == [
        {"group": "cats", "key": "tom", "value": {"age": 1}},
        {"group": "cats", "key": "tom", "value": {"age": 2}},
        {"group": "cats", "key": "tom", "value": {"age": 2}},
    ]
    assert announced[1::2] == [dict(m, channel=js_sdk, id=n["id"])
                               for m, n in zip(announced[::2], announced[1::2], strict=True)]
    await assert_served(client)


# -- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["x", "", "9", "{}", " 2"])
@pytest_twisted.ensureDeferred
async def test_malformed_engine_io_frame_closes_websocket(
    net: Clients, http: Http, token: str, bad: str
) -> None:
    """A WebSocket frame that is no Engine.IO packet closes that session only."""
    bystander = await Bystander.join(net, token)
    client = await net.websocket(token)
    sid = parse_open(await client.next())["sid"]
    assert await client.next() == "40"
    await client.send(bad)
    await client.wait_closed()
    with pytest.raises(Closed):
        await client.next()
    await assert_sid_unknown(http, sid)
    await bystander.check()


@pytest.mark.parametrize("bad", ["garbage", "10:2", "1:9", "2:", "", "1:2x:3"])
@pytest_twisted.ensureDeferred
async def test_malformed_polling_payload_is_400_and_closes_session(
    net: Clients, http: Http, token: str, bad: str
) -> None:
    """A malformed polling payload is 400 and ends that session only."""
    bystander = await Bystander.join(net, token)
    client = await net.connect("polling", token)
    assert client.sid is not None
    answer = await client.request("POST", bad)
    assert answer.code == 400, answer
    assert answer.json["code"] == 3
    await assert_sid_unknown(http, client.sid)
    await bystander.check()


#: The answer of an error packet with a message: C{44"…"}.
ERROR = object()
INVALID_NAMESPACE = '44/x,"Invalid namespace"'

#: Packets a client gets wrong, and the server's answer to each: an error packet,
#: that very packet, or (None) nothing.  The session goes on after each.
BAD_PACKETS = [
    # Socket.IO packets that are not JSON, or of no type
    *((bad, ERROR) for bad in ('42["subscribe",', "42{nope}", "4x", "45[]", "4")),
    # events that are not [name, ...], and subscribes without an array
    *((bad, ERROR) for bad in ('42["subscribe","x"]', '42["subscribe"]',
                               '42["subscribe",{"a":1}]', "42[]", '42{"a":1}', "42[1,2]",
                               '42"subscribe"')),
    # unknown events, acks, a repeated connect and stray Engine.IO packets
    *((bad, None) for bad in ('42["hello",{"a":1}]', '42["broadcast",{}]',
                              '42["subscribed",[]]', "431[]", "40", "3", "6", "0")),
    # a namespace other than /, connected to or used
    ("40/x", INVALID_NAMESPACE),
    ('42/x,["subscribe",[]]', INVALID_NAMESPACE),
    ("40/chat,", '44/chat,"Invalid namespace"'),
]


@pytest.mark.parametrize(("bad", "expected"), BAD_PACKETS, ids=[b for b, _ in BAD_PACKETS])
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest_twisted.ensureDeferred
async def test_bad_packets_get_an_error_packet_or_nothing(
    net: Clients, token: str, transport: str, bad: str, expected: object
) -> None:
    """A bad Socket.IO packet is answered 44 (with a message, or Invalid namespace) or not at
    all, and the session goes on; the others are served."""
    bystander = await Bystander.join(net, token)
    client = await net.connect(transport, token)
    await client.send(bad)
    if expected is ERROR:
        answer = await client.next()
        assert answer.startswith('44"'), (bad, answer)
        assert isinstance(json.loads(answer[2:]), str)
    elif expected is not None:
        assert await client.next() == expected
    await assert_served(client)
    assert await subscribe(client, [LOBBY]) == [LOBBY]
    await bystander.check()


@pytest_twisted.ensureDeferred
async def test_binary_websocket_frame_closes_it(net: Clients, http: Http, token: str) -> None:
    """A binary WebSocket frame closes that session."""
    bystander = await Bystander.join(net, token)
    client = await net.websocket(token)
    sid = parse_open(await client.next())["sid"]
    client.sendMessage(b"2", isBinary=True)
    await client.wait_closed()
    await assert_sid_unknown(http, sid)
    await bystander.check()


@pytest_twisted.ensureDeferred
async def test_oversized_messages_close_the_session() -> None:
    """A WebSocket frame or polling payload over max_body ends that session only."""
    async with running(max_body=4096) as (_, net):
        token = await net.http.user_token()
        bystander = await Bystander.join(net, token)
        client = await net.websocket(token)
        sid = parse_open(await client.next())["sid"]
        await client.send("4" + "x" * 5000)
        await client.wait_closed()
        await assert_sid_unknown(net.http, sid)
        polling = await net.connect("polling", token)
        assert polling.sid is not None
        answer = await polling.request("POST", frame(["4" + "x" * 5000]))
        assert answer.code == 413, answer
        await assert_sid_unknown(net.http, polling.sid)
        await bystander.check()


@pytest_twisted.ensureDeferred
async def test_second_concurrent_poll_ends_the_first_with_noop(
    net: Clients, token: str
) -> None:
    """Of two concurrent GET polls the older is answered 6; the newer gets what comes."""
    client = await net.connect("polling", token)
    poll = await pending_poll(client)
    await client.send("2")
    assert await guard(poll) == ["3"]


@pytest_twisted.ensureDeferred
async def test_silent_clients_are_dropped_and_pinging_ones_kept() -> None:
    """A client that sends nothing for pingInterval + pingTimeout is dropped; pingers stay."""
    async with running(ping_interval=0.2, ping_timeout=0.2) as (_, net):
        token = await net.http.user_token()
        pingers = [await net.connect(t, token) for t in TRANSPORTS]
        stop: list[bool] = []

        async def keep_pinging(client: Client) -> None:
            while not stop:
                await assert_served(client)
                await task.deferLater(reactor, 0.05, lambda: None)

        pinging = [ensureDeferred(keep_pinging(client)) for client in pingers]
        silent_websocket = await net.websocket(token)
        handshake = parse_open(await silent_websocket.next())
        assert (handshake["pingInterval"], handshake["pingTimeout"]) == (200, 200)
        silent_polling = net.polling(token)
        await silent_polling.open()
        assert silent_polling.sid is not None
        answer = await silent_polling.request("GET")
        if answer.code == 200:  # the poll was held until the session timed out
            assert unframe(answer.body.decode("utf-8")) == ["1"]
        await assert_sid_unknown(net.http, silent_polling.sid)
        await silent_websocket.wait_closed()
        stop.append(True)
        for d in pinging:
            await guard(d)
        for client in pingers:
            assert await subscribe(client, [LOBBY]) == [LOBBY]


# -- closing -----------------------------------------------------------------------


@pytest.mark.parametrize("close", ["1", "41"])
@pytest_twisted.ensureDeferred
async def test_close_from_a_polling_client_ends_the_session(
    net: Clients, http: Http, token: str, close: str
) -> None:
    """Engine.IO close (1) or Socket.IO disconnect (41) ends a polling session."""
    client = await net.connect("polling", token)
    assert client.sid is not None
    poll = await pending_poll(client)
    await client.send(close)
    assert await guard(poll) == ["1"]
    await assert_sid_unknown(http, client.sid)


@pytest.mark.parametrize("close", ["1", "41"])
@pytest_twisted.ensureDeferred
async def test_close_from_a_websocket_client_ends_the_session(
    net: Clients, http: Http, token: str, close: str
) -> None:
    """Engine.IO close (1) or Socket.IO disconnect (41) closes a WebSocket session."""
    client = await net.websocket(token)
    sid = parse_open(await client.next())["sid"]
    await client.send(close)
    await client.wait_closed()
    await assert_sid_unknown(http, sid)


@pytest_twisted.ensureDeferred
async def test_dropped_websocket_ends_the_session(net: Clients, http: Http, token: str) -> None:
    """A WebSocket whose connection is lost ends its session."""
    client = await net.websocket(token)
    sid = parse_open(await client.next())["sid"]
    client.dropConnection(abort=True)
    await client.wait_closed()
    # The server learns of the loss a moment later: poll until it has.
    for _ in range(100):
        answer = await Polling(http, None).request("POST", frame(["2"]), sid=sid)
        if answer.code == 400 and answer.json["code"] == 1:
            break
        await task.deferLater(reactor, 0.05, lambda: None)
    await assert_sid_unknown(http, sid)


@pytest_twisted.ensureDeferred
async def test_stopping_the_server_closes_sessions() -> None:
    """Stopping the server ends pending polls with 1 and closes WebSockets."""
    server = await start_server()
    net = Clients(server.url)
    stopped = False
    try:
        token = await net.http.user_token()
        polling = await net.connect("polling", token)
        assert isinstance(polling, Polling)
        poll = await pending_poll(polling)
        websocket = await net.connect("websocket", token)
        assert isinstance(websocket, WebSocket)
        stopped = True
        await server.stop()
        assert await guard(poll) == ["1"]
        await websocket.wait_closed()
    finally:
        await net.close()
        if not stopped:
            await server.stop()
