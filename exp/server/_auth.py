"""
Identities, password hashing and the server's own tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import uuid as uuidlib
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from exp.protocol import ChannelId, InvalidToken, sign, to_seconds, verify

#: scrypt's cost, as log2 of N: OWASP's current recommendation (N = 2**17,
#: r = 8, p = 1; 128 MiB and about 0.3 s a hash on a current core).
PASSWORD_COST = 17
_SCRYPT_R, _SCRYPT_P = 8, 1
#: The highest cost a stored hash may ask for (log2 of N).
_MAX_COST = 20

#: The types of identity: a person with a password, a device with a
#: secret, a consumer app with an api key.
USER, DEVICE, CONSUMER_APP = "user", "device", "consumerApp"

#: The organization of unpaired devices: they belong to none yet.
NO_ORGANIZATION = ""


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int = 64) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen,
                          maxmem=256 * n * r + (1 << 20))


def hash_password(password: str, cost: int = PASSWORD_COST) -> str:
    """A salted scrypt hash of C{password} (N = 2**C{cost}), self-describing."""
    salt = os.urandom(16)
    n = 2**cost
    digest = _scrypt(password, salt, n, _SCRYPT_R, _SCRYPT_P)
    fields = [str(n), str(_SCRYPT_R), str(_SCRYPT_P),
              base64.b64encode(salt).decode(), base64.b64encode(digest).decode()]
    return "$".join(["scrypt", *fields])


def check_password(password: str, stored: str) -> bool:
    """Whether C{password} matches a hash of L{hash_password}, in constant time."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt" or not 1 < int(n) <= 2**_MAX_COST:
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p),
                         len(expected))
    except (ValueError, TypeError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected)


def needs_rehash(stored: str, cost: int = PASSWORD_COST) -> bool:
    """Whether a hash of L{hash_password} is cheaper than C{cost} asks."""
    try:
        return int(stored.split("$")[1]) < 2**cost
    except (IndexError, ValueError):
        return True


class PasswordHasher:
    """
    scrypt on a small thread pool of its own: a flood of logins delays other
    logins, not the rest of the API on the reactor's shared pool.
    """

    def __init__(self, reactor: Any, cost: int = PASSWORD_COST, threads: int = 2) -> None:
        #: scrypt's cost of new hashes, as log2 of N.
        self.cost = cost
        self._reactor = reactor
        self._pool = ThreadPool(0, threads, name="exp-password-hashing")
        self._dummy: str | None = None

    def start(self) -> None:
        """Start the pool's threads."""
        self._pool.start()

    def stop(self) -> None:
        """Stop the pool's threads."""
        self._pool.stop()

    def hash(self, password: str) -> Deferred[str]:
        """A new hash of C{password} (L{hash_password}), computed on the pool."""
        return deferToThreadPool(self._reactor, self._pool, hash_password, password, self.cost)

    async def check(self, password: str, stored: str | None) -> bool:
        """
        Whether C{password} matches C{stored}; with none (an unknown user),
        C{False} after as long as a check takes.
        """
        if stored is None:
            if self._dummy is None:
                self._dummy = await self.hash(secrets.token_hex(8))
            stored = self._dummy
            await deferToThreadPool(self._reactor, self._pool, check_password, password, stored)
            return False
        return bool(await deferToThreadPool(self._reactor, self._pool, check_password,
                                            password, stored))


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def new_secret() -> str:
    """A fresh device secret or api key."""
    return secrets.token_urlsafe(32)


def pairing_code() -> str:
    """A short code a person can read off a screen and type."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(6))


@attrs.frozen
class Identity:
    """
    Who a request or a connection acts for.

    @ivar type: L{USER}, L{DEVICE} or L{CONSUMER_APP}.
    @ivar uuid: its uuid (a user's C{id}; C{pairing-...} for an unpaired device).
    @ivar organization: the organization it acts in (L{NO_ORGANIZATION} for
        an unpaired device).
    @ivar username: a user's name.
    @ivar paired: whether a device is paired.
    @ivar pairing_code: the code an unpaired device shows.
    @ivar restricted: whether its token is a restricted one (good only for
        delivery and layout URLs).
    """

    type: str
    uuid: str
    organization: str
    username: str | None = None
    paired: bool = True
    pairing_code: str | None = None
    restricted: bool = False
    #: The credential its token carries (L{exp.server._revocation}).
    credential: str = ""

    @property
    def is_consumer(self) -> bool:
        """Whether it is a consumer app."""
        return self.type == CONSUMER_APP

    @property
    def is_pairing(self) -> bool:
        """Whether it is a device waiting to be paired."""
        return self.type == DEVICE and not self.paired

    def to_json(self) -> dict[str, Any]:
        """The C{identity} of an auth payload."""
        out: dict[str, Any] = {
            "type": self.type, "uuid": self.uuid, "organization": self.organization,
        }
        if self.username is not None:
            out["username"] = self.username
        if self.type == DEVICE:
            out["paired"] = self.paired
        if self.pairing_code is not None:
            out["pairingCode"] = self.pairing_code
        return out


def _global_clock() -> IReactorTime:
    from twisted.internet import reactor

    return reactor


#: How many verified tokens L{TokenIssuer} remembers.
TOKEN_CACHE_SIZE = 4096


@attrs.frozen
class TokenIssuer:
    """
    Signs and verifies the server's own tokens with its key.  A verified
    token is remembered with its identity (its expiry still checked on every
    use), so that a client's every request does not pay for HMAC and JSON.
    """

    #: The key tokens are signed with.
    key: str
    #: Seconds a token is good for.
    lifetime: float = 3600.0
    #: The clock of issue and expiry (the global reactor if none is given).
    clock: IReactorTime = attrs.field(factory=_global_clock, kw_only=True, eq=False,
                                      repr=False)
    _verified: dict[str, tuple[Identity, float]] = attrs.field(
        factory=dict, init=False, eq=False, repr=False)

    def issue(self, identity: Identity, public_url: str) -> dict[str, Any]:
        """The auth payload of PROTOCOL.md A2 for C{identity}."""
        now = self.clock.seconds()
        expires = now + self.lifetime
        claims = {
            "typ": identity.type, "sub": identity.uuid, "org": identity.organization,
            "iat": int(now), "exp": int(expires), "jti": uuidlib.uuid4().hex,
        }
        if identity.username is not None:
            claims["usr"] = identity.username
        if identity.is_pairing:
            claims["pair"] = identity.pairing_code
        if identity.credential:
            claims["cred"] = identity.credential
        payload: dict[str, Any] = {
            "token": sign(claims, self.key),
            "expiration": int(expires * 1000),
            "identity": identity.to_json(),
            "api": {"host": public_url},
            "network": {"host": public_url},
        }
        if not identity.is_pairing:
            payload["restrictedToken"] = sign(dict(claims, rt=True), self.key)
        return payload

    def identify(self, token: object) -> Identity:
        """
        The identity a server token stands for.

        @raise InvalidToken: if the token is not one of ours or has expired.
        """
        if isinstance(token, str):
            known = self._verified.get(token)
            if known is not None:
                if known[1] > self.clock.seconds():
                    return known[0]
                del self._verified[token]
        identity, expires = self._identify(token)
        if len(self._verified) >= TOKEN_CACHE_SIZE:
            self._verified.clear()
        self._verified[str(token)] = (identity, expires)
        return identity

    def _identify(self, token: object) -> tuple[Identity, float]:
        claims = verify(token, self.key, now=self.clock.seconds())
        try:
            kind, uuid, org = claims["typ"], claims["sub"], claims["org"]
        except KeyError as e:
            raise InvalidToken(f"token lacks the {e.args[0]} claim") from None
        if not all(isinstance(v, str) for v in (kind, uuid, org)) or "exp" not in claims:
            raise InvalidToken("token claims are malformed")
        identity = Identity(
            type=kind, uuid=uuid, organization=org, username=claims.get("usr"),
            paired="pair" not in claims, pairing_code=claims.get("pair"),
            restricted=bool(claims.get("rt")), credential=str(claims.get("cred", "")),
        )
        return identity, to_seconds(claims["exp"])


def channel_allowed(identity: Identity, channel: ChannelId, *, send: bool) -> bool:
    """
    Whether C{identity} may broadcast on (C{send}) or listen to C{channel}
    (PROTOCOL.md A3 and Part B).
    """
    if identity.restricted or channel.organization != identity.organization:
        return False
    if identity.is_pairing:
        return not send and channel.system and channel.name == identity.uuid
    if send and channel.system:
        return False
    return channel.consumer or not identity.is_consumer
