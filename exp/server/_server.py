"""
The local EXP server's wiring: L{ExpServer} builds its parts (storage, hub,
policy, budgets, pairings, revocations, feeds, the network) and the REST
API's routes (L{exp.server.routes}) over them, starts and stops them, and
gives the web tree that serves them.
"""

from __future__ import annotations

import secrets
import uuid as uuidlib
from typing import Any

from twisted.logger import Logger
from twisted.web import http, resource, server

from exp.protocol import ChannelId
from exp.server import _feeds
from exp.server._auth import PasswordHasher, TokenIssuer
from exp.server._config import ServerConfig
from exp.server._console import ConsoleFiles, to_console
from exp.server._content import ContentFolders
from exp.server._cors import CORS
from exp.server._engineio import EngineIOResource
from exp.server._hub import IHub, LocalHub
from exp.server._limits import LoginBudgets
from exp.server._network import Limits, RealTimeNetwork
from exp.server._pairing import Pairings
from exp.server._policy import Policy
from exp.server._presence import STATUS, Presence
from exp.server._revocation import Key, Revocations, key_of
from exp.server._seed import Organization, apply_seed
from exp.server._storage import IStorage, SQLiteStorage
from exp.server._web import (
    ApiRequest,
    DeadlineChannel,
    LimitedRequest,
    NotFound,
    PeerLimit,
    Router,
    access_log_formatter,
)
from exp.server.routes import API

__all__ = ["ExpServer", "ServerConfig", "make_hub", "make_storage"]


def make_storage(db: str, reactor: Any = None) -> IStorage:
    """The storage of C{db}: a C{postgresql://} URL, or else a SQLite file."""
    if db.startswith(("postgresql://", "postgres://")):
        from exp.server._postgresql import PostgreSQLStorage

        return PostgreSQLStorage(db, reactor)
    return SQLiteStorage(db, reactor)


def make_hub(redis: str | None, reactor: Any) -> IHub:
    """A hub spanning processes through the Redis at C{redis}, or one within this process."""
    if redis:
        from exp.server._redis import RedisHub

        return RedisHub(reactor, redis)
    return LocalHub(reactor)


class ExpServer:
    """
    The server's parts, wired.  L{start} makes it ready; L{resource} is what
    a twisted.web C{Site} serves, L{factory} what to listen with.  Each part
    is a public attribute: the routes use them (L{exp.server.routes.Server}).

    @ivar reactor: the reactor, and the clock of every expiry.
    @ivar storage: where documents, settings and logs are kept.
    @ivar config: the server's settings.
    @ivar hub: fans out messages and collects responses, across processes.
    @ivar content: the content folder of each organization.
    @ivar feeds: fetches the data of feeds.
    @ivar passwords: hashes and checks passwords on a pool of its own.
    @ivar budgets: failed logins and pairing attempts, per peer and account.
    @ivar pairings: the codes of devices waiting to be paired.
    @ivar revocations: the credentials that changed, across processes.
    @ivar policy: who a request acts for, and what it may do.
    @ivar router: the REST API's routes (L{exp.server.routes.API}).
    @ivar network: the real-time network's sessions.
    @ivar presence: which devices have a network session, across processes.
    """

    _log = Logger()

    def __init__(self, storage: IStorage, seed: list[Organization] | None = None,
                 config: ServerConfig | None = None, reactor: Any = None,
                 hub: IHub | None = None) -> None:
        """
        @param storage: where documents, settings and logs are kept.
        @param seed: the organizations to store at L{start}.
        @param config: the server's settings (the defaults if none).
        @param reactor: the reactor, and the clock of every expiry (the
            global one if none).
        @param hub: fans out messages and collects responses (one within
            this process if none).
        """
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.reactor = reactor
        self.storage = storage
        self.config = config = config or ServerConfig()
        self.hub: IHub = hub if hub is not None else LocalHub(reactor)
        self._seed = seed or []
        self.content = ContentFolders(
            {org.name: org.content for org in self._seed if org.content}, config.content)
        self.feeds = _feeds.FeedFetcher(reactor, _feeds.FeedPolicy.of(
            config.feed_allow, config.feed_timeout, config.feed_max_bytes))
        self.passwords = PasswordHasher(reactor, config.password_cost)
        self.budgets = LoginBudgets(reactor, config.failures_per_minute,
                                    config.lockout_failures, config.lockout_seconds,
                                    config.unpaired_logins_per_minute)
        self.pairings = Pairings(storage, reactor, config.pairing_code_lifetime)
        self.revocations = Revocations(storage, self.hub, reactor, config.token_lifetime,
                                       self._revoked)
        self.policy = Policy(self.revocations)
        self.router = Router()
        self.router.include(API, self)
        self.network = RealTimeNetwork(
            self.hub, self.policy.identify_token, reactor,
            ping_interval=config.ping_interval, ping_timeout=config.ping_timeout,
            max_message=config.max_body,
            limits=Limits(
                queue_bytes=config.max_session_queue,
                queue_messages=config.max_session_messages,
                subscriptions=config.max_subscriptions,
                sessions_per_identity=config.max_sessions_per_identity,
            ),
        )
        self.presence = Presence(storage, self._notify_status, reactor,
                                 config.presence_lease)
        self.network.presence = self.presence

    @property
    def tokens(self) -> TokenIssuer | None:
        """Signs and verifies the server's tokens; C{None} until started."""
        return self.policy.tokens

    async def start(self) -> None:
        """Open the storage, load the signing key and apply the seed."""
        await self.storage.open()
        key = await self.storage.setting("signingKey", lambda: secrets.token_urlsafe(48))
        self.policy.tokens = TokenIssuer(key, self.config.token_lifetime, clock=self.reactor)
        self.passwords.start()
        await apply_seed(self.storage, self._seed, self.passwords.hash)
        await self.hub.open(await self.storage.setting("deployment", lambda: uuidlib.uuid4().hex))
        await self.revocations.start()
        self.pairings.start()
        await self.presence.start()

    async def stop(self) -> None:
        """Close outgoing connections, the hub and the storage."""
        self.revocations.stop()
        self.pairings.stop()
        await self.presence.stop()
        self.network.close_all()
        await self.hub.close()
        await self.feeds.close()
        await self.storage.close()
        self.passwords.stop()

    def resource(self) -> resource.Resource:
        """The root of the server's web tree."""
        root = _Root()
        origins = self.config.cors_origins
        methods = {method for method, _ in self.router.routes()}
        root.putChild(b"api", CORS(self.router, origins, methods))
        network = EngineIOResource(self.network.engine)
        root.putChild(b"socket.io", CORS(network, origins, ["GET", "POST"]))
        root.putChild(b"console", ConsoleFiles())
        return root

    def site(self) -> server.Site:
        """The twisted.web C{Site} of L{resource}."""
        kind = server.Site if self.config.access_log else _QuietSite
        site = kind(self.resource(), requestFactory=LimitedRequest,
                    logFormatter=access_log_formatter)
        site.max_body = self.config.max_body  # type: ignore[attr-defined]
        site.displayTracebacks = False
        site.protocol = self._http_channel  # type: ignore[assignment]
        return site

    def _http_channel(self) -> DeadlineChannel:
        channel = DeadlineChannel()
        channel.head_timeout = self.config.head_timeout
        return channel

    def factory(self) -> PeerLimit:
        """What to listen with: L{site}, with at most so many connections per peer."""
        return PeerLimit(self.site(), self.config.max_connections_per_peer)

    def notify(self, organization: str, name: str, event: str, document: Any) -> None:
        """Announce a change on the system channel C{name} of C{organization}."""
        channel = ChannelId(organization, name, system=True).encode()
        self.hub.notify(channel, event, document)

    def public_url(self, req: ApiRequest) -> str:
        """
        The URL clients are told to use for REST and the network: the
        configured one, else the scheme and Host of C{req}.
        """
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        scheme = "https" if req.http.isSecure() else "http"
        host = req.header("host")
        if not host:
            address = req.http.getHost()
            host = f"{address.host}:{address.port}"
        return f"{scheme}://{host}"

    def _notify_status(self, organization: str, device: str, status: dict[str, Any]) -> None:
        self.notify(organization, device, STATUS, status)

    def _revoked(self, whose: Key) -> None:
        """End the network sessions of an identity whose credentials changed."""
        for session in list(self.network.sessions.values()):
            if key_of(session.identity) == whose:
                session.close()


class _Root(resource.Resource):
    def getChild(self, path: bytes, request: server.Request) -> resource.Resource:
        if (path == b"" and request.postpath in ([], [b""])
                and request.method in (b"GET", b"HEAD")):
            return to_console()
        return NotFound()


class _QuietSite(server.Site):
    """A site that writes no access log (C{--no-access-log})."""

    def log(self, request: http.Request) -> None:
        pass
