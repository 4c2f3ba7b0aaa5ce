"""
Auth tokens of PROTOCOL.md A2: HS256 JWTs, whose C{exp} may be in seconds
or (older clients) in milliseconds.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm

#: The only signature algorithm of EXP tokens (HMAC with SHA-256).
ALGORITHM = "HS256"

#: An C{exp}/C{iat} above this is in milliseconds (PROTOCOL.md A2).
MILLISECONDS_THRESHOLD = 10**11


class _HS256(HMACAlgorithm):
    """
    HS256 without PyJWT's advice on key length: EXP signs device and
    consumer tokens with secrets and api keys that users choose, often
    shorter than RFC 7518 recommends.  That is the protocol.
    """

    def check_key_length(self, key: bytes) -> str | None:
        return None


_jws = jwt.PyJWS(algorithms=[])
_jws.register_algorithm(ALGORITHM, _HS256(HMACAlgorithm.SHA256))


class InvalidToken(ValueError):
    """A token that is malformed, badly signed or expired."""


def to_seconds(value: object) -> float:
    """
    Normalise a JWT time claim to seconds since the epoch.

    @raise InvalidToken: if C{value} is not a finite number a float can hold.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidToken("a time claim must be a number")
    try:
        seconds = value / 1000.0 if value > MILLISECONDS_THRESHOLD else float(value)
    except OverflowError:
        raise InvalidToken("a time claim is out of range") from None
    if not math.isfinite(seconds):
        raise InvalidToken("a time claim must be a finite number")
    return seconds


def sign(claims: dict[str, Any], key: str | bytes) -> str:
    """Sign C{claims} with C{key} (HS256)."""
    body = json.dumps(claims, separators=(",", ":")).encode("utf-8")
    return _jws.encode(body, key, algorithm=ALGORITHM)


def _claims(payload: bytes) -> dict[str, Any]:
    try:
        claims = json.loads(payload)
    except (ValueError, RecursionError):
        raise InvalidToken("token claims are not JSON") from None
    if not isinstance(claims, dict):
        raise InvalidToken("token claims must be an object")
    return claims


def unverified_claims(token: object) -> dict[str, Any]:
    """
    The claims of C{token} before its signature is checked (to find the key).

    @raise InvalidToken: if the token cannot be parsed or is not signed
        with HS256 (so could never be verified).
    """
    if not isinstance(token, str) or not token.isascii():
        raise InvalidToken("a token is an ASCII string")
    try:
        decoded = _jws.decode_complete(token, options={"verify_signature": False})
    except jwt.PyJWTError as e:
        raise InvalidToken(str(e)) from None
    if decoded["header"].get("alg") != ALGORITHM:
        raise InvalidToken(f"a token is signed with {ALGORITHM}")
    return _claims(decoded["payload"])


def verify(token: object, key: str | bytes, now: float | None = None) -> dict[str, Any]:
    """
    Check the signature and expiry of C{token} and return its claims.

    @param now: the time to check the expiry against, seconds since the
        epoch (the system clock's if none: pass the reactor's).

    @raise InvalidToken: if the token is malformed, not signed with C{key}
        using HS256, or expired.
    """
    if not isinstance(token, str) or not token.isascii():
        raise InvalidToken("a token is an ASCII string")
    try:
        payload = _jws.decode(token, key, algorithms=[ALGORITHM])
    except jwt.PyJWTError as e:
        raise InvalidToken(str(e)) from None
    claims = _claims(payload)
    if "exp" in claims:
        if to_seconds(claims["exp"]) <= (time.time() if now is None else now):
            raise InvalidToken("token has expired")
    return claims


def _login_token(claims: dict[str, Any], key: str, lifetime: float, now: float | None) -> str:
    """C{claims} signed with C{key}, issued at C{now} and good for C{lifetime} seconds."""
    issued = int(time.time() if now is None else now)
    return sign({**claims, "iat": issued, "exp": issued + int(lifetime)}, key)


def device_token(uuid: str, secret: str, allow_pairing: bool = False,
                 lifetime: float = 3600.0, now: float | None = None) -> str:
    """
    The login token of a device (pairing devices sign with C{"_"}/C{"_"}).

    @param allow_pairing: let the device in unpaired if its credentials do
        not log in.
    @param lifetime: seconds the token is good for.
    @param now: the time of issue, seconds since the epoch (the system
        clock's if none).
    """
    return _login_token({"type": "device", "uuid": uuid, "allowPairing": allow_pairing},
                        secret, lifetime, now)


def consumer_app_token(uuid: str, api_key: str, lifetime: float = 3600.0,
                       now: float | None = None) -> str:
    """
    The login token of a consumer app.

    @param lifetime: seconds the token is good for.
    @param now: the time of issue, seconds since the epoch (the system
        clock's if none).
    """
    return _login_token({"type": "consumerApp", "uuid": uuid}, api_key, lifetime, now)
