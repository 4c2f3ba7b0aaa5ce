"""
The options of C{exp.start} and L{exp.twisted.ExpService}, checked before
any I/O so that a mistake is reported at once, naming what is wrong.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import attrs

from exp.errors import RuntimeError, UnexpectedError

DEFAULT_HOST = "https://api.goexp.io"

USER, DEVICE, CONSUMER_APP, PAIRING = "user", "device", "consumerApp", "pairing"

KNOWN = ("username", "password", "organization", "uuid", "secret", "api_key",
         "allow_pairing", "host", "enable_network", "auth")


@attrs.frozen
class Options:
    """Validated options: one kind of credentials, the host, the flags."""

    kind: str
    host: str = DEFAULT_HOST
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    organization: str | None = None
    uuid: str | None = None
    secret: str | None = attrs.field(default=None, repr=False)
    api_key: str | None = attrs.field(default=None, repr=False)
    allow_pairing: bool = False
    enable_network: bool = True
    auth: dict[str, Any] | None = attrs.field(default=None, repr=False)

    @property
    def has_credentials(self) -> bool:
        return self.kind != PAIRING

    def with_device(self, uuid: str, secret: str) -> Options:
        """These options with the credentials a device was paired with."""
        return attrs.evolve(self, kind=DEVICE, uuid=uuid, secret=secret)


def _check_host(host: object) -> str:
    if not isinstance(host, str) or not host:
        raise RuntimeError("host must be a URL such as 'https://api.goexp.io'")
    try:
        parts = urlsplit(host)
    except ValueError:  # e.g. an unclosed '[' of an IPv6 address
        raise RuntimeError(f"host {host!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RuntimeError(
            f"host must be an http:// or https:// URL with a host name, not {host!r}"
        )
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise RuntimeError(f"host {host!r} has an invalid port") from None
    if parts.query or parts.fragment:
        raise RuntimeError(f"host must not have a query or fragment: {host!r}")
    return host.rstrip("/")


def _check_auth(auth: object) -> dict[str, Any]:
    if not isinstance(auth, dict):
        raise RuntimeError("auth must be an auth payload (a dict) from an earlier login")
    missing = [k for k in ("token", "expiration", "identity", "api", "network")
               if k not in auth]
    if missing:
        raise RuntimeError(f"auth is not an auth payload: it lacks {', '.join(missing)}")
    if not isinstance(auth["token"], str) or not isinstance(auth["identity"], dict):
        raise RuntimeError("auth is not an auth payload: token or identity is malformed")
    expiration = auth["expiration"]
    if not isinstance(expiration, (int, float)) or isinstance(expiration, bool) or not (
            -1e300 < expiration < 1e300):  # also not NaN or infinite
        raise RuntimeError("auth is not an auth payload: expiration is not a time in ms")
    for part in ("api", "network"):
        if not isinstance(auth[part], dict) or "host" not in auth[part]:
            raise RuntimeError(f"auth is not an auth payload: {part} lacks a host")
        try:
            _check_host(auth[part]["host"])
        except RuntimeError as e:
            raise RuntimeError(f"auth is not an auth payload: {part}.{e}") from None
    return dict(auth)


def check_hosts(login_host: str, payload: dict[str, Any]) -> None:
    """
    Check the hosts an auth payload names against the host it came from: each
    of C{api.host} and C{network.host} must be an http(s) URL, and an https
    login must not go on over http (nor the network over ws), whatever the
    server answered: a downgrade is an attack or a misconfiguration.

    @raise exp.UnexpectedError: naming the host and what is wrong with it.
    """
    secure = urlsplit(login_host).scheme == "https"
    for part in ("api", "network"):
        section = payload.get(part)
        host = section.get("host") if isinstance(section, dict) else None
        try:
            checked = _check_host(host)
        except RuntimeError:
            raise UnexpectedError(
                f"the auth payload from {login_host} names no valid {part} host:"
                f" {host!r:.80}") from None
        if secure and urlsplit(checked).scheme != "https":
            raise UnexpectedError(
                f"the auth payload from {login_host} names the {part} host {checked!r}:"
                f" a login over https does not go on over http (refused as a downgrade;"
                f" the server's public URL should be https)")


#: The longest timeout, wait or age in seconds (about 30 years): beyond it a
#: timer's arithmetic overflows.
MAX_SECONDS = 1e9


def check_seconds(value: object, what: str = "timeout") -> float:
    """
    A number of seconds a timer can be set to.

    @raise exp.RuntimeError: unless C{value} is an int or float from 0 to
        L{MAX_SECONDS} (not NaN, not infinite, not a string).
    """
    if not isinstance(value, (int, float)) or not 0 <= value <= MAX_SECONDS:
        raise RuntimeError(
            f"{what} is a number of seconds from 0 to {MAX_SECONDS:g}, not {_shown(value)}")
    return float(value)


def _shown(value: object) -> str:
    """C{value} in a message: its repr, cut short."""
    try:
        return f"{value!r:.40}"
    except Exception:  # e.g. an int with too many digits to print
        return type(value).__name__


def check_count(value: object, what: str, unit: str) -> int:
    """
    A limit counted in C{unit}s: an int of at least 1.

    @raise exp.RuntimeError: naming C{what} otherwise (0, a negative number, a
        float, a bool or a string).
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RuntimeError(f"{what} is a number of {unit}, at least 1, not {_shown(value)}")
    return value


def auth_expired(auth: dict[str, Any], now: float | None = None) -> bool:
    """Whether an auth payload's token has expired."""
    expiration = auth.get("expiration")
    if not isinstance(expiration, (int, float)):
        return True
    return expiration / 1000.0 <= (time.time() if now is None else now)


def check_options(**options: Any) -> Options:
    """
    Check the options of C{exp.start}.

    @raise exp.RuntimeError: naming the unknown, missing, contradictory or
        malformed options.
    """
    unknown = sorted(set(options) - set(KNOWN))
    if unknown:
        raise RuntimeError(
            f"unknown option{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}"
            f" (known: {', '.join(KNOWN)})"
        )
    given = {k: v for k, v in options.items() if v is not None}
    for name in ("username", "password", "organization", "uuid", "secret", "api_key"):
        if name in given and (not isinstance(given[name], str) or not given[name]):
            raise RuntimeError(f"{name} must be a non-empty string")
    for name in ("allow_pairing", "enable_network"):
        if name in given and not isinstance(given[name], bool):
            raise RuntimeError(f"{name} must be True or False")
    host = _check_host(given.get("host", DEFAULT_HOST))
    auth = _check_auth(given["auth"]) if "auth" in given else None
    if auth is not None:
        try:
            check_hosts(host, auth)
        except UnexpectedError as e:
            raise RuntimeError(f"auth does not go with host {host!r} ({e}); give the host"
                               " the auth payload came from") from None
    allow_pairing = given.get("allow_pairing", False)
    user = {k for k in ("username", "password", "organization") if k in given}
    if user:
        others = [k for k in ("uuid", "secret", "api_key") if k in given]
        if others:
            raise RuntimeError(
                f"give either a user's username/password/organization or a uuid with"
                f" a secret or api_key, not both (got {', '.join([*sorted(user), *others])})"
            )
        missing = [k for k in ("username", "password", "organization") if k not in user]
        if missing:
            raise RuntimeError(f"user credentials need {', '.join(missing)} as well")
        kind = USER
    elif "secret" in given and "api_key" in given:
        raise RuntimeError("give a secret (device) or an api_key (consumer app), not both")
    elif "secret" in given or "api_key" in given:
        if "uuid" not in given:
            which = "secret" if "secret" in given else "api_key"
            raise RuntimeError(f"{which} needs the uuid it belongs to")
        kind = DEVICE if "secret" in given else CONSUMER_APP
    elif "uuid" in given:
        raise RuntimeError(
            "uuid needs a secret (device) or an api_key (consumer app)"
        )
    elif allow_pairing:
        kind = PAIRING
    elif auth is not None:
        kind = PAIRING if auth["identity"].get("paired") is False else "auth"
    elif given.get("allow_pairing") is False:
        raise RuntimeError(
            "no credentials and allow_pairing=False: pairing mode needs"
            " allow_pairing=True; otherwise give a user's, a device's or a consumer"
            " app's credentials"
        )
    else:
        raise RuntimeError(
            "no credentials: give username, password and organization (a user),"
            " uuid and secret (a device), uuid and api_key (a consumer app),"
            " or allow_pairing=True to start a device in pairing mode"
        )
    if kind == CONSUMER_APP and allow_pairing:
        raise RuntimeError("allow_pairing is for devices, not consumer apps")
    if kind == USER and allow_pairing:
        raise RuntimeError("allow_pairing is for devices, not users")
    return Options(
        kind=kind, host=host, username=given.get("username"),
        password=given.get("password"), organization=given.get("organization"),
        uuid=given.get("uuid"), secret=given.get("secret"), api_key=given.get("api_key"),
        allow_pairing=allow_pairing, enable_network=given.get("enable_network", True),
        auth=auth,
    )
