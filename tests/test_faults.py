"""
The SDK under faults, over real sockets: the server restarting under active
listeners, a network path that silently stops delivering, tokens expiring
during a long run, and a server that answers 503 or nothing at all.  (A
kill -9 of the server is tests/test_persistence.py's.)
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from exp.errors import ApiError, NetworkError
from exp.protocol import device_token
from exp.server.testing import DEMO, RunningServer, start_server
from exp.twisted import ExpService, Listener

from ._sdk import small_backoff, start
from .conftest import Http, failure_texts

#: Generous: a slow machine must not fail a test, but a hang must end.
TIMEOUT = 30.0
DEVICE = {"uuid": DEMO["device_uuid"], "secret": DEMO["device_secret"]}


# -- helpers ---------------------------------------------------------------------------


def within(d: Deferred[Any], what: str, timeout: float = TIMEOUT) -> Deferred[Any]:
    """C{d}, failing with a clear message if it has not fired after C{timeout} s."""
    def timed_out(result: Any, timeout: float) -> Any:
        raise AssertionError(f"{what}: nothing after {timeout:g} s")

    return d.addTimeout(timeout, reactor, onTimeoutCancel=timed_out)


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]


async def until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll C{check} until it is true; fail saying C{what} after C{timeout} s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout:g} s")
        await sleep(0.02)


@pytest_twisted.async_yield_fixture(autouse=True)
async def clean_reactor() -> AsyncIterator[None]:
    """Each test leaves no timer and no socket behind in the reactor (once closes settle)."""
    def scheduled() -> set[Any]:
        return (set(reactor.getDelayedCalls()) | set(reactor.getReaders())  # type: ignore
                | set(reactor.getWriters()))  # type: ignore[attr-defined]

    before = scheduled()
    yield
    deadline = time.monotonic() + 5
    while scheduled() - before and time.monotonic() < deadline:
        await sleep(0.05)
    assert scheduled() - before == set()


class EventLog:
    """The events of an ExpService in order, and waits for the n-th of a kind."""

    def __init__(self, service: ExpService) -> None:
        self.seen: list[str] = []
        self.updates: list[dict[str, Any]] = []
        self._waiters: list[tuple[str, int, Deferred[None]]] = []
        for name in ("online", "offline", "update", "error"):
            service.on(name, partial(self._event, name))

    def _event(self, name: str, *args: Any) -> None:
        self.seen.append(name)
        if name == "update":
            self.updates.append(args[0])
        for waiter in list(self._waiters):
            if waiter[0] == name and self.count(name) >= waiter[1]:
                self._waiters.remove(waiter)
                waiter[2].callback(None)

    def count(self, name: str) -> int:
        return self.seen.count(name)

    def when(self, name: str, count: int) -> Deferred[None]:
        """Fires once C{name} has been seen C{count} times in all."""
        d: Deferred[None] = Deferred()
        if self.count(name) >= count:
            d.callback(None)
        else:
            self._waiters.append((name, count, d))
        return within(d, f"event {name!r} number {count}")


@pytest_twisted.async_yield_fixture()
async def services() -> AsyncIterator[list[ExpService]]:
    """ExpServices a test starts; stopped at its end if the test did not get to it."""
    started: list[ExpService] = []
    yield started
    for service in started:
        if service.running:
            await service.stopService()


def subscribed_on(server: RunningServer, channel_id: str) -> bool:
    """Whether a network session of C{server} is subscribed to C{channel_id}."""
    return any(channel_id in session.channels
               for session in server.server.network.sessions.values())


async def received(listener: Listener, what: str) -> Any:
    """The payload of the next broadcast C{listener} gets."""
    broadcast = await within(listener.wait(TIMEOUT), what)
    assert broadcast is not None, what
    return broadcast.payload


# -- a loopback proxy whose path can go silent ------------------------------------------


class _Side(Protocol):
    """One end of a proxied connection."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.gone: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.link.made(self)

    def dataReceived(self, data: bytes) -> None:
        self.link.received(self, data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.link.lost(self)
        self.gone.callback(None)


class _Link:
    """
    A client's connection to the proxy and the proxy's to the target.  While
    the path is down, bytes and closes are held (as TCP retransmits them),
    and delivered when it is back.
    """

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.client = _Side(self)
        self.server: _Side | None = None
        self.connecting: Deferred[Any] | None = None
        self.to_server: list[bytes] = []
        self.to_client: list[bytes] = []
        self.client_gone = self.server_gone = False

    def made(self, side: _Side) -> None:
        if side is self.client:
            self.proxy.links.add(self)
            host, port = "127.0.0.1", self.proxy.target
            self.server = _Side(self)
            self.connecting = connectProtocol(TCP4ClientEndpoint(reactor, host, port),
                                              self.server)
            self.connecting.addErrback(lambda f: self.abort())
        else:
            self.connecting = None
            self.pump()

    def received(self, side: _Side, data: bytes) -> None:
        (self.to_server if side is self.client else self.to_client).append(data)
        self.pump()

    def lost(self, side: _Side) -> None:
        if side is self.client:
            self.client_gone = True
        else:
            self.server_gone = True
        if self.client_gone and (self.server_gone or self.server is None
                                 or self.server.transport is None):
            self.proxy.links.discard(self)
        self.pump()

    def pump(self) -> None:
        """Deliver what is held, unless the path is down."""
        if self.proxy.blackholed:
            return
        server = self.server.transport if self.server is not None else None
        client = self.client.transport
        if server is not None and not self.server_gone:
            for data in self.to_server:
                server.write(data)
            self.to_server.clear()
            if self.client_gone:
                server.loseConnection()
        if client is not None and not self.client_gone:
            for data in self.to_client:
                client.write(data)
            self.to_client.clear()
            if self.server_gone:
                client.loseConnection()

    def abort(self) -> None:
        connecting, self.connecting = self.connecting, None
        if connecting is not None:
            connecting.cancel()
        for side in (self.client, self.server):
            if side is not None and side.transport is not None:
                side.transport.abortConnection()  # type: ignore[attr-defined]

    def gone(self) -> list[Deferred[None]]:
        sides = [self.client] + ([self.server] if self.server is not None else [])
        return [side.gone for side in sides
                if side.transport is not None and not side.gone.called]


class Proxy:
    """
    A TCP proxy on a loopback port forwarding to C{target} (a loopback port),
    whose path can go silent (L{blackhole}: nothing is delivered either way,
    nothing is closed) and come back (L{restore}).
    """

    def __init__(self, target: int = 0) -> None:
        self.target = target
        self.blackholed = False
        self.links: set[_Link] = set()
        factory = Factory()
        factory.buildProtocol = lambda addr: _Link(self).client  # type: ignore[method-assign]
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}"

    def blackhole(self) -> None:
        self.blackholed = True

    def restore(self) -> None:
        self.blackholed = False
        for link in list(self.links):
            link.pump()

    async def drop(self) -> None:
        """Abort every proxied connection (both ends) and wait until they are closed."""
        links = list(self.links)
        waiting = [d for link in links for d in link.gone()]
        for link in links:
            link.abort()
        self.links.clear()
        await within(gatherResults(waiting), "the proxied connections closed")

    async def retarget(self, target: int) -> None:
        """Forward new connections to C{target}; the current ones are dropped."""
        self.target = target
        await self.drop()

    async def close(self) -> None:
        await self.port.stopListening()
        await self.drop()


@pytest_twisted.async_yield_fixture()
async def proxy() -> AsyncIterator[Proxy]:
    running = Proxy()
    try:
        yield running
    finally:
        await running.close()


# -- the server going away ----------------------------------------------------------------


def drop_connections(port: int) -> None:
    """Abort the server side of every connection accepted on C{port}, as a process exit would."""
    selectables = set(reactor.getReaders()) | set(reactor.getWriters())  # type: ignore
    for selectable in selectables:
        if isinstance(selectable, tcp.Server) and selectable.getHost().port == port:
            selectable.abortConnection()


@pytest_twisted.ensureDeferred
async def test_listeners_survive_a_server_restart(
        tmp_path: Path, services: list[ExpService], failures: list[Any]) -> None:
    """After a restart on the same port, the SDK rejoins and its listeners receive again."""
    first = await start_server(directory=str(tmp_path))
    port = first.port.getHost().port
    running = [first]
    try:
        service = start(services, first.url, **DEVICE, request_timeout=5)
        await within(service.whenConnected(), "whenConnected")
        events = EventLog(service)
        channel = service.get_channel("lobby")
        waiting = await within(channel.listen("hello", timeout=TIMEOUT), "listen")
        called: list[Any] = []
        calling = await within(
            channel.listen("hello", callback=lambda b: called.append(b.payload),
                           timeout=TIMEOUT), "listen with a callback")
        await within(channel.broadcast("hello", "before"), "broadcast before")
        assert await received(waiting, "the broadcast before") == "before"
        await until(lambda: called == ["before"], "the callback before")

        running.remove(first)
        await first.stop()
        drop_connections(port)
        await events.when("offline", 1)
        assert not service.is_connected
        await sleep(0.5)  # a few reconnection attempts meet a closed port
        second = await start_server(directory=str(tmp_path), db_path=first.db_path, port=port)
        running.append(second)
        await events.when("online", 1)
        await until(lambda: subscribed_on(second, channel.id), "resubscribed")

        await within(channel.broadcast("hello", "after"), "broadcast after")
        assert await received(waiting, "the broadcast after") == "after"
        await until(lambda: called == ["before", "after"], "the callback after")
        await sleep(0.3)  # room for a stray second event
        assert (events.count("offline"), events.count("online")) == (1, 1), events.seen
        assert events.count("error") == 0
        assert not calling.cancelled and not waiting.cancelled
        await within(service.stopService(), "stopService")
    finally:
        for server in running:
            await server.stop()
    assert failure_texts(failures) == []


@pytest_twisted.ensureDeferred
async def test_stop_called_back_from_connecting_closes_the_socket(
        server: RunningServer, services: list[ExpService], failures: list[Any]) -> None:
    """stopService called from whenConnected or an online handler finishes and closes the socket."""
    for hook in ("whenConnected", "online"):
        service = ExpService(host=server.url, **DEVICE, retry_policy=small_backoff)
        services.append(service)
        stopped: Deferred[None] = Deferred()

        def stop(*_: Any, service: ExpService = service, stopped: Deferred[None] = stopped
                 ) -> None:
            if not stopped.called:
                service.stopService().chainDeferred(stopped)

        if hook == "online":
            service.on("online", stop)
        else:
            service.whenConnected().addCallback(stop)
        service.startService()
        await within(stopped, f"stopService called from {hook}")
        await until(lambda: not server.server.network.sessions, f"the session closed ({hook})")
    assert failure_texts(failures) == []


# -- a path that silently stops delivering ----------------------------------------------


@pytest_twisted.ensureDeferred
async def test_silent_path_is_noticed_by_the_heartbeat_and_rejoined(
        proxy: Proxy, services: list[ExpService], failures: list[Any]) -> None:
    """A path that goes silent is declared dead by the ping timeout and rejoined once it is back."""
    server = await start_server(public_url=proxy.url, ping_interval=0.5, ping_timeout=0.5)
    proxy.target = server.port.getHost().port
    try:
        service = start(services, proxy.url, **DEVICE, request_timeout=5)
        auth = await within(service.whenAuthenticated(), "whenAuthenticated")
        assert auth["network"]["host"] == proxy.url
        await within(service.whenConnected(), "whenConnected")
        events = EventLog(service)
        channel = service.get_channel("lobby")
        listener = await within(channel.listen("hello", timeout=TIMEOUT), "listen")
        await within(channel.broadcast("hello", "before"), "broadcast before")
        assert await received(listener, "the broadcast before") == "before"

        proxy.blackhole()
        await events.when("offline", 1)  # no pong within the ping timeout
        assert not service.is_connected
        await sleep(0.5)  # the SDK's new connection is stuck behind the silent path
        assert not service.is_connected
        proxy.restore()
        await events.when("online", 1)
        await until(lambda: subscribed_on(server, channel.id), "resubscribed")
        await within(channel.broadcast("hello", "after"), "broadcast after")
        assert await received(listener, "the broadcast after") == "after"
        assert events.count("offline") == 1
        await within(service.stopService(), "stopService")
    finally:
        await proxy.drop()
        await server.stop()
    assert failure_texts(failures) == []


# -- tokens expiring during a long run -------------------------------------------------


def handshake_tokens(server: RunningServer) -> list[str]:
    """The token of each network handshake C{server} gets from now on."""
    network = server.server.network
    seen: list[str] = []
    authenticate = network.authenticate

    def recording(params: dict[str, list[str]]) -> Any:
        seen.append((params.get("token") or [""])[-1])
        return authenticate(params)

    network.authenticate = recording  # type: ignore[method-assign]
    return seen


@pytest_twisted.ensureDeferred
async def test_expiring_tokens_are_refreshed_without_losing_calls_or_broadcasts(
        services: list[ExpService], failures: list[Any]) -> None:
    """With 3 s tokens, 8 s of calls and broadcasts all succeed; a rejoin uses a fresh token."""
    server = await start_server(token_lifetime=3)
    handshakes = handshake_tokens(server)
    try:
        service = start(services, server.url, **DEVICE, request_timeout=5)
        await within(service.whenConnected(), "whenConnected")
        events = EventLog(service)
        channel = service.get_channel("lobby")
        listener = await within(channel.listen("tick", timeout=TIMEOUT), "listen")
        assert handshakes == [service.auth["token"]]

        sent = 0
        got: list[Any] = []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            devices = await within(service.find_devices(), "find_devices")
            assert devices.total >= 1
            await within(service.create_data("tick", "faults", sent), "create_data")
            await within(channel.broadcast("tick", sent), f"broadcast {sent}")
            got.append(await received(listener, f"broadcast {sent}"))
            sent += 1
            await sleep(0.1)
        assert got == list(range(sent))
        tokens = [update["token"] for update in events.updates]
        assert len(tokens) >= 3 and len(set(tokens)) == len(tokens)
        assert handshakes[0] not in tokens
        # the session outlived its token: no rejoin, nothing missed
        assert events.seen == ["update"] * len(tokens)

        # the server drops the session: the SDK rejoins with a fresh token, not the first one
        server.server.network.close_all()
        await events.when("online", 1)
        assert len(handshakes) == 2 and handshakes[1] in tokens, handshakes
        await until(lambda: subscribed_on(server, channel.id), "resubscribed")
        await within(channel.broadcast("tick", "after"), "broadcast after")
        assert await received(listener, "the broadcast after the rejoin") == "after"
        assert events.count("offline") == 1
        assert events.count("error") == 0
        await within(service.stopService(), "stopService")
    finally:
        await server.stop()
    assert failure_texts(failures) == []


# -- a server answering 503, or nothing ----------------------------------------------------


class Unavailable(Resource):
    """Answers every request 503 with an EXP error body."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setResponseCode(503)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"code": "server.unavailable",
                           "message": "down for maintenance"}).encode()


class Silent(Protocol):
    """Accepts a connection and never answers."""


@pytest_twisted.async_yield_fixture()
async def broken() -> AsyncIterator[tuple[int, int]]:
    """The ports of a server answering 503 to everything and of one answering nothing."""
    unavailable = reactor.listenTCP(0, Site(Unavailable()),  # type: ignore[attr-defined]
                                    interface="127.0.0.1")
    silent = reactor.listenTCP(0, Factory.forProtocol(Silent),  # type: ignore[attr-defined]
                               interface="127.0.0.1")
    try:
        yield unavailable.getHost().port, silent.getHost().port
    finally:
        await unavailable.stopListening()
        await silent.stopListening()


async def fails(d: Deferred[Any], what: str) -> Exception:
    """The exception C{d} fails with (within the guard)."""
    try:
        result = await within(d, what)
    except (ApiError, NetworkError) as e:
        return e
    raise AssertionError(f"{what}: answered {result!r} instead of failing")


@pytest_twisted.ensureDeferred
async def test_calls_fail_clearly_on_503_and_silence_then_recover(
        proxy: Proxy, broken: tuple[int, int], services: list[ExpService],
        failures: list[Any]) -> None:
    """With a valid token, calls fail with ApiError 503 or NetworkError, then work again."""
    unavailable, silent = broken
    server = await start_server(public_url=proxy.url)
    real = server.port.getHost().port
    proxy.target = real
    try:
        auth = await Http(server.url).login(
            token=device_token(DEMO["device_uuid"], DEMO["device_secret"]))
        assert auth["api"]["host"] == proxy.url
        service = start(services, proxy.url, auth=auth, enable_network=False,
                        request_timeout=1)
        assert (await within(service.find_devices(), "find_devices")).total >= 1

        await proxy.retarget(unavailable)
        error = await fails(service.find_devices(), "find_devices on 503")
        assert isinstance(error, ApiError)
        assert (error.status_code, error.code) == (503, "server.unavailable")

        await proxy.retarget(silent)
        error = await fails(service.find_devices(), "find_devices on silence")
        assert isinstance(error, NetworkError)

        await proxy.retarget(real)
        assert (await within(service.find_devices(), "find_devices again")).total >= 1
        await within(service.stopService(), "stopService")
    finally:
        await proxy.drop()
        await server.stop()
    assert failure_texts(failures) == []


@pytest_twisted.ensureDeferred
async def test_login_against_503_and_silence_fails_calls_then_recovers(
        proxy: Proxy, broken: tuple[int, int], services: list[ExpService],
        failures: list[Any]) -> None:
    """While the login meets 503 or silence, calls fail in bounded time; it then logs in."""
    unavailable, silent = broken
    server = await start_server(public_url=proxy.url)
    real = server.port.getHost().port
    try:
        for target, kind in ((unavailable, ApiError), (silent, NetworkError)):
            await proxy.retarget(target)
            service = start(services, proxy.url, **DEVICE, request_timeout=1)
            events = EventLog(service)
            authenticated = service.whenAuthenticated()
            error = await fails(service.get_current_device(), "a call before the login")
            assert isinstance(error, kind), error
            if isinstance(error, ApiError):
                assert error.status_code == 503
            assert not authenticated.called

            await proxy.retarget(real)
            await within(authenticated, "whenAuthenticated once the server is back")
            device = await within(service.get_current_device(), "a call after the login")
            assert device is not None and device.uuid == DEMO["device_uuid"]
            await within(service.whenConnected(), "whenConnected")
            assert events.count("error") == 0
            await within(service.stopService(), "stopService")
    finally:
        await proxy.drop()
        await server.stop()
    assert failure_texts(failures) == []
