"""
The network of PROTOCOL.md A5 against an unmodified Socket.IO 2.x client:
socket.io-client from npm (pinned in tests/interop/package.json), driven by
tests/interop/client.js in node, which prints what happens as JSON lines.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.python.failure import Failure

from exp.protocol import consumer_app_token, device_token, encode_channel
from exp.server.testing import DEMO

from .conftest import Http

INTEROP = Path(__file__).parent / "interop"
CLIENT = INTEROP / "client.js"

#: Seconds to wait for any one thing the node client does; generous, only against hangs.
WAIT = 30.0
#: Milliseconds a broadcast collects responses; the client answers within a few.
HOLD = 5000


def _installed_client() -> str:
    """The node executable, once node and the pinned socket.io-client are there."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; these tests need node and npm: install them, "
                    "then run `make test`")
    wanted = json.loads((INTEROP / "package.json").read_text())["dependencies"]
    for name, version in wanted.items():
        installed = INTEROP / "node_modules" / name / "package.json"
        if not installed.exists():
            pytest.fail(f"{name} is not installed in tests/interop/node_modules: run `make test`")
        if json.loads(installed.read_text())["version"] != version:
            pytest.fail(f"tests/interop/node_modules has another {name} than {version}: "
                        "run `make test`")
    return node


class NodeClient(protocol.ProcessProtocol):
    """A running client.js: its JSON-line events, its stderr and its end."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.stderr = b""
        self.exit_code: int | None = None
        self.running = True
        self._ended: list[defer.Deferred[None]] = []
        self._buffer = b""
        self._waiters: list[tuple[str, defer.Deferred[dict[str, Any]]]] = []

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "garbage", "line": line.decode("utf-8", "replace")}
            self.events.append(event)
            for waiter in [w for w in self._waiters if w[0] == event["event"]]:
                self._waiters.remove(waiter)
                waiter[1].callback(event)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        self.exit_code = getattr(reason.value, "exitCode", None)
        self.running = False
        waiters, self._waiters = self._waiters, []
        for name, waiter in waiters:
            waiter.errback(AssertionError(f"the client ended before {name!r}\n{self}"))
        ended, self._ended = self._ended, []
        for d in ended:
            d.callback(None)

    def ended(self) -> defer.Deferred[None]:
        """A Deferred that fires once the process has ended."""
        d: defer.Deferred[None] = defer.Deferred()
        if self.running:
            self._ended.append(d)
        else:
            d.callback(None)
        return d

    def names(self) -> list[str]:
        return [e["event"] for e in self.events]

    def __str__(self) -> str:
        lines = "\n".join(json.dumps(e) for e in self.events)
        stderr = self.stderr.decode("utf-8", "replace")
        return f"events:\n{lines}\nexit code: {self.exit_code}\nstderr:\n{stderr}"

    async def event(self, name: str) -> dict[str, Any]:
        """The first event called C{name}, waiting up to L{WAIT} seconds for it."""
        for event in self.events:
            if event["event"] == name:
                return event
        if not self.running:
            raise AssertionError(f"the client ended without {name!r}\n{self}")
        waiter: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._waiters.append((name, waiter))
        waiter.addTimeout(WAIT, reactor)
        try:
            return await waiter
        except defer.TimeoutError:
            self._waiters = [w for w in self._waiters if w[1] is not waiter]
            raise AssertionError(f"no {name!r} within {WAIT} s\n{self}") from None

    async def exit(self) -> dict[str, Any]:
        """The client's own exit event, once the process has ended."""
        event = await self.event("exit")
        try:
            await self.ended().addTimeout(WAIT, reactor)
        except defer.TimeoutError:
            raise AssertionError(f"the client did not end within {WAIT} s\n{self}") from None
        return event


Spawn = Callable[..., NodeClient]


@pytest_twisted.async_yield_fixture()
async def spawn() -> AsyncIterator[Spawn]:
    node = _installed_client()
    clients: list[NodeClient] = []

    def start(url: str, token: str, channels: Sequence[str] = (),
              transports: str | None = None, broadcasts: int = 1) -> NodeClient:
        args = [node, str(CLIENT), "--url", url, "--token", token,
                "--broadcasts", str(broadcasts), "--lifetime", str(int(WAIT * 2000))]
        for channel in channels:
            args += ["--channel", channel]
        if transports is not None:
            args += ["--transports", transports]
        client = NodeClient()
        reactor.spawnProcess(client, node, args, env=dict(os.environ), path=str(INTEROP))
        clients.append(client)
        return client

    yield start
    for client in clients:
        if client.running and client.transport is not None:
            client.transport.signalProcess("KILL")
            await client.ended()


async def broadcast_and_answer(http: Http, token: str, client: NodeClient, channel: str,
                               payload: Any) -> list[Any]:
    """Broadcast over REST while the client answers; the broadcaster's answer."""
    call = defer.ensureDeferred(http.call(
        "POST", "/api/networks/current/broadcasts",
        {"channel": channel, "name": "interop", "payload": payload},
        token=token, params={"timeout": str(HOLD)}))
    message = (await client.event("broadcast"))["message"]
    assert message["channel"] == channel
    assert message["name"] == "interop"
    assert message["payload"] == payload
    assert isinstance(message["id"], str) and message["id"]
    responded = await client.event("responded")
    assert (responded["id"], responded["status"]) == (message["id"], 200), client
    answer = await call
    assert answer.code == 200, answer
    return list(answer.json)


async def upgraded_session(client: NodeClient, channels: list[str]) -> None:
    """The client connected over polling, subscribed and upgraded to WebSocket."""
    assert (await client.event("connect"))["transport"] == "polling", client
    assert (await client.event("subscribed"))["channels"] == channels, client
    assert (await client.event("upgrade"))["transport"] == "websocket", client


async def finished(client: NodeClient) -> None:
    """The client answered what it was told to and left by itself."""
    assert (await client.exit())["reason"] == "done", client
    assert client.exit_code == 0, client
    assert "error" not in client.names() and "connect_error" not in client.names(), client


async def login(http: Http, identity: str) -> dict[str, Any]:
    if identity == "device":
        return await http.login(token=device_token(DEMO["device_uuid"], DEMO["device_secret"]))
    if identity == "consumerApp":
        return await http.login(token=consumer_app_token(DEMO["consumer_uuid"], DEMO["api_key"]))
    return await http.login(username=DEMO["username"], password=DEMO["password"],
                            organization=DEMO["organization"])


@pytest_twisted.ensureDeferred
async def test_polling_client_upgrades_and_answers_a_broadcast(
    http: Http, token: str, spawn: Spawn
) -> None:
    """A default client polls, upgrades to WebSocket and answers a REST broadcast there."""
    auth = await login(http, "user")
    channel = encode_channel(auth["identity"]["organization"], "interop-default")
    client = spawn(auth["network"]["host"], auth["token"], [channel])
    await upgraded_session(client, [channel])
    payload = {"text": "h\u00e9llo \U0001f44b", "n": [1, 2.5, None, True]}
    answers = await broadcast_and_answer(http, token, client, channel, payload)
    assert answers == [{"echo": payload, "transport": "websocket"}]
    assert (await client.event("broadcast"))["transport"] == "websocket"
    await finished(client)


@pytest_twisted.ensureDeferred
async def test_websocket_only_client_answers_a_broadcast(
    http: Http, token: str, spawn: Spawn
) -> None:
    """A client with transports ['websocket'] connects straight over WebSocket and answers."""
    auth = await login(http, "user")
    channel = encode_channel(auth["identity"]["organization"], "interop-websocket")
    client = spawn(auth["network"]["host"], auth["token"], [channel], transports="websocket")
    assert (await client.event("connect"))["transport"] == "websocket", client
    assert (await client.event("subscribed"))["channels"] == [channel], client
    payload = {"text": "h\u00e9llo \U0001f44b"}
    answers = await broadcast_and_answer(http, token, client, channel, payload)
    assert answers == [{"echo": payload, "transport": "websocket"}]
    await finished(client)
    assert "upgrade" not in client.names()


@pytest_twisted.ensureDeferred
async def test_polling_only_client_answers_a_broadcast(
    http: Http, token: str, spawn: Spawn
) -> None:
    """A client with transports ['polling'] gets non-ASCII broadcasts intact over polling."""
    auth = await login(http, "user")
    channel = encode_channel(auth["identity"]["organization"], "interop-polling")
    client = spawn(auth["network"]["host"], auth["token"], [channel], transports="polling")
    assert (await client.event("connect"))["transport"] == "polling", client
    assert (await client.event("subscribed"))["channels"] == [channel], client
    payload = {"text": "h\u00e9llo \U0001f44b \u2603 " * 50}
    answers = await broadcast_and_answer(http, token, client, channel, payload)
    assert answers == [{"echo": payload, "transport": "polling"}]
    await finished(client)
    assert "upgrade" not in client.names()


@pytest.mark.parametrize("transports", [None, "websocket"])
@pytest_twisted.ensureDeferred
async def test_invalid_token_is_refused(
    http: Http, spawn: Spawn, transports: str | None
) -> None:
    """A garbage or restricted token gets connect_error and never a connect."""
    auth = await login(http, "user")
    for bad in ("garbage", auth["restrictedToken"]):
        client = spawn(auth["network"]["host"], bad, transports=transports)
        assert (await client.exit())["reason"] == "connect_error", client
        assert "connect" not in client.names(), client
        assert "subscribed" not in client.names(), client


@pytest.mark.parametrize("transports", [None, "websocket"])
@pytest_twisted.ensureDeferred
async def test_device_answers_a_broadcast(
    http: Http, token: str, spawn: Spawn, transports: str | None
) -> None:
    """A device identity subscribes and answers a broadcast like a user does."""
    auth = await login(http, "device")
    assert auth["identity"]["type"] == "device"
    org = auth["identity"]["organization"]
    # A system channel other than its own: on its own, the server announces its status.
    channels = [encode_channel(org, "interop-device"),
                encode_channel(org, "demo-location", system=True)]
    client = spawn(auth["network"]["host"], auth["token"], channels, transports=transports)
    if transports is None:
        await upgraded_session(client, channels)
    else:
        assert (await client.event("subscribed"))["channels"] == channels, client
    answers = await broadcast_and_answer(http, token, client, channels[0], {"to": "device"})
    assert answers == [{"echo": {"to": "device"}, "transport": "websocket"}]
    await finished(client)


@pytest.mark.parametrize("transports", [None, "websocket"])
@pytest_twisted.ensureDeferred
async def test_consumer_app_answers_on_a_consumer_channel(
    http: Http, token: str, spawn: Spawn, transports: str | None
) -> None:
    """A consumer app gets only consumer channels and answers a broadcast on one."""
    auth = await login(http, "consumerApp")
    assert auth["identity"]["type"] == "consumerApp"
    org = auth["identity"]["organization"]
    consumer = encode_channel(org, "interop-consumer", consumer=True)
    plain = encode_channel(org, "interop-consumer")
    client = spawn(auth["network"]["host"], auth["token"], [consumer, plain],
                   transports=transports)
    if transports is None:
        await upgraded_session(client, [consumer])
    else:
        assert (await client.event("subscribed"))["channels"] == [consumer], client
    answers = await broadcast_and_answer(http, token, client, consumer, {"to": "app"})
    assert answers == [{"echo": {"to": "app"}, "transport": "websocket"}]
    await finished(client)
