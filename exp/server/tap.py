"""
C{twistd exp-server}: run the local EXP server::

    twistd -n exp-server [--listen tcp:9000:interface=127.0.0.1] [--db exp.sqlite3]
                         [--seed seed.json] [--content DIR] [--public-url URL]

The REST API and the real-time network share one port; the documents are
stored in SQLite (or PostgreSQL, below).  Without C{--seed} the demo seed
is loaded.

Several processes serve one site when they share a PostgreSQL database and
a Redis::

    twistd -n exp-server --db postgresql://exp@db/exp --redis redis://cache:6379/0
"""

from __future__ import annotations

import importlib
import ipaddress
import os
from typing import Any

from twisted.application import service
from twisted.internet.defer import ensureDeferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python import usage

from exp._usage import Options as PlainOptions
from exp._usage import plain_text
from exp.server._auth import PASSWORD_COST
from exp.server._cors import ANY as ANY_ORIGIN
from exp.server._cors import normalize_origin
from exp.server._feeds import FETCH_TIMEOUT, MAX_FEED_BYTES
from exp.server._hub import MAX_RESPONSE_BYTES, MAX_RESPONSES
from exp.server._network import (
    MAX_SESSION_MESSAGES,
    MAX_SESSION_QUEUE,
    MAX_SESSIONS_PER_IDENTITY,
    MAX_SUBSCRIPTIONS,
)
from exp.server._presence import LEASE
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


def _between(low: int, high: int, name: str) -> Any:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise usage.UsageError(f"--{name} must be a whole number, not {value!r}") from None
        if not low <= number <= high:
            raise usage.UsageError(f"--{name} must be from {low} to {high}")
        return number

    return parse


class Options(PlainOptions):
    synopsis = "[options]"
    description = plain_text(__doc__)
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
        ["password-cost", None, PASSWORD_COST,
         "scrypt cost of password hashes, as log2 of N (10 to 20); cheaper stored hashes "
         "are redone at the next login.", _between(10, 20, "password-cost")],
        ["failures-per-minute", None, 30.0,
         "Failed logins and pairing attempts a peer address may make a minute (then 429).",
         _positive(float, "failures-per-minute")],
        ["lockout-failures", None, 10,
         "Failed logins (or pairing codes) that lock an account...",
         _positive(int, "lockout-failures")],
        ["lockout-seconds", None, 300.0, "...for this many seconds.",
         _positive(float, "lockout-seconds")],
        ["unpaired-logins-per-minute", None, 30.0,
         "Unpaired device logins a peer address may make a minute (then 429).",
         _positive(float, "unpaired-logins-per-minute")],
        ["pairing-code-lifetime", None, 900.0, "Seconds a pairing code is good for.",
         _positive(float, "pairing-code-lifetime")],
        ["head-timeout", None, 10.0,
         "Seconds a request's head (request line and headers) may take from its first "
         "byte (then 408).", _positive(float, "head-timeout")],
        ["max-connections-per-peer", None, 1000,
         "Connections one peer address may hold open at once (0: no limit).",
         _between(0, 10**6, "max-connections-per-peer")],
        ["presence-lease", None, LEASE,
         "Seconds a process's word that its devices are online holds unrenewed (it renews "
         "at a third of that; a killed process's devices go offline after it).",
         _positive(float, "presence-lease")],
        ["feed-timeout", None, FETCH_TIMEOUT,
         "Seconds for a whole feed fetch, body included.", _positive(float, "feed-timeout")],
        ["feed-max-bytes", None, MAX_FEED_BYTES,
         "Largest feed source in bytes, as received and as decompressed.",
         _positive(int, "feed-max-bytes")],
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

    def __init__(self) -> None:
        super().__init__()
        self["feed-allow"] = []
        self["cors-origins"] = []
        self.docs["cors-origin"] = (
            "Origin (scheme://host[:port]) whose web pages may call the API and poll "
            "the network; repeatable, * allows any [default: *].")

    def opt_feed_allow(self, cidr: str) -> None:
        """Fetch feeds from this CIDR range even if not public, e.g. 10.0.0.0/8 (repeatable)."""
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise usage.UsageError(f"--feed-allow takes a CIDR range, not {cidr!r}") from None
        self["feed-allow"].append(cidr)

    def opt_cors_origin(self, origin: str) -> None:
        # Repeatable, so a method rather than an optParameters entry.
        try:
            self["cors-origins"].append(normalize_origin(origin))
        except ValueError as e:
            raise usage.UsageError(f"--cors-origin: {e}") from None

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
            f"{option} needs {module.split('.')[0]}: pip install 'txexp[{extra}]'") from None


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
            self.port = await self.endpoint.listen(self.server.factory())
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
        password_cost=options["password-cost"],
        failures_per_minute=options["failures-per-minute"],
        lockout_failures=options["lockout-failures"],
        lockout_seconds=options["lockout-seconds"],
        unpaired_logins_per_minute=options["unpaired-logins-per-minute"],
        pairing_code_lifetime=options["pairing-code-lifetime"],
        head_timeout=options["head-timeout"],
        max_connections_per_peer=options["max-connections-per-peer"],
        feed_allow=options["feed-allow"],
        feed_timeout=options["feed-timeout"],
        feed_max_bytes=options["feed-max-bytes"],
        presence_lease=options["presence-lease"],
        cors_origins=options["cors-origins"] or [ANY_ORIGIN],
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
