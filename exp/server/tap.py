"""
C{twistd exp-server}: run the local EXP server::

    twistd -n exp-server [--listen tcp:9000:interface=127.0.0.1] [--db exp.sqlite3]
                         [--seed seed.json] [--content DIR] [--public-url URL]

Several processes serve one site when they share a PostgreSQL database and
a Redis::

    twistd -n exp-server --db postgresql://exp@db/exp --redis redis://cache:6379/0
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from twisted.application import service
from twisted.internet.defer import ensureDeferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python import usage

from exp.server._hub import MAX_RESPONSE_BYTES, MAX_RESPONSES
from exp.server._network import (
    MAX_SESSION_MESSAGES,
    MAX_SESSION_QUEUE,
    MAX_SESSIONS_PER_IDENTITY,
    MAX_SUBSCRIPTIONS,
)
from exp.server._seed import SeedError, demo_seed_path, load_seed
from exp.server._server import ExpServer, ServerConfig, make_hub, make_storage


def _positive(kind: type, name: str) -> Any:
    def parse(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            raise usage.UsageError(f"--{name} must be a number, not {value!r}") from None
        if number <= 0:
            raise usage.UsageError(f"--{name} must be positive")
        return number

    return parse


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run the local EXP server: REST API and real-time network on one port, "
        "stored in SQLite. Without --seed the demo seed is loaded."
    )
    optFlags = [
        ["no-access-log", None, "Write no line per HTTP request to the log."],
    ]
    optParameters = [
        ["listen", "l", "tcp:9000:interface=127.0.0.1",
         "Endpoint to listen on (a Twisted endpoint string)."],
        ["db", "d", None,
         "SQLite database file (created if missing), or a postgresql:// URL "
         "[default: $EXP_DB, else exp.sqlite3]."],
        ["redis", "r", None,
         "redis:// URL: broadcasts and responses then reach every process "
         "started with the same --db and --redis [default: $EXP_REDIS]."],
        ["seed", "s", None, "Seed file (JSON); the demo seed when not given."],
        ["content", "c", None,
         "Content folder of the organizations whose seed names none."],
        ["public-url", "u", None,
         "URL clients are told to use; by default taken from each login request."],
        ["token-lifetime", None, 3600.0, "Token lifetime in seconds.",
         _positive(float, "token-lifetime")],
        ["max-body", None, 1 << 20, "Largest request body in bytes.",
         _positive(int, "max-body")],
        ["max-broadcast-timeout", None, 60.0, "Longest broadcast timeout in seconds.",
         _positive(float, "max-broadcast-timeout")],
        ["max-session-queue", None, MAX_SESSION_QUEUE,
         "Bytes a network session may have waiting for its client (not polled, or "
         "not read off its WebSocket) before it is closed; at least --max-body.",
         _positive(int, "max-session-queue")],
        ["max-session-messages", None, MAX_SESSION_MESSAGES,
         "Packets a network session may have waiting for its client before it is closed.",
         _positive(int, "max-session-messages")],
        ["max-subscriptions", None, MAX_SUBSCRIPTIONS,
         "Channels one network session may listen to.",
         _positive(int, "max-subscriptions")],
        ["max-sessions-per-identity", None, MAX_SESSIONS_PER_IDENTITY,
         "Network sessions one identity may hold; one more closes its oldest.",
         _positive(int, "max-sessions-per-identity")],
        ["max-responses", None, MAX_RESPONSES,
         "Responses one broadcast collects; more are dropped.",
         _positive(int, "max-responses")],
        ["max-response-bytes", None, MAX_RESPONSE_BYTES,
         "Bytes of the responses one broadcast collects; more are dropped.",
         _positive(int, "max-response-bytes")],
    ]

    def postOptions(self) -> None:
        try:
            self["organizations"] = load_seed(self["seed"] or demo_seed_path())
        except SeedError as e:
            raise usage.UsageError(str(e)) from None
        # From the environment, a URL's password is not on every command line.
        self["db"] = self["db"] or os.environ.get("EXP_DB") or "exp.sqlite3"
        self["redis"] = self["redis"] or os.environ.get("EXP_REDIS") or None
        postgresql = self["db"].startswith(("postgresql://", "postgres://"))
        if self["redis"] and not self["redis"].startswith(("redis://", "rediss://", "unix://")):
            raise usage.UsageError("--redis takes a redis://, rediss:// or unix:// URL")
        if postgresql:
            _require("psycopg_pool", "--db postgresql://", "postgresql")
        if self["redis"]:
            _require("redis.asyncio", "--redis", "redis")
        if self["max-session-queue"] < self["max-body"]:
            raise usage.UsageError(
                "--max-session-queue must be at least --max-body: a session closes "
                "when one broadcast does not fit in its queue")


def _require(module: str, option: str, extra: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError:
        raise usage.UsageError(
            f"{option} needs {module.split('.')[0]}: pip install 'exp[{extra}]'") from None


class ServerService(service.Service):
    """Opens the storage, applies the seed, then listens."""

    _log = Logger()

    def __init__(self, server: ExpServer, endpoint: Any) -> None:
        self.server = server
        self.endpoint = endpoint
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        ensureDeferred(self._start())

    async def _start(self) -> None:
        try:
            await self.server.start()
            self.port = await self.endpoint.listen(self.server.site())
        except Exception:
            self._log.failure("the EXP server could not start")
            self.server.reactor.stop()
            return
        self._log.info("EXP server listening on {address}", address=self.port.getHost())

    def stopService(self) -> Any:
        super().stopService()
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self.port is not None:
            await maybeDeferred(self.port.stopListening)
        await self.server.stop()


def makeService(options: Options) -> service.IService:
    from twisted.internet import reactor

    config = ServerConfig(
        public_url=options["public-url"],
        token_lifetime=options["token-lifetime"],
        max_body=options["max-body"],
        max_broadcast_timeout=options["max-broadcast-timeout"],
        content=options["content"],
        access_log=not options["no-access-log"],
        max_session_queue=options["max-session-queue"],
        max_session_messages=options["max-session-messages"],
        max_subscriptions=options["max-subscriptions"],
        max_sessions_per_identity=options["max-sessions-per-identity"],
        max_responses=options["max-responses"],
        max_response_bytes=options["max-response-bytes"],
    )
    server = ExpServer(make_storage(options["db"], reactor), options["organizations"],
                       config, reactor=reactor, hub=make_hub(options["redis"], reactor))
    return ServerService(server, serverFromString(reactor, options["listen"]))
