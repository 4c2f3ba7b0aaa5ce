"""
The local EXP server: the REST API of PROTOCOL.md A2, A4 and A6 with the
rules of Part B, over an L{IStorage} and an L{IHub}.
"""

from __future__ import annotations

import functools
import json
import math
import re
import secrets
import uuid as uuidlib
from importlib import resources as importlib_resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
from treq.client import HTTPClient
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web import http, resource, server, static
from twisted.web.client import Agent, HTTPConnectionPool

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
    USER,
    Identity,
    TokenIssuer,
    channel_allowed,
    check_password,
    hash_password,
    new_secret,
    pairing_code,
    same_secret,
)
from exp.server._hub import MAX_RESPONSE_BYTES, MAX_RESPONSES, IHub, LocalHub
from exp.server._network import (
    MAX_SESSION_MESSAGES,
    MAX_SESSION_QUEUE,
    MAX_SESSIONS_PER_IDENTITY,
    MAX_SUBSCRIPTIONS,
    EngineIOResource,
    Limits,
    Network,
)
from exp.server._query import UNSET, InvalidQuery, Query
from exp.server._revocation import Key, Revocations, key_of
from exp.server._seed import (
    Organization,
    apply_seed,
    data_uuid,
    resource_defaults,
    user_uuid,
)
from exp.server._storage import Document, IStorage, SQLiteStorage
from exp.server._web import (
    ApiRequest,
    Delegate,
    HttpError,
    LimitedRequest,
    NotFound,
    Raw,
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
#: The uuid of a device login that has none (it asks to pair).
_NO_UUID = "_"
#: The furthest ahead (seconds) a login token's C{exp} may be: the official
#: JS SDK signs C{iat + 24 h}; five minutes more for clocks that disagree.
LOGIN_TOKEN_HORIZON = 86400.0 + 300.0
#: A layout's media type: C{image/} and a subtype (RFC 6838), lowercased.
_IMAGE_TYPE = re.compile(r"image/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
#: Checked against when a user is unknown, so that answers take as long.
_DUMMY_HASH = hash_password(secrets.token_hex(8))


@attrs.define
class ServerConfig:
    """
    The server's settings.

    @ivar public_url: the URL clients are told to use for REST and the
        network; by default the scheme and Host of each login request.
    @ivar content: the content folder of organizations whose seed names none.
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


def _referring_token(req: ApiRequest) -> str | None:
    """
    The C{_rt} of the delivery URL that refers to C{req}: an app's
    C{index.html} loads its own files by relative URLs, which carry no token.
    """
    referer = req.header("referer")
    if not referer:
        return None
    parts = urlsplit(referer)
    if not parts.path.startswith("/api/delivery/"):
        return None
    values = parse_qs(parts.query).get("_rt")
    return values[-1] if values else None


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
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self.http = HTTPClient(Agent(reactor, pool=self._pool))
        self.tokens: TokenIssuer | None = None
        self.revocations = Revocations(storage, self.hub, reactor, self.config.token_lifetime,
                                       self._revoked)
        self.router = Router()
        self._add_routes()
        self.network = Network(
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

    async def start(self) -> None:
        """Open the storage, load the signing key and apply the seed."""
        await self.storage.open()
        key = await self.storage.setting("signingKey", lambda: secrets.token_urlsafe(48))
        self.tokens = TokenIssuer(key, self.config.token_lifetime)
        await apply_seed(self.storage, self._seed)
        await self.hub.open(await self.storage.setting("deployment", lambda: uuidlib.uuid4().hex))
        await self.revocations.start()

    async def stop(self) -> None:
        """Close outgoing connections, the hub and the storage."""
        self.revocations.stop()
        self.network.close_all()
        await self.hub.close()
        await self._pool.closeCachedConnections()
        await self.storage.close()

    def resource(self) -> resource.Resource:
        """The root of the server's web tree."""
        root = _Root()
        root.putChild(b"api", self.router)
        root.putChild(b"socket.io", EngineIOResource(self.network))
        return root

    def site(self) -> server.Site:
        kind = server.Site if self.config.access_log else _QuietSite
        site = kind(self.resource(), requestFactory=LimitedRequest,
                    logFormatter=access_log_formatter)
        site.max_body = self.config.max_body  # type: ignore[attr-defined]
        site.displayTracebacks = False
        return site

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

    def _identify(self, req: ApiRequest, restricted_ok: bool = False) -> Identity:
        header = req.header("authorization") or ""
        token: str | None = None
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise _unauthorized("the Authorization header must be 'Bearer <token>'")
            token = value.strip()
        elif restricted_ok:
            token = req.param("_rt") or _referring_token(req)
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

    # -- routes -------------------------------------------------------------

    def _add_routes(self) -> None:
        add = self.router.add
        add("POST", "/api/auth/login", self.login)
        add("POST", "/api/auth/token", self.refresh)
        add("POST", "/api/devices/pair", self.pair)
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
            identity = await self._token_login(body["token"])
        else:
            identity = await self._user_login(body)
        return self._issue(identity, req)

    async def _user_login(self, body: Document) -> Identity:
        if body.get("type", USER) != USER:
            raise bad_request("auth.invalidRequest", "login needs a user's credentials or a token")
        fields = {k: body.get(k) for k in ("username", "password", "organization")}
        missing = [k for k, v in fields.items() if not isinstance(v, str) or not v]
        if missing:
            raise bad_request("auth.invalidRequest",
                              f"a user login needs {', '.join(missing)} (strings)")
        username, password, organization = (str(v) for v in fields.values())
        user = await self.storage.get(organization, "users", user_uuid(username))
        stored = user["passwordHash"] if user else _DUMMY_HASH
        good = await deferToThread(check_password, password, stored)
        if user is None or not good:
            raise _unauthorized("wrong username, password or organization",
                                "auth.invalidCredentials")
        return Identity(USER, user["id"], organization, username=user["username"])

    async def _token_login(self, token: Any) -> Identity:
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
            return await self._pairing_identity()
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
            stored = await self.storage.insert(
                NO_ORGANIZATION, "pairings",
                {"uuid": code, "identity": identity_uuid}, replace_uuid=False,
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
            exists = await self.storage.get(
                NO_ORGANIZATION, "pairings", identity.pairing_code or ""
            ) is not None
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

    async def pair(self, req: ApiRequest) -> Any:
        identity = self._writer(req)
        body = req.document()
        code = body.pop("pairingCode", None)
        if not isinstance(code, str) or not code:
            raise bad_request("pairing.codeRequired", "pairing needs a pairingCode")
        pairing = await self.storage.delete(NO_ORGANIZATION, "pairings", code.strip().upper())
        if pairing is None:
            raise HttpError(404, "pairing.notFound", "no device is waiting with that code")
        if not isinstance(body.get("secret"), str) or not body["secret"]:
            body["secret"] = new_secret()
        device = await self.storage.insert(identity.organization, "devices",
                                           resource_defaults("devices", body))
        assert device is not None
        self.notify(identity.organization, device["uuid"], "create", device)
        self.notify(NO_ORGANIZATION, pairing["identity"], "paired",
                    {"uuid": device["uuid"], "secret": device["secret"]})
        return device

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
        return Raw(*blob)

    async def put_layout(self, req: ApiRequest) -> Any:
        identity = self._writer(req)
        uuid = req.match["uuid"]
        content_type = (req.header("content-type") or "").split(";")[0].strip().lower()
        if not _IMAGE_TYPE.fullmatch(content_type):
            raise bad_request("layout.notImage", "a layout is uploaded as image/* bytes")
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
        return await _feeds.fetch(self.http, feed, req.param("searchValue"))

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
        identity = self._identify(req, restricted_ok=True)
        if identity.is_pairing:
            raise _forbidden("an unpaired device can only wait to be paired", "device.unpaired")
        root = self._content_root(identity)
        path = req.match["path"]
        filename = None
        if root is not None:
            filename = await deferToThread(_content.resolve, root, path, req.param("variant"))
        if filename is None:
            raise _not_found(f"content {path}")
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
        return NotFound()


class _QuietSite(server.Site):
    """A site that writes no access log (C{--no-access-log})."""

    def log(self, request: http.Request) -> None:
        pass
