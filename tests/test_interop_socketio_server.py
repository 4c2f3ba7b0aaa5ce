"""
The SDK's own Socket.IO client against an unmodified Socket.IO 2.x server from
npm (tests/interop/server.js): connecting with the token in the query,
subscribing, receiving broadcasts, reconnecting and resubscribing after the
server restarts, and a refused token.  The SDK starts from a hand-made auth
payload, so no EXP REST server is involved.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol, connectionDone
from twisted.python.failure import Failure

from exp.twisted import ExpService

from ._processes import free_port
from .conftest import failure_texts

pytestmark = pytest.mark.slow

INTEROP = Path(__file__).parent / "interop"
TOKEN = "interop-token"
#: Generous: a slow machine must not fail a test, but a hang must end.
TIMEOUT = 30.0


def node_binary() -> str:
    """The node executable; fail, saying what to do, if it or socket.io is missing."""
    node = shutil.which("node")
    if node is None or not (INTEROP / "node_modules" / "socket.io").is_dir():
        pytest.fail("node or tests/interop/node_modules/socket.io is missing:"
                    " run `make test` (it runs `npm ci` in tests/interop)")
    return node


class NodeServer(ProcessProtocol):
    """tests/interop/server.js as a child process, its JSON lines as events."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.stderr = b""
        self.ended: Deferred[None] = Deferred()
        self.port = 0
        self._buffer = b""
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], Deferred[Any]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self._event(json.loads(line))

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def _event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        for waiter in list(self._waiters):
            if waiter[0](event):
                self._waiters.remove(waiter)
                waiter[1].callback(event)

    def processEnded(self, reason: Failure) -> None:
        waiters, self._waiters = self._waiters, []
        for _, d in waiters:
            d.errback(AssertionError(f"server.js ended ({reason.value}) before the event;"
                                     f" stderr: {self.stderr.decode(errors='replace')}"))
        self.ended.callback(None)

    def when(self, name: str, since: int = 0,
             check: Callable[[dict[str, Any]], bool] = lambda e: True) -> Deferred[Any]:
        """The first event C{name} (from index C{since} on) that passes C{check}."""
        def wanted(event: dict[str, Any]) -> bool:
            return event.get("event") == name and check(event)

        for event in self.events[since:]:
            if wanted(event):
                return succeed(event)
        d: Deferred[Any] = Deferred()
        self._waiters.append((wanted, d))
        return within(d, f"server.js event {name!r}")

    def count(self, name: str) -> int:
        return sum(1 for e in self.events if e.get("event") == name)

    def broadcast(self, channel: str, name: str, payload: Any) -> None:
        """Have the server emit a broadcast to the channel's subscribers."""
        assert self.transport is not None
        line = json.dumps({"channel": channel, "name": name, "payload": payload}) + "\n"
        self.transport.write(line.encode())

    def kill(self) -> Deferred[None]:
        if not self.ended.called and self.transport is not None:
            self.transport.signalProcess("KILL")
        return self.ended


def within(d: Deferred[Any], what: str, timeout: float = TIMEOUT) -> Deferred[Any]:
    """C{d}, failing with a clear message if it has not fired after C{timeout} s."""
    def timed_out(result: Any, timeout: float) -> Any:
        raise AssertionError(f"{what}: nothing after {timeout:g} s")

    return d.addTimeout(timeout, reactor, onTimeoutCancel=timed_out)


class Nodes:
    """Starts server.js processes and kills every one of them at the end."""

    def __init__(self) -> None:
        self.node = node_binary()
        self.started: list[NodeServer] = []

    async def start(self, port: int = 0, tokens: tuple[str, ...] = (TOKEN,)) -> NodeServer:
        server = NodeServer()
        args = [self.node, str(INTEROP / "server.js"), "--port", str(port)]
        for token in tokens:
            args += ["--token", token]
        reactor.spawnProcess(server, self.node, args, env=dict(os.environ),  # type: ignore
                             path=str(INTEROP))
        self.started.append(server)
        listening = await server.when("listening")
        server.port = int(listening["port"])
        return server

    async def stop(self) -> None:
        for server in self.started:
            await server.kill()


@pytest_twisted.async_yield_fixture()
async def nodes() -> AsyncIterator[Nodes]:
    running = Nodes()
    try:
        yield running
    finally:
        await running.stop()


class Attempts:
    """A retry policy with small delays that records the attempt numbers it is asked."""

    def __init__(self, delay: float = 0.1) -> None:
        self.delay = delay
        self.asked: list[int] = []

    def __call__(self, attempt: int) -> float:
        self.asked.append(attempt)
        return self.delay * min(attempt, 3)


def hand_made_auth(network_host: str, token: str = TOKEN) -> dict[str, Any]:
    """An auth payload nobody logged in for: the REST host is an unused loopback port."""
    return {
        "token": token,
        "expiration": int((time.time() + 7 * 86400) * 1000),
        "identity": {"type": "device", "uuid": "interop-device", "organization": "scala",
                     "paired": True},
        "api": {"host": f"http://127.0.0.1:{free_port()}"},
        "network": {"host": network_host},
        "restrictedToken": "unused",
    }


@pytest_twisted.async_yield_fixture()
async def services() -> AsyncIterator[list[ExpService]]:
    """ExpServices started by a test, stopped at its end."""
    started: list[ExpService] = []
    yield started
    for service in started:
        if service.running:
            await service.stopService()


#: The reactor's delayed calls before each service started.
_scheduled_before: dict[int, set[Any]] = {}


async def stop(service: ExpService) -> None:
    """Stop C{service}: nothing of it may be left scheduled in the reactor."""
    await within(service.stopService(), "stopService")
    left = set(reactor.getDelayedCalls()) - _scheduled_before.pop(id(service))  # type: ignore
    assert left == set()


def start_service(services: list[ExpService], network_host: str, token: str = TOKEN,
                  retry: Callable[[int], float] | None = None) -> ExpService:
    auth = hand_made_auth(network_host, token)
    service = ExpService(host=auth["api"]["host"], auth=auth, enable_network=True,
                         retry_policy=retry or Attempts())
    services.append(service)
    _scheduled_before[id(service)] = set(reactor.getDelayedCalls())  # type: ignore
    service.startService()
    return service


@pytest_twisted.ensureDeferred
async def test_sdk_connects_listens_and_receives(
        nodes: Nodes, services: list[ExpService], failures: list[Any]) -> None:
    """The SDK joins a socket.io 2 server, is confirmed by `subscribed` and gets a broadcast."""
    server = await nodes.start()
    service = start_service(services, server.url)
    await within(service.whenConnected(), "whenConnected")
    assert service.is_connected
    connection = await server.when("connection")
    assert connection["token"] == TOKEN
    assert connection["transport"] == "websocket"

    channel = service.get_channel("lobby")
    listener = await within(channel.listen("hello", timeout=TIMEOUT), "listen")
    subscribe = await server.when("subscribe")
    assert subscribe["channels"] == [channel.id]

    server.broadcast(channel.id, "other name", {"n": 0})
    server.broadcast(channel.id, "hello", {"n": 1, "text": "héllo"})
    broadcast = await listener.wait(TIMEOUT)
    assert broadcast is not None
    assert broadcast.name == "hello"
    assert broadcast.payload == {"n": 1, "text": "héllo"}
    assert broadcast.id is not None and broadcast.id.startswith("node-")
    assert broadcast.channel.name == "lobby"
    await stop(service)
    assert failure_texts(failures) == []


@pytest_twisted.ensureDeferred
async def test_sdk_subscribes_several_listeners_and_channels(
        nodes: Nodes, services: list[ExpService], failures: list[Any]) -> None:
    """Each channel is confirmed by the server; a broadcast reaches only its own channel."""
    server = await nodes.start()
    service = start_service(services, server.url)
    await within(service.whenConnected(), "whenConnected")
    lobby, kiosk = service.get_channel("lobby"), service.get_channel("kiosk", consumer=True)
    lobby_listener = await within(lobby.listen("hi", timeout=TIMEOUT), "listen lobby")
    kiosk_listener = await within(kiosk.listen("hi", timeout=TIMEOUT), "listen kiosk")
    # The server's log of the subscribe may reach the test after its answer reached the SDK.
    await server.when("subscribe", check=lambda e: kiosk.id in e["channels"])
    assert {c for e in server.events if e["event"] == "subscribe" for c in e["channels"]} == {
        lobby.id, kiosk.id}

    server.broadcast(kiosk.id, "hi", "to the kiosk")
    got = await kiosk_listener.wait(TIMEOUT)
    assert got is not None and got.payload == "to the kiosk"
    assert (await lobby_listener.wait(0)) is None
    await stop(service)
    assert failure_texts(failures) == []


@pytest_twisted.ensureDeferred
async def test_sdk_reconnects_and_resubscribes_after_a_restart(
        nodes: Nodes, services: list[ExpService], failures: list[Any]) -> None:
    """Killed and restarted on the same port, the server is rejoined and resubscribed."""
    first = await nodes.start()
    service = start_service(services, first.url, retry=Attempts(0.1))
    await within(service.whenConnected(), "whenConnected")
    channel = service.get_channel("lobby")
    listener = await within(channel.listen("hello", timeout=TIMEOUT), "listen")
    first.broadcast(channel.id, "hello", "before")
    before = await listener.wait(TIMEOUT)
    assert before is not None and before.payload == "before"

    offline: Deferred[None] = Deferred()
    online: list[bool] = []
    service.on("offline", lambda: offline.called or offline.callback(None))
    service.on("online", lambda: online.append(True))
    await first.kill()
    await within(offline, "the offline event")
    assert not service.is_connected

    second = await nodes.start(port=first.port)
    await second.when("connection")
    subscribe = await second.when("subscribe", check=lambda e: channel.id in e["channels"])
    assert subscribe["channels"] == [channel.id]
    await within(service.whenConnected(), "whenConnected after the restart")
    assert online

    second.broadcast(channel.id, "hello", "after")
    after = await listener.wait(TIMEOUT)
    assert after is not None and after.payload == "after"
    await stop(service)
    assert failure_texts(failures) == []


@pytest_twisted.ensureDeferred
async def test_refused_token_never_connects_and_keeps_retrying(
        nodes: Nodes, services: list[ExpService], failures: list[Any]) -> None:
    """A token the server refuses: whenConnected never fires, retries back off, no crash."""
    server = await nodes.start(tokens=("another-token",))
    retry = Attempts(0.05)
    service = start_service(services, server.url, token="refused-token", retry=retry)
    connected = service.whenConnected()
    await server.when("refused")
    for _ in range(5):
        await server.when("refused", since=len(server.events))
    assert not connected.called
    assert not service.is_connected
    assert server.count("connection") == 0
    assert all(e["token"] == "refused-token" for e in server.events if e["event"] == "refused")
    # the policy is asked for ever longer waits: no attempt counts as a connection
    assert len(retry.asked) >= 4
    assert retry.asked == sorted(retry.asked) and len(set(retry.asked)) == len(retry.asked)
    connected.addErrback(lambda f: None)
    await stop(service)
    assert failure_texts(failures) == []


class Silent(Protocol):
    """Accepts a connection and never answers (not even the WebSocket handshake)."""

    def connectionMade(self) -> None:
        self.factory.accepted.callback(None)  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.lost.callback(None)  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_stop_during_the_handshake_closes_the_socket(
        services: list[ExpService], failures: list[Any]) -> None:
    """Stopped while the network has not answered the handshake, the SDK closes its socket."""
    factory = Factory.forProtocol(Silent)
    factory.accepted, factory.lost = Deferred(), Deferred()  # type: ignore[attr-defined]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    try:
        service = start_service(services, f"http://127.0.0.1:{port.getHost().port}")
        connected = service.whenConnected()
        connected.addErrback(lambda f: None)
        await within(factory.accepted, "the connection")  # type: ignore[attr-defined]
        await stop(service)
        await within(factory.lost, "the socket closed")  # type: ignore[attr-defined]
    finally:
        await port.stopListening()
    assert failure_texts(failures) == []
