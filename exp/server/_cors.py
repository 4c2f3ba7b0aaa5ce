"""
Cross-origin requests (CORS) for the REST API and the polling transport, so
that web pages on other origins can use the server, as the official JS SDK
does: C{fetch} with C{credentials: 'include'} and an C{Authorization} header,
and Socket.IO's XHR polling with C{withCredentials}.

twisted.web has no CORS of its own; L{CORS} wraps a leaf resource and sets
the headers before the wrapped resource answers, so that its errors carry
them too.  The server sets no cookies and authenticates by bearer token, so
by default any origin is allowed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import urlsplit

from twisted.web import resource, server

#: The value of C{--cors-origin} that allows every origin.
ANY = "*"

#: Seconds a browser may cache a preflight's answer (Chromium caps it at 7200).
MAX_AGE = 600

#: Allowed request headers when a preflight names none.
DEFAULT_HEADERS = b"Accept, Authorization, Content-Type"

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(value: str) -> str:
    """
    C{value} as browsers send it in C{Origin}: C{scheme://host[:port]} in
    lower case, without a default port or a trailing slash; C{*} and C{null}
    as they are.

    @raise ValueError: if C{value} is not an origin (it has a path, a query,
        user info, or no scheme or host).
    """
    value = value.strip()
    if value in (ANY, "null"):
        return value
    parts = urlsplit(value)
    if (not parts.scheme or not parts.hostname or parts.path not in ("", "/")
            or parts.query or parts.fragment or "@" in parts.netloc):
        raise ValueError(f"{value!r} is not an origin (scheme://host[:port]), nor {ANY}")
    scheme = parts.scheme.lower()
    port = parts.port  # raises ValueError when it is not a port number
    netloc = parts.netloc.lower().rpartition(":")[0] if port is not None else parts.netloc.lower()
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc += f":{port}"
    return f"{scheme}://{netloc}"


def normalize_origins(values: str | Iterable[str]) -> tuple[str, ...]:
    """L{normalize_origin} of each of C{values} (one origin may be given as a string)."""
    if isinstance(values, str):
        values = [values]
    return tuple(normalize_origin(value) for value in values)


class CORS(resource.Resource):
    """
    A leaf resource, answering cross-origin requests from C{origins}.

    Every answer of the wrapped resource to an allowed C{Origin} carries that
    origin in C{Access-Control-Allow-Origin} with
    C{Access-Control-Allow-Credentials: true}, and every answer has C{Vary:
    Origin}.  A preflight (C{OPTIONS} with C{Origin} and
    C{Access-Control-Request-Method}) never reaches the wrapped resource: it
    is answered 204 with C{methods}, the requested headers and a max age, or
    403 C{cors.originNotAllowed} when its origin is not allowed.  Answers to
    other origins have no CORS headers, so their pages cannot read them.

    @param origins: normalized origins (L{normalize_origins}); L{ANY} allows all.
    @param methods: the methods the wrapped resource answers.
    """

    isLeaf = True

    def __init__(self, wrapped: resource.Resource, origins: Iterable[str],
                 methods: Iterable[str]) -> None:
        super().__init__()
        self._wrapped = wrapped
        self._origins = frozenset(origins)
        self._methods = ", ".join(sorted(set(methods))).encode("ascii")

    def _allowed(self, origin: bytes) -> bool:
        return ANY in self._origins or origin.decode("latin-1") in self._origins

    def render(self, request: server.Request) -> bytes | int:
        origin = request.getHeader(b"origin")
        allowed = origin is not None and self._allowed(origin)
        request.setHeader(b"vary", b"Origin")
        if allowed:
            assert origin is not None
            request.setHeader(b"access-control-allow-origin", origin)
            request.setHeader(b"access-control-allow-credentials", b"true")
        method = request.getHeader(b"access-control-request-method")
        if request.method == b"OPTIONS" and origin is not None and method is not None:
            return self._preflight(request, origin, allowed)
        return self._wrapped.render(request)

    def _preflight(self, request: server.Request, origin: bytes, allowed: bool) -> bytes | int:
        request.setHeader(
            b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
        if not allowed:
            request.setResponseCode(403)
            request.setHeader(b"content-type", b"application/json; charset=utf-8")
            message = f"the origin {origin.decode('latin-1')} is not allowed (--cors-origin)"
            return json.dumps({"code": "cors.originNotAllowed", "message": message}
                              ).encode("utf-8")
        request.setResponseCode(204)
        request.setHeader(b"access-control-allow-methods", self._methods)
        request.setHeader(b"access-control-allow-headers",
                          request.getHeader(b"access-control-request-headers")
                          or DEFAULT_HEADERS)
        request.setHeader(b"access-control-max-age", str(MAX_AGE).encode("ascii"))
        request.finish()  # a 204 has neither a body nor a Content-Length
        return server.NOT_DONE_YET
