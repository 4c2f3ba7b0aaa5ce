"""
The routes of authentication: logins (users with passwords, devices and
consumer apps with login tokens, unpaired devices), token refreshes, and the
pairing of a waiting device.
"""

from __future__ import annotations

from typing import Any

from exp.protocol import InvalidToken, to_seconds, unverified_claims, verify
from exp.server._auth import CONSUMER_APP, DEVICE, NO_ORGANIZATION, USER, Identity, needs_rehash
from exp.server._collections import DEVICES
from exp.server._policy import Action
from exp.server._revocation import key_of
from exp.server._seam import Server
from exp.server._seed import user_uuid
from exp.server._storage import Document, dumps
from exp.server._web import ApiRequest, HttpError, Routes, bad_request, unauthorized

#: The uuid of a device login that has none (it asks to pair).
_NO_UUID = "_"
#: The furthest ahead (seconds) a login token's C{exp} may be: the official
#: JS SDK signs C{iat + 24 h}; five minutes more for clocks that disagree.
LOGIN_TOKEN_HORIZON = 86400.0 + 300.0

#: The routes of this module, in the order declared.
routes: Routes[Server] = Routes()


@routes.post("/api/auth/login")
async def login(server: Server, req: ApiRequest) -> Any:
    """Log in with a user's credentials or a device's or consumer app's login token."""
    body = req.document()
    if "token" in body:
        identity = await _token_login(server, body["token"], req.peer)
    else:
        identity = await _user_login(server, body, req.peer)
    return server.policy.issue(identity, server.public_url(req))


async def _user_login(server: Server, body: Document, peer: str) -> Identity:
    if body.get("type", USER) != USER:
        raise bad_request("auth.invalidRequest", "login needs a user's credentials or a token")
    fields = {k: body.get(k) for k in ("username", "password", "organization")}
    missing = [k for k, v in fields.items() if not isinstance(v, str) or not v]
    if missing:
        raise bad_request("auth.invalidRequest",
                          f"a user login needs {', '.join(missing)} (strings)")
    username, password, organization = (str(v) for v in fields.values())
    account = dumps([USER, organization, user_uuid(username)])
    server.budgets.check(peer, account)
    user = await server.storage.get(organization, "users", user_uuid(username))
    # Checked even for an unknown user, so that the answer takes as long.
    good = await server.passwords.check(password, user["passwordHash"] if user else None)
    if user is None or not good:
        server.budgets.failed(peer, account)
        raise unauthorized("wrong username, password or organization",
                           "auth.invalidCredentials")
    server.budgets.succeeded(account)
    if needs_rehash(user["passwordHash"], server.passwords.cost):
        rehashed = await server.passwords.hash(password)
        await server.storage.update(organization, "users", user["uuid"],
                                    {"passwordHash": rehashed})
    return Identity(USER, user["id"], organization, username=user["username"])


async def _token_login(server: Server, token: Any, peer: str) -> Identity:
    try:
        claims = unverified_claims(token)
    except InvalidToken as e:
        raise unauthorized(f"the login token is not valid: {e}") from None
    _check_login_expiry(claims, server.reactor.seconds())
    kind, uuid = claims.get("type"), claims.get("uuid")
    pairing = kind == DEVICE and claims.get("allowPairing") is True
    if uuid is None and pairing:
        uuid = _NO_UUID  # the JS SDK's pairing login names no uuid
    if kind not in (DEVICE, CONSUMER_APP) or not isinstance(uuid, str):
        raise unauthorized("a login token names a type (device or consumerApp) and a uuid")
    collection, secret_field = (
        ("devices", "secret") if kind == DEVICE else ("consumerApps", "apiKey")
    )
    account = dumps([kind, uuid])
    if uuid != _NO_UUID and not pairing:
        server.budgets.check(peer, account)
    candidates = [] if uuid == _NO_UUID else await server.storage.lookup(collection, uuid)
    for organization, document in candidates:
        secret = document.get(secret_field)
        if not isinstance(secret, str):
            continue
        try:
            verify(token, secret, now=server.reactor.seconds())
        except InvalidToken:
            continue
        return Identity(kind, uuid, organization)
    if pairing:
        # Credentials missing ("_"), wrong or deleted: the official
        # clients sign with whatever secret they have, and expect to be
        # let in unpaired.  An unpaired identity may do nothing but wait.
        server.budgets.unpaired_login(peer)
        return await server.pairings.new_identity()
    server.budgets.failed(peer, account)
    raise unauthorized("the login token's credentials are wrong or expired",
                       "auth.invalidCredentials")


def _check_login_expiry(claims: dict[str, Any], now: float) -> None:
    """
    Refuse a login token without C{exp}, expired, or valid for longer
    than L{LOGIN_TOKEN_HORIZON} from C{now} (C{exp} in seconds or, from
    older clients, milliseconds).
    """
    if "exp" not in claims:
        raise unauthorized("a login token needs an exp claim")
    try:
        expires = to_seconds(claims["exp"])
    except InvalidToken as e:
        raise unauthorized(f"the login token is not valid: {e}") from None
    if expires <= now:
        raise unauthorized("the login token has expired", "auth.invalidCredentials")
    if expires > now + LOGIN_TOKEN_HORIZON:
        raise unauthorized(
            f"the login token's exp is more than {LOGIN_TOKEN_HORIZON:g} s ahead")


@routes.post("/api/auth/token")
async def refresh(server: Server, req: ApiRequest) -> Any:
    """A new auth payload for the identity of the request's token, if it still exists."""
    identity = server.policy.allow(req, Action.REFRESH)
    if identity.type == USER:
        exists = await _user_exists(server, identity)
    elif identity.is_pairing:
        exists = await server.pairings.waiting(identity.pairing_code or "")
    else:
        collection = "devices" if identity.type == DEVICE else "consumerApps"
        exists = await server.storage.get(
            identity.organization, collection, identity.uuid
        ) is not None
    if not exists:
        raise unauthorized("the identity of this token no longer exists")
    return server.policy.issue(identity, server.public_url(req))


async def _user_exists(server: Server, identity: Identity) -> bool:
    user = await server.storage.get(
        identity.organization, "users", user_uuid(identity.username or "")
    )
    return user is not None and user.get("id") == identity.uuid


@routes.post("/api/devices/pair")
async def pair(server: Server, req: ApiRequest) -> Any:
    """Create the device that waits with C{pairingCode}, from the rest of the body."""
    identity = server.policy.allow(req, Action.PAIR)
    body = req.document()
    code = body.pop("pairingCode", None)
    if not isinstance(code, str) or not code:
        raise bad_request("pairing.codeRequired", "pairing needs a pairingCode")
    account = dumps(list(key_of(identity)))
    server.budgets.check(req.peer, account)
    pairing = await server.pairings.take(code.strip().upper())
    if pairing is None:
        server.budgets.failed(req.peer, account)
        raise HttpError(404, "pairing.notFound", "no device is waiting with that code")
    device = await server.storage.insert(identity.organization, DEVICES.name,
                                         DEVICES.new(body))
    assert device is not None
    server.notify(identity.organization, device["uuid"], "create", device)
    server.notify(NO_ORGANIZATION, pairing["identity"], "paired",
                  {"uuid": device["uuid"], "secret": device["secret"]})
    return device
