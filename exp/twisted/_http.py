"""
HTTP for the SDK: JSON over treq on one persistent connection pool, with a
timeout on every call and EXP's error mapping (PROTOCOL.md A1).

A server is not trusted to be reasonable: a response's head and body are
read up to size limits, compressed bodies are neither asked for nor
inflated, redirects are not followed and cookies are not kept.
"""

from __future__ import annotations

import json
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import treq
from treq.client import HTTPClient
from treq.cookies import IndexableCookieJar
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IProtocol, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import (
    URI,
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import (
    UNKNOWN_LENGTH,
    IAgent,
    IAgentEndpointFactory,
    IBodyProducer,
    IResponse,
)
from zope.interface import implementer

from exp.errors import ApiError, AuthenticationError, NetworkError, RuntimeError, UnexpectedError
from exp.twisted._session import NO_BODY
from exp.twisted._wrapping import WrappingEndpoint

#: The largest response body read by default, in bytes (32 MiB).
MAX_RESPONSE_SIZE = 32 << 20

#: The largest head (status line and headers) of a response, in bytes.
MAX_HEAD_SIZE = 64 << 10


def encode_json(payload: Any) -> bytes:
    """
    The JSON body of C{payload}.

    @raise TypeError: if it is not JSON-serializable (before anything is sent).
    """
    try:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise TypeError(f"payload is not JSON-serializable: {e}") from None


def encode_params(params: Any) -> Any:
    """
    Query parameters as treq takes them: each value a string (C{True} as
    C{true}), or a list of strings; C{None} values left out.

    @raise exp.RuntimeError: if C{params} is not a dict, or not valid text.
    """
    if params is None:
        return None
    if not isinstance(params, dict):
        raise RuntimeError("params is a dict of query parameters")
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        out[str(key)] = [str(v) for v in value] if isinstance(value, (list, tuple)) else str(
            value)
    try:
        "".join(out).encode("utf-8")
        "".join(v if isinstance(v, str) else "".join(v) for v in out.values()).encode("utf-8")
    except UnicodeEncodeError:
        raise RuntimeError("query parameters must be valid text (no lone surrogates)") from None
    return out


def error_for(status: int, body: Any) -> Exception:
    """The exception for an error answer of the API."""
    code = body.get("code") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    if status == 401:
        return AuthenticationError(message or "the server refused the credentials or token")
    return ApiError(status, code if isinstance(code, str) else None,
                    message if isinstance(message, str) else None, body)


def _timed_out(result: Any, timeout: float) -> Any:
    """A request cancelled by its timeout failed with TimeoutError, however wrapped."""
    if isinstance(result, Failure):
        raise TimeoutError(f"no answer within {timeout:g} s")
    return result


class _Refused(Exception):
    """An answer whose body the SDK does not take, for the reason given."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _Discard(Protocol):
    """Takes a response's body by closing its connection unread."""

    def connectionMade(self) -> None:
        transport: Any = self.transport  # a producer: the body's connection
        transport.stopProducing()


def _abandon(response: IResponse, status: int, reason: str) -> _Refused:
    response.deliverBody(_Discard())
    return _Refused(status, reason)


@implementer(IAgent)
class _PlainBodies:
    """
    The agent under treq's: asks for bodies as they are, and refuses unread a
    redirect, or a body that is compressed anyway or announced over the size
    limit.

    treq asks for gzip and inflates it without bound, so that a few kilobytes
    on the wire could become gigabytes in memory (a gzip bomb): the
    C{Accept-Encoding} it adds is replaced here, before the request is sent,
    and a compressed answer never reaches its decoder.
    """

    def __init__(self, agent: IAgent, max_size: int) -> None:
        self._agent = agent
        self._max_size = max_size

    def request(self, method: bytes, uri: bytes, headers: Headers | None = None,
                bodyProducer: IBodyProducer | None = None) -> Deferred[IResponse]:
        headers = Headers() if headers is None else headers.copy()
        headers.setRawHeaders(b"Accept-Encoding", [b"identity"])
        d = self._agent.request(method, uri, headers, bodyProducer)
        return d.addCallback(self._check)

    def _check(self, response: IResponse) -> IResponse:
        if 300 <= response.code < 400:
            location = response.headers.getRawHeaders(b"Location", [b"nowhere"])[0]
            raise _abandon(response, response.code,
                           f"a redirect to {location.decode('latin-1')!r:.200}, which the"
                           " SDK does not follow (use that host if it is right)")
        encodings = b",".join(response.headers.getRawHeaders(b"Content-Encoding", []))
        compressed = [e.strip().decode("latin-1") for e in encodings.split(b",")
                      if e.strip() and e.strip().lower() != b"identity"]
        if compressed:
            raise _abandon(response, response.code,
                           f"a body encoded as {', '.join(compressed)!s:.40}, which the SDK"
                           " did not ask for and does not inflate")
        if response.length is not UNKNOWN_LENGTH and response.length > self._max_size:
            raise _abandon(response, response.code, _too_large(self._max_size))
        return response


def _end_of_head(head: bytes) -> int:
    """Where the blank line that ends C{head} ends; -1 before it has come."""
    ends = [i + len(blank) for blank in (b"\n\r\n", b"\n\n")
            if (i := head.find(blank)) >= 0]
    return min(ends, default=-1)


class _Writes:
    """
    The connection as the pool's protocol sees it: whatever it writes is a
    request (there is no pipelining), so the next head is a new answer's.
    """

    def __init__(self, transport: Any, limit: _HeadLimit) -> None:
        self._transport = transport
        self._limit = limit

    def write(self, data: bytes) -> None:
        self._limit.expect_head()
        self._transport.write(data)

    def writeSequence(self, data: Any) -> None:
        self._limit.expect_head()
        self._transport.writeSequence(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@implementer(IProtocol)
class _HeadLimit:
    """
    Under the pool's protocol for one connection: cuts the connection when
    the head of an answer passes L{MAX_HEAD_SIZE}, as Twisted takes header
    lines without limit.  (The body is counted by L{_read}.)
    """

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped
        self._head = b""  # the answer's head so far, while in it
        self._in_head = True
        self._over = False
        self.transport: Any = None

    def expect_head(self) -> None:
        self._in_head, self._head = True, b""

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        self.wrapped.makeConnection(_Writes(transport, self))

    def connectionMade(self) -> None:
        """Nothing: L{makeConnection} makes the wrapped protocol's connection."""

    def dataReceived(self, data: bytes) -> None:
        if self._over:
            return
        if self._in_head:
            self._head += data
            end = _end_of_head(self._head)
            if (end if end >= 0 else len(self._head)) > MAX_HEAD_SIZE:
                self._over = True
                self.transport.abortConnection()
                return
            if end >= 0:
                self._in_head, self._head = False, b""
        self.wrapped.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:
        if self._over:
            reason = Failure(_Refused(0, f"a head over {MAX_HEAD_SIZE} bytes"))
        self.wrapped.connectionLost(reason)


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """As the Agent's own: TCP for http, TLS checked as a browser would for https."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._tls = BrowserLikePolicyForHTTPS()

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, uri.host.decode("ascii"), uri.port)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self._tls.creatorForNetloc(uri.host, uri.port), endpoint)
        elif uri.scheme != b"http":
            raise SchemeNotSupported(f"unsupported scheme: {uri.scheme!r}")
        return WrappingEndpoint(endpoint, _HeadLimit)


def _too_large(limit: int) -> str:
    return f"a body over {limit} bytes (max_response_size)"


def _no_cookies() -> IndexableCookieJar:
    """A cookie jar that keeps nothing: EXP has tokens, and a server could fill it."""
    return IndexableCookieJar(DefaultCookiePolicy(allowed_domains=[]))


async def _read(response: IResponse, limit: int) -> bytes:
    """The body of C{response}; its connection is closed once it passes C{limit} bytes."""
    chunks: list[bytes] = []
    size = 0

    def collect(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > limit:
            raise _Refused(response.code, _too_large(limit))
        chunks.append(data)

    await treq.collect(response, collect)
    return b"".join(chunks)


class Http:
    """JSON calls over a persistent pool; L{close} cancels what is in flight."""

    def __init__(self, reactor: Any, timeout: float = 30.0,
                 max_response_size: int = MAX_RESPONSE_SIZE) -> None:
        self._reactor = reactor
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 8
        self._max_response_size = max_response_size
        agent = Agent.usingEndpointFactory(reactor, _Endpoints(reactor), pool=self._pool)
        self._client = HTTPClient(_PlainBodies(agent, max_response_size),
                                  cookiejar=_no_cookies())
        self._timeout = timeout
        self._in_flight: set[Deferred[Any]] = set()
        self.closed = False

    async def call(self, method: str, url: str, *, token: str | None = None,
                   params: Any = None, payload: Any = NO_BODY,
                   timeout: float | None = None) -> tuple[int, Any]:
        """
        Make one call; answer the status and the decoded JSON body (C{None}
        when empty).

        @raise TypeError: if C{payload} is not JSON-serializable.
        @raise NetworkError: if the server cannot be reached or does not
            answer in time.
        @raise UnexpectedError: if a successful answer's body is not JSON,
            is compressed or is larger than the size limit (an error answer's
            body is then C{None}).
        """
        if self.closed:
            raise NetworkError("the SDK has been stopped")
        headers: dict[bytes | str, list[bytes | str]] = {b"Accept": [b"application/json"]}
        data = None
        if payload is not NO_BODY:
            data = encode_json(payload)
            headers[b"Content-Type"] = [b"application/json"]
        if token is not None:
            headers[b"Authorization"] = [b"Bearer " + token.encode("ascii", "replace")]
        limit = self._timeout if timeout is None else timeout
        d = self._request(method, url, headers, params, data, limit)
        self._in_flight.add(d)
        try:
            status, raw = await d
        except _Refused as e:
            if e.status >= 400:
                return e.status, None
            raise UnexpectedError(f"{method} {url} answered {e.status} with {e.reason}"
                                  ) from None
        except TimeoutError:
            raise NetworkError(f"no answer from {url} within {limit:g} s") from None
        except (ConnectError, DNSLookupError, ResponseFailed, ResponseNeverReceived,
                RequestNotSent, RequestTransmissionFailed, CancelledError) as e:
            for reason in getattr(e, "reasons", ()):
                if reason.check(_Refused):
                    raise UnexpectedError(f"{method} {url} answered with"
                                          f" {reason.value.reason}") from None
            # the Agent wraps a cancellation in ResponseNeverReceived & co.
            cancelled = isinstance(e, CancelledError) or any(
                f.check(CancelledError) for f in getattr(e, "reasons", ()))
            if cancelled and self.closed:
                raise NetworkError("the SDK has been stopped") from None
            if cancelled:
                # the caller cancelled: that is no network failure to retry
                raise CancelledError() from None
            raise NetworkError(f"cannot reach {url}: {e.__class__.__name__}") from None
        finally:
            self._in_flight.discard(d)
        if not raw.strip():
            return status, None
        try:
            return status, json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            if status >= 400:
                return status, None
            raise UnexpectedError(
                f"{method} {url} answered {status} with a body that is not JSON"
            ) from None

    def _request(self, method: str, url: str, headers: dict[bytes | str, list[bytes | str]],
                 params: Any, data: bytes | None, timeout: float) -> Deferred[tuple[int, bytes]]:
        async def request() -> tuple[int, bytes]:
            response = await self._client.request(
                method, url, headers=headers, params=params, data=data,
                allow_redirects=False, unbuffered=True)
            return response.code, await _read(response, self._max_response_size)

        d = ensureDeferred(request())
        d.addTimeout(timeout, self._reactor, onTimeoutCancel=_timed_out)
        return d

    async def close(self) -> None:
        """Cancel the calls in flight and close the pool's connections."""
        self.closed = True
        for d in list(self._in_flight):
            d.cancel()
        await self._pool.closeCachedConnections()
