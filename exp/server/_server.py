"""
The local EXP server: the REST API of PROTOCOL.md A2, A4 and A6 with the
rules of Part B, over an L{IStorage} and an L{IHub}.
"""

from __future__ import annotations

import functools
import json
import math
import secrets
import uuid as uuidlib
from collections.abc import Sequence
from importlib import resources as importlib_resources
from typing import Any
from urllib.parse import quote

import attrs
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web import http, resource, server, static

from exp.protocol import (
    ChannelId,
    InvalidChannelId,
    InvalidToken,
    to_seconds,
    unverified_claims,
    verify,
)
from exp.server import _content, _feeds
from exp.server._auth import (
    CONSUMER_APP,
    DEVICE,
    NO_ORGANIZATION,
    PASSWORD_COST,
    USER,
    Identity,
    PasswordHasher,
    TokenIssuer,
    channel_allowed,
    needs_rehash,
    new_secret,
    pairing_code,
    same_secret,
)
from exp.server._console import ConsoleFiles, to_console
from exp.server._cors import ANY as ANY_ORIGIN
from exp.server._cors import CORS, normalize_origins
from exp.server._engineio import EngineIOResource
from exp.server._hub import MAX_RESPONSE_BYTES, MAX_RESPONSES, IHub, LocalHub
from exp.server._limits import Lockouts, TokenBuckets, too_many
from exp.server._network import (
    MAX_SESSION_MESSAGES,
    MAX_SESSION_QUEUE,
    MAX_SESSIONS_PER_IDENTITY,
    MAX_SUBSCRIPTIONS,
    Limits,
    RealTimeNetwork,
)
from exp.server._presence import LEASE, STATUS, Presence
from exp.server._query import UNSET, InvalidQuery, Query
from exp.server._revocation import Key, Revocations, key_of
from exp.server._seed import (
    Organization,
    apply_seed,
    data_uuid,
    resource_defaults,
    user_uuid,
)
from exp.server._storage import Document, IStorage, SQLiteStorage, dumps
from exp.server._web import (
    ApiRequest,
    DeadlineChannel,
    Delegate,
    HttpError,
    LimitedRequest,
    NotFound,
    PeerLimit,
    Raw,
    Redirect,
    Router,
    access_log_formatter,
    bad_request,
)

#: Collections of the common resources, by their path under C{/api/}.
RESOURCE_PATHS = {
    "devices": "devices",
    "things": "things",
    "experiences": "experiences",
    "locations": "locations",
    "connectors/feeds": "feeds",
}
#: Seconds between two purges of the expired pairing codes.
PAIRINGS_PURGE_INTERVAL = 60.0
#: The uuid of a device login that has none (it asks to pair).
_NO_UUID = "_"
#: The furthest ahead (seconds) a login token's C{exp} may be: the official
#: JS SDK signs C{iat + 24 h}; five minutes more for clocks that disagree.
LOGIN_TOKEN_HORIZON = 86400.0 + 300.0


@attrs.define
class ServerConfig:
    """
    The server's settings.

    @ivar public_url: the URL clients are told to use for REST and the
        network; by default the scheme and Host of each login request.
    @ivar content: the content folder of organizations whose seed names none.
    @ivar feed_allow: CIDR ranges feeds may be fetched from although they are
        not public (loopback, private, ...): C{--feed-allow}.
    @ivar feed_timeout: seconds for a whole feed fetch, body included.
    @ivar feed_max_bytes: the largest feed source, as received and as
        decompressed.
    @ivar cors_origins: the origins whose web pages may call the API and
        poll the network (C{"*"}: any; none: no cross-origin page).
    @ivar max_session_queue: bytes of packets a network session may have
        waiting for its client (not polled, or not read off its WebSocket);
        past it the session is closed.
    @ivar max_session_messages: the same in packets.
    @ivar max_subscriptions: channels one network session may listen to.
    @ivar max_sessions_per_identity: network sessions one identity may
        hold; a new one closes its oldest.  An unpaired device holds one.
    @ivar max_responses: responses one broadcast collects; more are dropped.
    @ivar max_response_bytes: bytes (as JSON) of the responses one broadcast
        collects; more are dropped.
    """

    public_url: str | None = None
    token_lifetime: float = 3600.0
    max_body: int = 1 << 20
    max_broadcast_timeout: float = 60.0
    content: str | None = None
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    access_log: bool = True
    #: scrypt's cost for passwords, as log2 of N (hashes of a lower cost are
    #: redone at the next login).
    password_cost: int = PASSWORD_COST
    #: Failed logins and pairing attempts a peer address may make a minute.
    failures_per_minute: float = 30.0
    #: Failed logins (or pairing codes) of one account that lock it ...
    lockout_failures: int = 10
    #: ... for this many seconds.
    lockout_seconds: float = 300.0
    #: Unpaired device logins a peer address may make a minute.
    unpaired_logins_per_minute: float = 30.0
    #: Seconds a pairing code is good for.
    pairing_code_lifetime: float = 900.0
    #: Seconds a request's head may take from its first byte.
    head_timeout: float = 10.0
    #: Connections one peer address may hold open at once (0: no limit).
    max_connections_per_peer: int = 1000
    feed_allow: Sequence[str] = ()
    feed_timeout: float = _feeds.FETCH_TIMEOUT
    feed_max_bytes: int = _feeds.MAX_FEED_BYTES
    #: Seconds a process's word that its devices are online holds unrenewed.
    presence_lease: float = LEASE
    cors_origins: tuple[str, ...] = attrs.field(default=(ANY_ORIGIN,),
                                                converter=normalize_origins)
    max_session_queue: int = MAX_SESSION_QUEUE
    max_session_messages: int = MAX_SESSION_MESSAGES
    max_subscriptions: int = MAX_SUBSCRIPTIONS
    max_sessions_per_identity: int = MAX_SESSIONS_PER_IDENTITY
    max_responses: int = MAX_RESPONSES
    max_response_bytes: int = MAX_RESPONSE_BYTES


def _unauthorized(message: str, code: str = "auth.invalid") -> HttpError:
    return HttpError(401, code, message)


def _forbidden(message: str, code: str = "permission.denied") -> HttpError:
    return HttpError(403, code, message)


def _not_found(what: str) -> HttpError:
    return HttpError(404, "resource.notFound", f"{what} does not exist")


def _public_item(document: Document) -> Document:
    """A data item as clients see it."""
    return {"group": document["group"], "key": document["key"], "value": document["value"]}


#: The first segment of a delivery path that carries the restricted token,
#: C{/api/delivery/_rt=<token>/<path>}: an app's files, loaded by relative
#: URLs from its C{index.html}, carry it so.
PATH_TOKEN = "_rt="
#: What delivered content may do in a browser: run as a page of its own
#: origin-less sandbox, never as the API's origin (whose pages hold tokens).
CONTENT_POLICY = b"sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"
#: Past this many parts, a Range header is ignored and the whole file served.
MAX_RANGES = 8
#: Layout images: raster types only (an SVG is a document that can run scripts).
LAYOUT_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp",
                          "image/avif", "image/tiff"})


def _split_path_token(path: str) -> tuple[str | None, str]:
    """C{(token, path)} of a delivery path that starts with L{PATH_TOKEN}."""
    if not path.startswith(PATH_TOKEN):
        return None, path
    token, _, rest = path[len(PATH_TOKEN):].partition("/")
    return token, rest


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
    The server's state and request handlers.  L{start} makes it ready;
    L{resource} is what a twisted.web C{Site} serves.
    """

    _log = Logger()

    def __init__(self, storage: IStorage, seed: list[Organization] | None = None,
                 config: ServerConfig | None = None, reactor: Any = None,
                 hub: IHub | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.reactor = reactor
        self.storage = storage
        self.config = config or ServerConfig()
        self.hub: IHub = hub if hub is not None else LocalHub(reactor)
        self._seed = seed or []
        self._content_roots = {org.name: org.content for org in self._seed if org.content}
        self.feeds = _feeds.FeedFetcher(reactor, _feeds.FeedPolicy.of(
            self.config.feed_allow, self.config.feed_timeout, self.config.feed_max_bytes))
        self.tokens: TokenIssuer | None = None
        self.passwords = PasswordHasher(reactor, self.config.password_cost)
        self._failures = TokenBuckets(reactor, self.config.failures_per_minute)
        self._unpaired = TokenBuckets(reactor, self.config.unpaired_logins_per_minute)
        self._lockouts = Lockouts(reactor, self.config.lockout_failures,
                                  self.config.lockout_seconds)
        self._purge = LoopingCall(self._purge_pairings)
        self._purge.clock = reactor
        self.revocations = Revocations(storage, self.hub, reactor, self.config.token_lifetime,
                                       self._revoked)
        self.router = Router()
        self._add_routes()
        self.network = RealTimeNetwork(
            self.hub, self._identify_token, reactor,
            ping_interval=self.config.ping_interval, ping_timeout=self.config.ping_timeout,
            max_message=self.config.max_body,
            limits=Limits(
                queue_bytes=self.config.max_session_queue,
                queue_messages=self.config.max_session_messages,
                subscriptions=self.config.max_subscriptions,
                sessions_per_identity=self.config.max_sessions_per_identity,
            ),
        )
        self.presence = Presence(storage, self._notify_status, reactor,
                                 self.config.presence_lease)
        self.network.presence = self.presence

    async def start(self) -> None:
        """Open the storage, load the signing key and apply the seed."""
        await self.storage.open()
        key = await self.storage.setting("signingKey", lambda: secrets.token_urlsafe(48))
        self.tokens = TokenIssuer(key, self.config.token_lifetime)
        self.passwords.start()
        await apply_seed(self.storage, self._seed, self.passwords.hash)
        await self.hub.open(await self.storage.setting("deployment", lambda: uuidlib.uuid4().hex))
        await self.revocations.start()
        await self.presence.start()
        self._purge.start(PAIRINGS_PURGE_INTERVAL, now=False)

    async def stop(self) -> None:
        """Close outgoing connections, the hub and the storage."""
        self.revocations.stop()
        if self._purge.running:
            self._purge.stop()
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

    # -- identities and permissions ---------------------------------------

    def _issuer(self) -> TokenIssuer:
        if self.tokens is None:
            raise HttpError(503, "server.starting", "the server is starting")
        return self.tokens

    def _identify_token(self, token: str) -> Identity:
        if self.tokens is None:
            raise InvalidToken("the server is starting")
        return self.revocations.check(self.tokens.identify(token))

    def _issue(self, identity: Identity, req: ApiRequest) -> dict[str, Any]:
        """An auth payload for C{identity}, bound to its current credential."""
        credential = self.revocations.credential(key_of(identity))
        return self._issuer().issue(attrs.evolve(identity, credential=credential),
                                    self._public_url(req))

    def _revoked(self, whose: Key) -> None:
        """End the network sessions of an identity whose credentials changed."""
        for session in list(self.network.sessions.values()):
            if key_of(session.identity) == whose:
                session.close()

    def _public_url(self, req: ApiRequest) -> str:
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        scheme = "https" if req.http.isSecure() else "http"
        host = req.header("host")
        if not host:
            address = req.http.getHost()
            host = f"{address.host}:{address.port}"
        return f"{scheme}://{host}"

    def _identify(self, req: ApiRequest, restricted_ok: bool = False,
                  path_token: str | None = None) -> Identity:
        header = req.header("authorization") or ""
        token: str | None = None
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise _unauthorized("the Authorization header must be 'Bearer <token>'")
            token = value.strip()
        elif restricted_ok:
            token = req.param("_rt") or path_token
        if not token:
            raise _unauthorized("this call needs a token", "auth.required")
        try:
            identity = self.revocations.check(self._issuer().identify(token))
        except InvalidToken as e:
            raise _unauthorized(f"the token is not valid: {e}") from None
        if identity.restricted and not restricted_ok:
            raise _forbidden("a restricted token is only good for delivery and layout URLs",
                             "auth.restricted")
        return identity

    def _reader(self, req: ApiRequest) -> Identity:
        identity = self._identify(req)
        if identity.is_pairing:
            raise _forbidden("an unpaired device can only wait to be paired", "device.unpaired")
        return identity

    def _writer(self, req: ApiRequest) -> Identity:
        identity = self._reader(req)
        if identity.is_consumer:
            raise _forbidden("consumer apps can only read")
        return identity

    def _channel(self, identity: Identity, channel_id: Any, *, send: bool) -> ChannelId:
        """The channel C{identity} may broadcast (C{send}) or listen on."""
        try:
            channel = ChannelId.decode(channel_id)
        except InvalidChannelId as e:
            raise bad_request("channel.invalid", str(e)) from None
        if not channel_allowed(identity, channel, send=send):
            raise _forbidden("this identity may not use that channel", "channel.forbidden")
        return channel

    def notify(self, organization: str, name: str, event: str, document: Any) -> None:
        """Announce a change on the system channel C{name}."""
        channel = ChannelId(organization, name, system=True).encode()
        self.hub.notify(channel, event, document)

    def _notify_status(self, organization: str, device: str, status: dict[str, Any]) -> None:
        self.notify(organization, device, STATUS, status)

    # -- routes -------------------------------------------------------------

    def _add_routes(self) -> None:
        add = self.router.add
        add("POST", "/api/auth/login", self.login)
        add("POST", "/api/auth/token", self.refresh)
        add("POST", "/api/devices/pair", self.pair)
        add("GET", "/api/devices/{uuid}/status", self.device_status)
        add("GET", "/api/locations/{uuid}/layout", self.get_layout)
        add("PUT", "/api/locations/{uuid}/layout", self.put_layout)
        add("GET", "/api/connectors/feeds/{uuid}/data", self.feed_data)
        for path, collection in RESOURCE_PATHS.items():
            add("GET", f"/api/{path}", self._bind(self.find, collection))
            add("POST", f"/api/{path}", self._bind(self.create, collection))
            add("GET", f"/api/{path}/{{uuid}}", self._bind(self.get, collection))
            add("PATCH", f"/api/{path}/{{uuid}}", self._bind(self.update, collection))
            add("DELETE", f"/api/{path}/{{uuid}}", self._bind(self.delete, collection))
        add("GET", "/api/data", self.find_data)
        add("GET", "/api/data/{group}/{key}", self.get_data)
        add("PUT", "/api/data/{group}/{key}", self.put_data)
        add("DELETE", "/api/data/{group}/{key}", self.delete_data)
        add("GET", "/api/content", self.find_content)
        add("GET", "/api/content/{uuid}", self.get_content)
        add("GET", "/api/delivery/{path*}", self.delivery)
        add("POST", "/api/logs", self.logs)
        add("POST", "/api/networks/current/broadcasts", self.broadcast)
        add("POST", "/api/networks/current/responses", self.respond)
        add("GET", "/api/openapi.json", self.openapi)

    @staticmethod
    def _bind(handler: Any, collection: str) -> Any:
        async def bound(req: ApiRequest) -> Any:
            return await handler(req, collection)

        return bound

    # -- authentication -----------------------------------------------------

    async def login(self, req: ApiRequest) -> Any:
        body = req.document()
        if "token" in body:
            identity = await self._token_login(body["token"], req.peer)
        else:
            identity = await self._user_login(body, req.peer)
        return self._issue(identity, req)

    def _check_budget(self, peer: str, account: str) -> None:
        """
        Refuse an attempt of C{peer} on C{account} while the account is locked
        or the peer has used up its failures.

        @raise HttpError: 429, with C{Retry-After}.
        """
        locked = self._lockouts.locked(account)
        if locked:
            raise too_many("too many failed attempts on this account; it is locked for now",
                           locked, "auth.locked")
        wait = self._failures.wait(peer)
        if wait:
            raise too_many("too many failed attempts from this address; slow down", wait)

    def _failed(self, peer: str, account: str) -> None:
        self._failures.take(peer)
        self._lockouts.failed(account)

    async def _user_login(self, body: Document, peer: str) -> Identity:
        if body.get("type", USER) != USER:
            raise bad_request("auth.invalidRequest", "login needs a user's credentials or a token")
        fields = {k: body.get(k) for k in ("username", "password", "organization")}
        missing = [k for k, v in fields.items() if not isinstance(v, str) or not v]
        if missing:
            raise bad_request("auth.invalidRequest",
                              f"a user login needs {', '.join(missing)} (strings)")
        username, password, organization = (str(v) for v in fields.values())
        account = dumps([USER, organization, user_uuid(username)])
        self._check_budget(peer, account)
        user = await self.storage.get(organization, "users", user_uuid(username))
        # Checked even for an unknown user, so that the answer takes as long.
        good = await self.passwords.check(password, user["passwordHash"] if user else None)
        if user is None or not good:
            self._failed(peer, account)
            raise _unauthorized("wrong username, password or organization",
                                "auth.invalidCredentials")
        self._lockouts.succeeded(account)
        if needs_rehash(user["passwordHash"], self.passwords.cost):
            rehashed = await self.passwords.hash(password)
            await self.storage.update(organization, "users", user["uuid"],
                                      {"passwordHash": rehashed})
        return Identity(USER, user["id"], organization, username=user["username"])

    async def _token_login(self, token: Any, peer: str) -> Identity:
        try:
            claims = unverified_claims(token)
        except InvalidToken as e:
            raise _unauthorized(f"the login token is not valid: {e}") from None
        self._check_login_expiry(claims)
        kind, uuid = claims.get("type"), claims.get("uuid")
        pairing = kind == DEVICE and claims.get("allowPairing") is True
        if uuid is None and pairing:
            uuid = _NO_UUID  # the JS SDK's pairing login names no uuid
        if kind not in (DEVICE, CONSUMER_APP) or not isinstance(uuid, str):
            raise _unauthorized("a login token names a type (device or consumerApp) and a uuid")
        collection, secret_field = (
            ("devices", "secret") if kind == DEVICE else ("consumerApps", "apiKey")
        )
        account = dumps([kind, uuid])
        if uuid != _NO_UUID and not pairing:
            self._check_budget(peer, account)
        candidates = [] if uuid == _NO_UUID else await self.storage.lookup(
            collection, uuid)
        for organization, document in candidates:
            secret = document.get(secret_field)
            if not isinstance(secret, str):
                continue
            try:
                verify(token, secret)
            except InvalidToken:
                continue
            return Identity(kind, uuid, organization)
        if pairing:
            # Credentials missing ("_"), wrong or deleted: the official
            # clients sign with whatever secret they have, and expect to be
            # let in unpaired.  An unpaired identity may do nothing but wait.
            wait = self._unpaired.wait(peer)
            if wait:
                raise too_many("too many unpaired logins from this address; slow down", wait)
            self._unpaired.take(peer)
            return await self._pairing_identity()
        self._failed(peer, account)
        raise _unauthorized("the login token's credentials are wrong or expired",
                            "auth.invalidCredentials")

    def _check_login_expiry(self, claims: dict[str, Any]) -> None:
        """
        Refuse a login token without C{exp}, expired, or valid for longer
        than L{LOGIN_TOKEN_HORIZON} from now (C{exp} in seconds or, from
        older clients, milliseconds).
        """
        if "exp" not in claims:
            raise _unauthorized("a login token needs an exp claim")
        try:
            expires = to_seconds(claims["exp"])
        except InvalidToken as e:
            raise _unauthorized(f"the login token is not valid: {e}") from None
        now = self.reactor.seconds()
        if expires <= now:
            raise _unauthorized("the login token has expired", "auth.invalidCredentials")
        if expires > now + LOGIN_TOKEN_HORIZON:
            raise _unauthorized(
                f"the login token's exp is more than {LOGIN_TOKEN_HORIZON:g} s ahead")

    async def _pairing_identity(self) -> Identity:
        identity_uuid = f"pairing-{secrets.token_hex(12)}"
        for _ in range(20):
            code = pairing_code()
            expires = self.reactor.seconds() + self.config.pairing_code_lifetime
            stored = await self.storage.insert(
                NO_ORGANIZATION, "pairings",
                {"uuid": code, "identity": identity_uuid, "expires": expires},
                replace_uuid=False,
            )
            if stored is not None:
                return Identity(DEVICE, identity_uuid, NO_ORGANIZATION, paired=False,
                                pairing_code=code)
        raise HttpError(503, "pairing.busy", "no pairing code is free; try again")

    async def refresh(self, req: ApiRequest) -> Any:
        identity = self._identify(req)
        if identity.type == USER:
            exists = await self._user_exists(identity)
        elif identity.is_pairing:
            exists = self._live_pairing(await self.storage.get(
                NO_ORGANIZATION, "pairings", identity.pairing_code or ""))
        else:
            collection = "devices" if identity.type == DEVICE else "consumerApps"
            exists = await self.storage.get(
                identity.organization, collection, identity.uuid
            ) is not None
        if not exists:
            raise _unauthorized("the identity of this token no longer exists")
        return self._issue(identity, req)

    async def _user_exists(self, identity: Identity) -> bool:
        user = await self.storage.get(
            identity.organization, "users", user_uuid(identity.username or "")
        )
        return user is not None and user.get("id") == identity.uuid

    def _live_pairing(self, pairing: Document | None) -> bool:
        """Whether C{pairing} is a pairing code that has not expired."""
        return pairing is not None and float(pairing.get("expires", math.inf)) > (
            self.reactor.seconds())

    async def _purge_pairings(self) -> None:
        """Remove the pairing codes that have expired."""
        try:
            pairings, _ = await self.storage.find(NO_ORGANIZATION, "pairings", Query())
            for pairing in pairings:
                if not self._live_pairing(pairing):
                    await self.storage.delete(NO_ORGANIZATION, "pairings", pairing["uuid"])
        except Exception:
            self._log.failure("could not purge the expired pairing codes")

    async def pair(self, req: ApiRequest) -> Any:
        identity = self._writer(req)
        body = req.document()
        code = body.pop("pairingCode", None)
        if not isinstance(code, str) or not code:
            raise bad_request("pairing.codeRequired", "pairing needs a pairingCode")
        account = dumps(list(key_of(identity)))
        self._check_budget(req.peer, account)
        pairing = await self.storage.delete(NO_ORGANIZATION, "pairings", code.strip().upper())
        if not self._live_pairing(pairing):
            self._failed(req.peer, account)
            raise HttpError(404, "pairing.notFound", "no device is waiting with that code")
        assert pairing is not None
        if not isinstance(body.get("secret"), str) or not body["secret"]:
            body["secret"] = new_secret()
        device = await self.storage.insert(identity.organization, "devices",
                                           resource_defaults("devices", body))
        assert device is not None
        self.notify(identity.organization, device["uuid"], "create", device)
        self.notify(NO_ORGANIZATION, pairing["identity"], "paired",
                    {"uuid": device["uuid"], "secret": device["secret"]})
        return device

    async def device_status(self, req: ApiRequest) -> Any:
        """Whether a device has a network session on any process of the server."""
        identity = self._reader(req)
        uuid = req.match["uuid"]
        if await self.storage.get(identity.organization, "devices", uuid) is None:
            raise _not_found(f"device {uuid}")
        return {"uuid": uuid, "online": await self.presence.online(identity.organization, uuid)}

    # -- common resources ---------------------------------------------------

    def _query(self, req: ApiRequest, ignore: tuple[str, ...] = ()) -> Query:
        try:
            return Query.from_params(req.params, ignore=ignore)
        except InvalidQuery as e:
            raise bad_request("request.invalidParameter", str(e)) from None

    @staticmethod
    def _shown(identity: Identity, collection: str, document: Document) -> Document:
        if collection == "devices" and identity.is_consumer:
            return {k: v for k, v in document.items() if k != "secret"}
        return document

    async def find(self, req: ApiRequest, collection: str) -> Any:
        identity = self._reader(req)
        query = self._query(req)
        if collection == "devices" and identity.is_consumer:
            # A consumer app queries devices as it sees them, without their
            # secret, so that a find by secret cannot probe device secrets.
            if any(path.split(".")[0] == "secret" for path in query.filters):
                return {"results": [], "total": 0}
            if query.sort and query.sort.lstrip("-").split(".")[0] == "secret":
                query = attrs.evolve(query, sort=None)
        results, total = await self.storage.find(identity.organization, collection, query)
        return {"results": [self._shown(identity, collection, d) for d in results],
                "total": total}

    async def create(self, req: ApiRequest, collection: str) -> Any:
        identity = self._writer(req)
        document = resource_defaults(collection, req.document())
        if collection == "devices" and (
            not isinstance(document.get("secret"), str) or not document["secret"]
        ):
            document["secret"] = new_secret()
        stored = await self.storage.insert(identity.organization, collection, document)
        assert stored is not None
        self.notify(identity.organization, stored["uuid"], "create", stored)
        return stored

    async def get(self, req: ApiRequest, collection: str) -> Any:
        identity = self._reader(req)
        uuid = req.match["uuid"]
        document = await self.storage.get(identity.organization, collection, uuid)
        if document is None:
            raise _not_found(f"{collection[:-1]} {uuid}")
        return self._shown(identity, collection, document)

    async def update(self, req: ApiRequest, collection: str) -> Any:
        identity = self._writer(req)
        uuid = req.match["uuid"]
        fields = req.document()
        fields.pop("uuid", None)
        before = None
        if collection == "devices" and "secret" in fields:
            if not isinstance(fields["secret"], str) or not fields["secret"]:
                raise bad_request("device.invalidSecret", "a device's secret is a non-empty string")
            before = await self.storage.get(identity.organization, collection, uuid)
        document = await self.storage.update(identity.organization, collection, uuid, fields)
        if document is None:
            raise _not_found(f"{collection[:-1]} {uuid}")
        if before is not None and not same_secret(str(before.get("secret")), fields["secret"]):
            # Tokens signed in with the old secret die with it.
            await self.revocations.revoke((DEVICE, identity.organization, uuid))
        self.notify(identity.organization, uuid, "update", document)
        return document

    async def delete(self, req: ApiRequest, collection: str) -> Any:
        identity = self._writer(req)
        uuid = req.match["uuid"]
        document = await self.storage.delete(identity.organization, collection, uuid)
        if document is None:
            raise _not_found(f"{collection[:-1]} {uuid}")
        self.notify(identity.organization, uuid, "delete", document)
        if collection == "devices":
            await self.revocations.revoke((DEVICE, identity.organization, uuid))
        return None

    # -- locations and feeds --------------------------------------------------

    async def get_layout(self, req: ApiRequest) -> Any:
        identity = self._identify(req, restricted_ok=True)
        if identity.is_pairing:
            raise _forbidden("an unpaired device can only wait to be paired", "device.unpaired")
        blob = await self.storage.get_blob(identity.organization, f"layout:{req.match['uuid']}")
        if blob is None:
            raise HttpError(404, "layout.notFound", "this location has no layout image")
        req.http.setHeader(b"x-content-type-options", b"nosniff")
        req.http.setHeader(b"content-security-policy", CONTENT_POLICY)
        return Raw(*blob)

    async def put_layout(self, req: ApiRequest) -> Any:
        identity = self._writer(req)
        uuid = req.match["uuid"]
        content_type = (req.header("content-type") or "").split(";")[0].strip().lower()
        if content_type not in LAYOUT_TYPES:
            raise bad_request("layout.notImage", "a layout is uploaded as the bytes of a "
                              f"raster image: {', '.join(sorted(LAYOUT_TYPES))}")
        image = req.body_bytes()
        if not image:
            raise bad_request("request.bodyRequired", "the layout image is empty")
        if await self.storage.get(identity.organization, "locations", uuid) is None:
            raise _not_found(f"location {uuid}")
        await self.storage.put_blob(identity.organization, f"layout:{uuid}", content_type, image)
        return None

    async def feed_data(self, req: ApiRequest) -> Any:
        identity = self._reader(req)
        uuid = req.match["uuid"]
        feed = await self.storage.get(identity.organization, "feeds", uuid)
        if feed is None:
            raise _not_found(f"feed {uuid}")
        return await self.feeds.fetch(feed, req.param("searchValue"))

    # -- data -----------------------------------------------------------------

    async def find_data(self, req: ApiRequest) -> Any:
        identity = self._reader(req)
        results, total = await self.storage.find(identity.organization, "data", self._query(req))
        return {"results": [_public_item(d) for d in results], "total": total}

    async def get_data(self, req: ApiRequest) -> Any:
        identity = self._reader(req)
        group, key = req.match["group"], req.match["key"]
        item = await self.storage.get(identity.organization, "data", data_uuid(group, key))
        if item is None:
            raise _not_found(f"data item {group}/{key}")
        return _public_item(item)

    async def put_data(self, req: ApiRequest) -> Any:
        identity = self._writer(req)
        group, key = req.match["group"], req.match["key"]
        item = {"group": group, "key": key, "value": req.json()}
        _, created = await self.storage.put(
            identity.organization, "data", data_uuid(group, key), dict(item)
        )
        self._notify_data(identity.organization, group, key,
                          "create" if created else "update", item)
        return item

    async def delete_data(self, req: ApiRequest) -> Any:
        identity = self._writer(req)
        group, key = req.match["group"], req.match["key"]
        item = await self.storage.delete(identity.organization, "data", data_uuid(group, key))
        if item is None:
            raise _not_found(f"data item {group}/{key}")
        self._notify_data(identity.organization, group, key, "delete", _public_item(item))
        return None

    def _notify_data(self, organization: str, group: str, key: str, event: str,
                     item: Document) -> None:
        """
        Announce a change of a data item on its channel, C{data:<group>:<key>},
        and on C{data:<key>:<group>}, the name the official JS SDK listens on.
        """
        for name in dict.fromkeys((f"data:{group}:{key}", f"data:{key}:{group}")):
            self.notify(organization, name, event, item)

    # -- content --------------------------------------------------------------

    def _content_root(self, identity: Identity) -> str | None:
        return self._content_roots.get(identity.organization, self.config.content)

    async def _content_items(self, identity: Identity) -> list[Document]:
        root = self._content_root(identity)
        if root is None:
            return []
        return await deferToThread(_content.scan, root)

    async def find_content(self, req: ApiRequest) -> Any:
        identity = self._reader(req)
        query = self._query(req)
        results, total = query.run(await self._content_items(identity))
        return {"results": results, "total": total}

    async def get_content(self, req: ApiRequest) -> Any:
        identity = self._reader(req)
        uuid = req.match["uuid"]
        for item in await self._content_items(identity):
            if item["uuid"] == uuid:
                return item
        raise _not_found(f"content {uuid}")

    async def delivery(self, req: ApiRequest) -> Any:
        path_token, path = _split_path_token(req.match["path"])
        identity = self._identify(req, restricted_ok=True, path_token=path_token)
        if identity.is_pairing:
            raise _forbidden("an unpaired device can only wait to be paired", "device.unpaired")
        root = self._content_root(identity)
        filename = in_app = None
        if root is not None:
            filename, in_app = await deferToThread(_content.resolve_in_app, root, path,
                                                   req.param("variant"))
        if filename is None:
            raise _not_found(f"content {path}")
        query_token = req.param("_rt")
        if in_app and query_token and path_token is None:
            # The app's own files are loaded by URLs relative to this one:
            # move the token into the path, where they find it.
            return Redirect(f"/api/delivery/{PATH_TOKEN}{quote(query_token, safe='')}/"
                            f"{quote(path.lstrip('/'))}")
        req.http.setHeader(b"x-content-type-options", b"nosniff")
        req.http.setHeader(b"content-security-policy", CONTENT_POLICY)
        ranges = req.header("range")
        if ranges is not None and ranges.count(",") >= MAX_RANGES:
            req.http.requestHeaders.removeHeader(b"range")
        return Delegate(static.File(filename))

    # -- logs and the network's REST side -------------------------------------

    async def logs(self, req: ApiRequest) -> Any:
        identity = self._reader(req)
        entries = req.json()
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise bad_request("logs.invalid", "logs are a JSON array of objects")
        if entries:
            await self.storage.add_logs(identity.organization, identity.to_json(), entries)
        return None

    async def broadcast(self, req: ApiRequest) -> Any:
        identity = self._reader(req)
        timeout = self._timeout(req.param("timeout"))
        body = req.document()
        channel = self._channel(identity, body.get("channel"), send=True)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request("broadcast.nameRequired", "a broadcast needs a name (a string)")
        return await self.hub.broadcast(
            channel.encode(), name, body.get("payload"), timeout,
            max_responses=self.config.max_responses,
            max_bytes=self.config.max_response_bytes)

    def _timeout(self, raw: str | None) -> float:
        if raw is None or raw.strip() in UNSET:
            return 0.0
        try:
            value = float(raw) / 1000.0
        except ValueError:
            raise bad_request("request.invalidParameter",
                              f"timeout is in milliseconds, not {raw!r}") from None
        if not math.isfinite(value) or value < 0:
            raise bad_request("request.invalidParameter", "timeout must be a positive number")
        return min(value, self.config.max_broadcast_timeout)

    async def respond(self, req: ApiRequest) -> Any:
        identity = self._reader(req)
        body = req.document()
        channel = self._channel(identity, body.get("channel"), send=False)
        broadcast_id = body.get("id")
        if not isinstance(broadcast_id, str) or not broadcast_id:
            raise bad_request("response.idRequired", "a response names its broadcast's id")
        self.hub.respond(broadcast_id, channel.encode(), body.get("payload"))
        return None

    async def openapi(self, req: ApiRequest) -> Any:
        """The OpenAPI 3.0 description of this API, with this server's URL."""
        return dict(openapi_document(), servers=[{"url": self._public_url(req)}])


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0 description of the REST API shipped in the package."""
    text = importlib_resources.files("exp.server").joinpath("openapi.json").read_text("utf-8")
    return dict(json.loads(text))


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
