"""
Shared fixtures: a real local server on a loopback port with a temporary
SQLite database, and a small HTTP client for driving it with treq.
"""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.web.client import Agent, HTTPConnectionPool
from zope.interface import provider

from exp.server.testing import DEMO, RunningServer, start_server

from ._services import Engines


class Answer:
    """A decoded HTTP answer."""

    def __init__(self, code: int, headers: Any, body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def __repr__(self) -> str:
        return f"<Answer {self.code} {self.body[:200]!r}>"


class Http:
    """Plain HTTP calls to a server, as any EXP client would make them."""

    def __init__(self, url: str) -> None:
        from twisted.internet import reactor

        self.url = url
        self._pool = HTTPConnectionPool(reactor, persistent=False)
        self._client = treq.client.HTTPClient(Agent(reactor, pool=self._pool))

    async def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                   params: Any = None, raw: bytes | None = None,
                   headers: dict[str, str] | None = None) -> Answer:
        all_headers = {"Content-Type": "application/json"}
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        all_headers.update(headers or {})
        data = raw if raw is not None else (
            None if body is None else json.dumps(body).encode("utf-8"))
        response = await self._client.request(
            method, self.url + path, data=data, params=params,
            headers={k: [v] for k, v in all_headers.items()},
        )
        content = await response.content()
        return Answer(response.code, response.headers, content)

    async def login(self, **body: Any) -> dict[str, Any]:
        answer = await self.call("POST", "/api/auth/login", body)
        assert answer.code == 200, answer
        return dict(answer.json)

    async def user_token(self) -> str:
        auth = await self.login(username=DEMO["username"], password=DEMO["password"],
                                organization=DEMO["organization"])
        return str(auth["token"])


@pytest.fixture(scope="session")
def engines() -> Iterator[Engines]:
    """PostgreSQL and Redis servers, started when a test first needs them."""
    started = Engines()
    yield started
    started.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, engines: Engines) -> dict[str, Any]:
    """
    How the C{server} and C{site} fixtures run: one process on SQLite, or a
    process of a deployment on PostgreSQL and Redis (a new database each).
    """
    if request.param == "sqlite":
        return {}
    return {"db_path": engines.postgresql().database(), "redis": engines.redis().url}


@pytest.fixture
def server_config() -> dict[str, Any]:
    """More L{ServerConfig} fields for the C{server} and C{site} fixtures (a module may
    override it, e.g. to fetch feeds from loopback)."""
    return {}


@pytest_twisted.async_yield_fixture()
async def server(backend: dict[str, Any],
                 server_config: dict[str, Any]) -> AsyncIterator[RunningServer]:
    running = await start_server(**backend, **server_config)
    yield running
    await running.stop()


@pytest_twisted.async_yield_fixture()
async def http(server: RunningServer) -> AsyncIterator[Http]:
    yield Http(server.url)


@pytest_twisted.async_yield_fixture()
async def token(http: Http) -> AsyncIterator[str]:
    yield await http.user_token()


@pytest_twisted.async_yield_fixture()
async def net(server: RunningServer) -> AsyncIterator[Any]:
    """Engine.IO clients of C{server} (tests/_eio.py); their WebSockets closed at teardown."""
    from ._eio import Clients

    clients = Clients(server.url)
    yield clients
    await clients.close()


@pytest_twisted.async_yield_fixture()
async def site(backend: dict[str, Any], server_config: dict[str, Any]) -> AsyncIterator[Any]:
    """A demo server whose requests and connections a test can see (tests/_sdk.py)."""
    from ._sdk import Watched

    watched = Watched(await start_server(**backend, **server_config))
    yield watched
    await watched.close()


@pytest_twisted.async_yield_fixture()
async def sdk(site: Any) -> AsyncIterator[Any]:
    """SDK services against C{site}, stopped at teardown."""
    from ._sdk import Services

    services = Services(site.url)
    yield services
    await services.stop_all()


@pytest.fixture
def failures() -> Any:
    """Failures logged while the test runs (an exception reaching user code shows up here)."""
    seen: list[dict[str, Any]] = []
    gc.collect()  # what earlier tests left unhandled is reported now, not during this one

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event or (event.get("isError") and "failure" in event):
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def failure_texts(events: list[dict[str, Any]]) -> list[str]:
    return [event.get("log_failure", event.get("failure")).getTraceback() for event in events]
