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

import attrs
from twisted.application import service
from twisted.internet.defer import ensureDeferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python import usage

from exp._usage import Options as PlainOptions
from exp._usage import plain_text
from exp.server._auth import PASSWORD_COST
from exp.server._config import ServerConfig
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
from exp.server._server import ExpServer, make_hub, make_storage


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


def _positive_option(name: str, default: float, kind: type, help: str) -> list[Any]:
    """The entry of C{optParameters} of a positive number C{--name}."""
    return [name, None, default, help, _positive(kind, name)]


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


#: What C{--help} says of the command: this module's docstring, as plain text.
DESCRIPTION = plain_text(__doc__)


class Options(PlainOptions):
    """The options of C{twistd exp-server}; C{--help} lists them."""

    #: What follows the command in C{--help}'s first line.
    synopsis = "[options]"
    #: What C{--help} says after the options.
    description = DESCRIPTION
    #: The options without a value.
    optFlags = [
        ["no-access-log", None, "Write no line per HTTP request to the log."],
    ]
    #: The options with a value: name, short name, default, help, parser.
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
        _positive_option("token-lifetime", 3600.0, float,
                         "Token lifetime in seconds."),
        _positive_option("max-body", 1 << 20, int,
                         "Largest request body in bytes."),
        _positive_option("max-broadcast-timeout", 60.0, float,
                         "Longest broadcast timeout in seconds."),
        ["password-cost", None, PASSWORD_COST,
         "scrypt cost of password hashes, as log2 of N (10 to 20); cheaper stored hashes "
         "are redone at the next login.", _between(10, 20, "password-cost")],
        _positive_option("failures-per-minute", 30.0, float,
                         "Failed logins and pairing attempts a peer address may make a minute "
                         "(then 429)."),
        _positive_option("lockout-failures", 10, int,
                         "Failed logins (or pairing codes) that lock an account..."),
        _positive_option("lockout-seconds", 300.0, float,
                         "...for this many seconds."),
        _positive_option("unpaired-logins-per-minute", 30.0, float,
                         "Unpaired device logins a peer address may make a minute (then 429)."),
        _positive_option("pairing-code-lifetime", 900.0, float,
                         "Seconds a pairing code is good for."),
        _positive_option("head-timeout", 10.0, float,
                         "Seconds a request's head (request line and headers) may take from its "
                         "first byte (then 408)."),
        ["max-connections-per-peer", None, 1000,
         "Connections one peer address may hold open at once (0: no limit).",
         _between(0, 10**6, "max-connections-per-peer")],
        _positive_option("presence-lease", LEASE, float,
                         "Seconds a process's word that its devices are online holds "
                         "unrenewed (it renews at a third of that; a killed process's "
                         "devices go offline after it)."),
        _positive_option("feed-timeout", FETCH_TIMEOUT, float,
                         "Seconds for a whole feed fetch, body included."),
        _positive_option("feed-max-bytes", MAX_FEED_BYTES, int,
                         "Largest feed source in bytes, as received and as decompressed."),
        _positive_option("max-session-queue", MAX_SESSION_QUEUE, int,
                         "Bytes a network session may have waiting for its client (not polled, or "
                         "not read off its WebSocket) before it is closed; at least --max-body."),
        _positive_option("max-session-messages", MAX_SESSION_MESSAGES, int,
                         "Packets a network session may have waiting for its client before it is "
                         "closed."),
        _positive_option("max-subscriptions", MAX_SUBSCRIPTIONS, int,
                         "Channels one network session may listen to."),
        _positive_option("max-sessions-per-identity", MAX_SESSIONS_PER_IDENTITY, int,
                         "Network sessions one identity may hold; one more closes its oldest."),
        _positive_option("max-responses", MAX_RESPONSES, int,
                         "Responses one broadcast collects; more are dropped."),
        _positive_option("max-response-bytes", MAX_RESPONSE_BYTES, int,
                         "Bytes of the responses one broadcast collects; more are dropped."),
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
        """Allow the web pages of this origin (the help text is in C{docs})."""
        # Repeatable, so a method rather than an optParameters entry.
        try:
            self["cors-origins"].append(normalize_origin(origin))
        except ValueError as e:
            raise usage.UsageError(f"--cors-origin: {e}") from None

    def postOptions(self) -> None:
        """Load the seed, take the databases from the environment, check what goes together."""
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
        #: The server it starts and stops.
        self.server = server
        #: Where it listens.
        self.endpoint = endpoint
        #: The listening port, once listening.
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        """Start the server, then listen; stop the reactor if either fails."""
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
        """Stop listening, then stop the server."""
        super().stopService()
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self.port is not None:
            await maybeDeferred(self.port.stopListening)
        await self.server.stop()


def _config(options: Options) -> ServerConfig:
    """The settings of C{options}: each option named as a setting is, C{-} for C{_}."""
    names = {field.name for field in attrs.fields(ServerConfig)}
    settings = {key.replace("-", "_"): value for key, value in options.items()
                if key.replace("-", "_") in names}
    settings["access_log"] = not options["no-access-log"]
    settings["cors_origins"] = options["cors-origins"] or [ANY_ORIGIN]
    return ServerConfig(**settings)


def makeService(options: Options) -> service.IService:
    """The service of C{twistd exp-server}: an L{ExpServer} of C{options}, listening."""
    from twisted.internet import reactor

    config = _config(options)
    server = ExpServer(make_storage(options["db"], reactor), options["organizations"],
                       config, reactor=reactor, hub=make_hub(options["redis"], reactor))
    return ServerService(server, serverFromString(reactor, options["listen"]))
