"""
Helpers of the end-to-end tests of L{exp.twisted.ExpService}: a local server
whose requests and connections a test can see, services that are stopped
at teardown, and bounded waits so that a bug fails a test instead of
hanging it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort

from exp.server import ExpServer, ServerConfig, SQLiteStorage, demo_seed_path, load_seed
from exp.server.testing import DEMO, RunningServer
from exp.twisted import ExpService

USER = {"username": DEMO["username"], "password": DEMO["password"],
        "organization": DEMO["organization"]}
DEVICE = {"uuid": DEMO["device_uuid"], "secret": DEMO["device_secret"]}
CONSUMER = {"uuid": DEMO["consumer_uuid"], "api_key": DEMO["api_key"]}

#: Generous bound on anything that should happen soon: only against hangs.
PATIENCE = 15.0


async def within(d: Awaitable[Any], seconds: float = PATIENCE) -> Any:
    """The result of C{d}, or a test failure if it takes more than C{seconds}."""
    deferred: Deferred[Any] = ensureDeferred(d) if not isinstance(d, Deferred) else d
    deferred.addTimeout(seconds, reactor)
    return await deferred


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def eventually(predicate: Callable[[], bool], what: str,
                     seconds: float = PATIENCE) -> None:
    """Wait until C{predicate()} holds; fail the test (saying C{what}) if it never does."""
    waited = 0.0
    while not predicate():
        if waited > seconds:
            raise AssertionError(f"not after {seconds:g} s: {what}")
        await sleep(0.02)
        waited += 0.02


def small_backoff(attempt: int) -> float:
    """A retry policy for tests: 0.1 s, 0.2 s, then 0.3 s between attempts."""
    return 0.1 * min(attempt, 3)


def start(services: list[ExpService], host: str, **options: Any) -> ExpService:
    options.setdefault("retry_policy", small_backoff)
    service = ExpService(host=host, **options)
    services.append(service)
    service.startService()
    return service


async def serve_on(port: int, directory: str) -> tuple[ExpServer, IListeningPort]:
    """A demo server with a new database in C{directory}, listening on C{port}."""
    server = ExpServer(SQLiteStorage(os.path.join(directory, "exp.sqlite3"), reactor),
                       load_seed(demo_seed_path()), ServerConfig(), reactor=reactor)
    await server.start()
    listening = await TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(
        server.factory())
    return server, listening


async def user_payload(url: str) -> dict[str, Any]:
    """An auth payload of the demo user, from a plain login."""
    from .conftest import Http

    return await Http(url).login(**USER)


class Watched:
    """
    A running server and a record of what reached it: every finished HTTP
    request as C{(method, path, status)} and every connection accepted.
    """

    def __init__(self, running: RunningServer) -> None:
        self.running = running
        self.requests: list[tuple[str, str, int]] = []
        self.protocols: list[Any] = []
        self.stopped = False
        self._watch(running.port)

    def _watch(self, port: IListeningPort) -> None:
        factory: Any = port.factory  # type: ignore[attr-defined]
        site = factory.site
        log, build = site.log, factory.buildProtocol

        def logged(request: Any) -> None:
            self.requests.append((request.method.decode("ascii"),
                                  request.path.decode("utf-8"), int(request.code)))
            log(request)

        def built(address: Any) -> Any:
            protocol = build(address)
            self.protocols.append(protocol)
            return protocol

        site.log = logged
        factory.buildProtocol = built

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def server(self) -> ExpServer:
        return self.running.server

    def count(self, method: str, path: str, status: int | None = None) -> int:
        """How many C{method} requests of C{path} (answered C{status}) arrived."""
        return sum(1 for m, p, s in self.requests
                   if m == method and p == path and (status is None or s == status))

    def logins(self) -> int:
        return self.count("POST", "/api/auth/login")

    def connections(self) -> list[Any]:
        """The transports of the connections the server accepted that are still open."""
        transports = [getattr(getattr(p, "_channel", p), "transport", None)
                      for p in self.protocols]
        return [t for t in transports if t is not None and t.connected]

    def drop_connections(self) -> None:
        """Abort every connection the server accepted (as a crash would)."""
        for transport in self.connections():
            transport.abortConnection()

    async def stop(self) -> None:
        """Stop listening, close every connection and the server."""
        if self.stopped:
            return
        self.stopped = True
        await self.running.port.stopListening()
        self.drop_connections()
        await self.running.server.stop()

    async def close(self) -> None:
        """Stop (if still running) and remove the server's files."""
        await self.stop()
        shutil.rmtree(self.running.directory, ignore_errors=True)

    async def restart_fresh(self) -> None:
        """
        Replace the server with a new one on the same port with a new
        database, hence a new signing key: every token it issued before
        is now refused with 401.
        """
        port = self.running.port.getHost().port
        await self.stop()
        directory = tempfile.mkdtemp(prefix="exp-server-", dir=self.running.directory)
        server, listening = await serve_on(port, directory)
        self.running.server = server
        self.running.port = listening
        self.stopped = False
        self._watch(listening)
        self.requests.clear()


class Services:
    """Starts L{ExpService}s against a server; stops them all at teardown."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.started: list[ExpService] = []

    def start(self, **options: Any) -> ExpService:
        """A started service (not yet authenticated) with C{options}."""
        options.setdefault("host", self.url)
        service = ExpService(**options)
        service.startService()
        self.started.append(service)
        return service

    async def authenticated(self, **options: Any) -> ExpService:
        """A started service once it is authenticated."""
        service = self.start(**options)
        await within(service.whenAuthenticated())
        return service

    async def user(self, **options: Any) -> ExpService:
        return await self.authenticated(**USER, **options)

    async def device(self, **options: Any) -> ExpService:
        return await self.authenticated(**DEVICE, **options)

    async def consumer(self, **options: Any) -> ExpService:
        return await self.authenticated(**CONSUMER, **options)

    async def stop_all(self) -> None:
        for service in self.started:
            if service.running:
                await within(service.stopService())
