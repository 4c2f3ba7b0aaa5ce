"""
Every network client gets a budget, and a session belongs to its identity:
the attacks of issue 13 (items 1 and 7) against a real server on loopback,
each with its defended outcome asserted.
"""

from __future__ import annotations

import gc
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import globalLogPublisher
from twisted.protocols import policies
from twisted.python import usage

from exp.server import ServerConfig
from exp.server._web import DeadlineChannel
from exp.server.tap import Options
from exp.server.testing import DEMO, RunningServer

from ._eio import (
    HANG_GUARD,
    Clients,
    Polling,
    Refused,
    Unreading,
    WebSocket,
    assert_served,
    event,
    frame,
    guard,
    parse_event,
    parse_open,
    pause,
    subscribe,
)
from ._network import (
    LOBBY,
    ORG,
    Bystander,
    assert_sid_unknown,
    broadcast,
    channel,
    clocked_server,
    login,
    next_broadcast,
    pending_poll,
    respond,
    running,
    sid_known,
)
from ._support import render
from .conftest import Http

#: A broadcast payload just under the default --max-body (1 MiB) with its envelope.
LARGE = "x" * (900 << 10)


# -- the options ------------------------------------------------------------------------

CAPS = {"max-session-queue": "max_session_queue", "max-session-messages": "max_session_messages",
        "max-subscriptions": "max_subscriptions",
        "max-sessions-per-identity": "max_sessions_per_identity",
        "max-responses": "max_responses", "max-response-bytes": "max_response_bytes"}


def test_every_cap_is_a_server_option_with_the_configs_default() -> None:
    """Each cap is an exp-server option whose default is ServerConfig's, and can be set."""
    defaults = Options()
    defaults.parseOptions([])
    config = ServerConfig()
    assert {o: defaults[o] for o in CAPS} == {o: getattr(config, f) for o, f in CAPS.items()}
    assert config.max_session_queue >= config.max_body
    options = Options()
    options.parseOptions([arg for n, option in enumerate(CAPS)
                          for arg in (f"--{option}", str((4 << 20) + n))])
    assert [options[o] for o in CAPS] == [(4 << 20) + n for n in range(len(CAPS))]
    for bad in (["--max-subscriptions", "0"], ["--max-session-queue", "1000"]):
        with pytest.raises(usage.UsageError):
            Options().parseOptions(bad)


class _Rewrapper(policies.ProtocolWrapper):
    """A protocol wrapper the server does not know to pass writes on unchanged, as TLS."""


class _RewrappingFactory(policies.WrappingFactory):
    protocol = _Rewrapper


#: How a test reaches the server: its own port; its site behind a protocol wrapper,
#: as twisted.protocols.policies puts connections (both write to the socket at once
#: when nothing waits); or behind one the server cannot see through, as TLS (which
#: buffers every write).
SITES = ["plain", "wrapped", "opaque"]


@asynccontextmanager
async def site_of(server: RunningServer, site: str) -> AsyncIterator[Clients]:
    """Clients of C{server} through C{site} (see L{SITES})."""
    if site == "plain":
        yield Clients(server.url)
        return
    kind = policies.WrappingFactory if site == "wrapped" else _RewrappingFactory
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        kind(server.server.site()))
    clients = Clients(f"http://127.0.0.1:{port.getHost().port}")
    try:
        yield clients
    finally:
        await clients.close()
        await port.stopListening()


@pytest.mark.parametrize("site", SITES)
@pytest_twisted.ensureDeferred
async def test_websocket_client_that_never_reads_is_closed(site: str) -> None:
    """A WebSocket client that pings but never reads is closed once the server's writes to
    it back up past the session's queue cap; the others are served, and it can reconnect.
    So too when the connection is behind a protocol wrapper."""
    async with running() as (server, _), site_of(server, site) as net:
        token = await net.http.user_token()
        bystander = await Bystander.join(net, token)
        client = Unreading(net.url, token)
        try:
            sid = parse_open(await client.next())["sid"]
            assert await client.next() == "40"
            assert await subscribe(client, [LOBBY]) == [LOBBY]
            await client.send("2")  # alive, but it reads nothing more
            sent = 0
            while await sid_known(net.http, sid):
                # 200 take 180 MB: only a server without a cap gets there.
                assert sent < 200, "the session was never closed"
                answer = await broadcast(net.http, token, LOBBY, "large", LARGE)
                assert answer.code == 200, answer
                assert (await next_broadcast(bystander.client))["name"] == "large"
                sent += 1
            assert sent > 4  # more than the cap: the kernel's buffers took some
            await bystander.check()
            again = await net.connect("websocket", token)
            await assert_served(again)
        finally:
            client.close()


@pytest.mark.parametrize("site", SITES)
@pytest_twisted.ensureDeferred
async def test_a_slow_websocket_client_gets_every_broadcast_in_order(site: str) -> None:
    """Broadcasts to a WebSocket client that stops reading for a while wait in the kernel's
    buffers, then in the server's; those delivered once the client reads a little, while
    the server still holds bytes for it, go after those bytes; all of them reach it in
    the order posted, and so do those posted after it has caught up."""
    async with running() as (server, _), site_of(server, site) as net:
        token = await net.http.user_token()
        client = Unreading(net.url, token)
        try:
            sid = parse_open(await client.next())["sid"]
            assert await client.next() == "40"
            assert await subscribe(client, [LOBBY]) == [LOBBY]
            websocket = server.server.network.sessions[sid].session.websocket
            assert websocket is not None
            # Small kernel buffers on the server's side too (loopback's grow to MiBs).
            websocket.transport.getHandle().setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
            filler = "y" * (24 << 10)
            # 60 of 24 KiB: more than the kernel's buffers take for a client that does
            # not read, within the session's caps (4 MiB, 1000 messages).
            for seq in range(60):
                answer = await broadcast(net.http, token, LOBBY, "seq", [seq, filler])
                assert answer.code == 200, answer
            assert websocket.backed_up  # the server holds bytes for the client
            seq = 60
            for _ in range(3):
                # The client makes room in the kernel's buffers, and a broadcast is
                # delivered before the reactor has written what the server holds.
                client.read_available()
                server.server.hub.notify(LOBBY, "seq", [seq, filler])
                seq += 1
            for expected in range(seq):
                name, args = parse_event(await client.next())
                assert (name, args[0]["payload"][0]) == ("broadcast", expected)
            for expected in range(seq, seq + 3):
                assert (await broadcast(net.http, token, LOBBY, "seq", [expected])).code == 200
                name, args = parse_event(await client.next())
                assert (name, args[0]["payload"]) == ("broadcast", [expected])
        finally:
            client.close()


@pytest_twisted.ensureDeferred
async def test_polling_session_that_never_polls_is_closed_past_its_bytes() -> None:
    """A polling session that never polls again is closed once the broadcasts queued for it
    pass the queue's bytes (4 MiB); its next poll finds no session and it can reconnect."""
    async with running() as (_, net):
        token = await net.http.user_token()
        bystander = await Bystander.join(net, token)
        client = await net.connect("polling", token)
        assert isinstance(client, Polling) and client.sid is not None
        assert await subscribe(client, [LOBBY]) == [LOBBY]
        for _ in range(4):  # 3.5 MiB: held for the next poll
            assert (await broadcast(net.http, token, LOBBY, "large", LARGE)).code == 200
            assert (await next_broadcast(bystander.client))["name"] == "large"
        assert await sid_known(net.http, client.sid)
        assert (await broadcast(net.http, token, LOBBY, "large", LARGE)).code == 200
        assert (await next_broadcast(bystander.client))["name"] == "large"
        await assert_sid_unknown(net.http, client.sid)
        await bystander.check()
        await assert_served(await net.connect("polling", token))


@pytest_twisted.ensureDeferred
async def test_polling_session_that_never_polls_is_closed_past_its_messages() -> None:
    """Past max_session_messages packets waiting for a poll, the session is closed."""
    async with running(max_session_messages=10) as (_, net):
        token = await net.http.user_token()
        client = await net.connect("polling", token)
        assert isinstance(client, Polling) and client.sid is not None
        assert await subscribe(client, [LOBBY]) == [LOBBY]
        for _ in range(10):
            assert (await broadcast(net.http, token, LOBBY, "small", 1)).code == 200
        assert await sid_known(net.http, client.sid)
        assert (await broadcast(net.http, token, LOBBY, "small", 1)).code == 200
        await assert_sid_unknown(net.http, client.sid)


@pytest_twisted.ensureDeferred
async def test_a_polling_client_that_polls_keeps_its_session() -> None:
    """What a client polls leaves the queue: many more packets than the cap pass through."""
    async with running(max_session_messages=3) as (_, net):
        token = await net.http.user_token()
        client = await net.connect("polling", token)
        assert isinstance(client, Polling)
        assert await subscribe(client, [LOBBY]) == [LOBBY]
        for n in range(10):
            for _ in range(3):
                assert (await broadcast(net.http, token, LOBBY, "small", n)).code == 200
            assert [json.loads(p[2:])[1]["payload"] for p in await client.get()] == [n] * 3
        await assert_served(client)


# -- subscriptions --------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["polling", "websocket"])
@pytest_twisted.ensureDeferred
async def test_one_message_cannot_subscribe_more_than_the_cap(
    net: Clients, http: Http, token: str, transport: str
) -> None:
    """Of 20,000 channels in one subscribe, the first 1,000 are accepted and named in the
    answer; then only channels already subscribed are, until the cap is raised."""
    client = await net.connect(transport, token)
    asked = [channel(ORG, f"c{n}") for n in range(20_000)]
    assert await subscribe(client, asked) == asked[:1000]
    assert await subscribe(client, [asked[5], asked[1000], LOBBY]) == [asked[5]]
    assert (await broadcast(http, token, asked[1000], "missed", 1)).code == 200
    assert (await broadcast(http, token, asked[999], "heard", 1)).code == 200
    assert (await next_broadcast(client))["name"] == "heard"


# -- sessions per identity --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_identitys_oldest_session_is_closed_past_the_cap() -> None:
    """An identity opening one session past max_sessions_per_identity loses its oldest;
    other identities keep theirs."""
    async with running(max_sessions_per_identity=3) as (_, net):
        token = await net.http.user_token()
        device = (await login(net.http, "device"))["token"]
        user_sessions = [await net.connect("websocket", token) for _ in range(2)]
        oldest = await net.connect("polling", device)
        assert isinstance(oldest, Polling) and oldest.sid is not None
        others = [await net.connect(transport, device) for transport in ("websocket", "polling")]
        assert await sid_known(net.http, oldest.sid)
        newest = await net.connect("websocket", device)
        await assert_sid_unknown(net.http, oldest.sid)
        for client in [*others, newest, *user_sessions]:
            await assert_served(client)
        first = others[0]
        assert isinstance(first, WebSocket)
        await net.connect("polling", device)
        await first.wait_closed()


@pytest_twisted.ensureDeferred
async def test_an_unpaired_device_holds_one_session(
    net: Clients, http: Http, token: str
) -> None:
    """A pairing identity's every new session closes its previous one; the last is paired."""
    auth = await login(http, "unpaired")
    identity = auth["identity"]
    own = channel("", identity["uuid"], system=True)
    first = await net.connect("websocket", auth["token"])
    assert isinstance(first, WebSocket)
    assert await subscribe(first, [own]) == [own]
    second = await net.connect("polling", auth["token"])
    await first.wait_closed()
    assert isinstance(second, Polling) and second.sid is not None
    third = await net.connect("polling", auth["token"])
    await assert_sid_unknown(http, second.sid)
    assert await subscribe(third, [own]) == [own]
    answer = await http.call("POST", "/api/devices/pair",
                             {"pairingCode": identity["pairingCode"], "name": "new"},
                             token=token)
    assert answer.code == 200, answer
    assert (await next_broadcast(third))["name"] == "paired"


# -- responses per broadcast ----------------------------------------------------------


@pytest.mark.parametrize(("config", "payloads", "kept"), [
    ({"max_responses": 3}, [1, 2, 3, 4, 5], [1, 2, 3]),
    # 40 bytes each as JSON: the third would pass 100; a small one still fits.
    ({"max_response_bytes": 100}, ["x" * 38] * 3 + [7], ["x" * 38] * 2 + [7]),
])
@pytest_twisted.ensureDeferred
async def test_a_broadcast_collects_responses_up_to_its_caps(
    config: dict[str, int], payloads: list[Any], kept: list[Any]
) -> None:
    """Responses past max_responses or max_response_bytes are answered 200 and dropped."""
    async with clocked_server(**config) as clocked:
        token, client = await clocked.listener("websocket")
        pending, message = await clocked.ask(token, client, 1000)
        for payload in payloads:
            answer = await respond(clocked.http, token, message, payload)
            assert (answer.code, answer.body) == (200, b""), answer
        clocked.clock.advance(1)
        answer = await guard(pending)
        assert (answer.code, answer.json) == (200, kept)


# -- a session belongs to its identity ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_consumer_app_cannot_take_over_a_devices_session_of_the_same_uuid(
    net: Clients, http: Http, token: str
) -> None:
    """The consumer app test-uuid can neither upgrade onto nor poll the device test-uuid's
    session, and gets none of its broadcasts; the device's session goes on."""
    assert DEMO["consumer_uuid"] == DEMO["device_uuid"]
    device = (await login(http, "device"))["token"]
    consumer = (await login(http, "consumer"))["token"]
    victim = await net.connect("polling", device)
    assert isinstance(victim, Polling) and victim.sid is not None
    assert await subscribe(victim, [LOBBY]) == [LOBBY]
    with pytest.raises(Refused) as refused:
        await net.websocket(consumer, sid=victim.sid)
    assert refused.value.status == 403
    thief = Polling(http, consumer)
    thief.sid = victim.sid
    for method, body in (("GET", None), ("POST", frame([event("subscribe", [LOBBY])]))):
        answer = await thief.request(method, body)
        assert (answer.code, answer.json["code"]) == (403, 4), answer
    assert (await broadcast(http, token, LOBBY, "private", 1)).code == 200
    assert (await next_broadcast(victim))["name"] == "private"
    await assert_served(victim)


@pytest_twisted.ensureDeferred
async def test_polling_needs_a_token_of_the_sessions_identity(
    net: Clients, http: Http, token: str
) -> None:
    """A poll or post without a token is 400, with another identity's 403, with a bad one
    403; with the session's own token or another of its identity it is served."""
    client = await net.connect("polling", token)
    assert isinstance(client, Polling) and client.sid is not None
    device = (await login(http, "device"))["token"]
    for method, body in (("GET", None), ("POST", frame(["2"]))):
        for other, status, code in ((None, 400, 3), (device, 403, 4), ("garbage", 403, 4)):
            intruder = Polling(http, other)
            intruder.sid = client.sid
            answer = await intruder.request(method, body)
            assert (answer.code, answer.json["code"]) == (status, code), (other, answer)
    client.token = await http.user_token()
    await assert_served(client)


@pytest_twisted.ensureDeferred
async def test_a_websocket_keeps_nothing_of_the_http_channel_it_came_through(
        net: Clients, token: str) -> None:
    """Once a WebSocket has taken its connection over, the HTTP channel of its handshake
    (with its request) is gone: an idle session costs its WebSocket, not an HTTP exchange
    as well."""
    def channels() -> int:
        gc.collect()
        return sum(isinstance(o, DeadlineChannel) for o in gc.get_objects())

    before = channels()
    clients = [await net.connect("websocket", token) for _ in range(3)]
    for client in clients:
        await assert_served(client)
    assert channels() == before


@pytest_twisted.ensureDeferred
async def test_sids_are_not_logged(net: Clients, http: Http, token: str) -> None:
    """The access log shows sid=<redacted>, and log lines name sessions by a number."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        client = await net.connect("polling", token)
        assert isinstance(client, Polling) and client.sid is not None
        poll = await pending_poll(client)
        await client.send("2")
        assert await guard(poll) == ["3"]
        answer = await client.request("POST", "garbage")  # logged, and closes it
        assert answer.code == 400, answer
        websocket = await net.websocket(token)
        sid = parse_open(await websocket.next())["sid"]
        await websocket.send("x")  # logged, and closes it
        await websocket.wait_closed()
        for _ in range(100):  # the access log line comes after the answer
            if any("sid=<redacted>" in render(e) for e in events):
                break
            await pause()
    finally:
        globalLogPublisher.removeObserver(events.append)
    text = "\n".join(render(e) for e in events)
    assert "sid=<redacted>" in text and "closing session #" in text
    assert client.sid not in text and sid not in text


@pytest_twisted.ensureDeferred
async def test_a_polling_session_outlives_the_token_that_opened_it() -> None:
    """Polls with the token that opened the session are served after it expired, as a
    WebSocket session is kept; a new session needs a valid token."""
    async with running(token_lifetime=1) as (_, net):
        token = await net.http.user_token()
        client = await net.connect("polling", token)
        assert isinstance(client, Polling)
        for _ in range(int(HANG_GUARD / 0.1)):  # until the token has expired
            if (await net.http.call("GET", "/api/devices", token=token)).code == 401:
                break
            await pause(0.1)
        else:
            raise AssertionError("the token never expired")
        await assert_served(client)
        assert (await Polling(net.http, token).request("GET")).code == 401
