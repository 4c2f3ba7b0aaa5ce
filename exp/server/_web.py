"""
The HTTP plumbing of the REST API: routing, JSON bodies, size limits and
errors as C{{code, message}}.
"""

from __future__ import annotations

import inspect
import json
import re
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from io import BytesIO
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, unquote, unquote_plus

import attrs
from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, ensureDeferred
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols import policies
from twisted.python.failure import Failure
from twisted.web import http, resource, server
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers

from exp.protocol import strict_json
from exp.server._storage import InvalidDocument, Unavailable

_log = Logger()


class HttpError(Exception):
    """An answer of the API other than success."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        #: The HTTP status.
        self.status = status
        #: The C{code} of the answer's C{{code, message}} (C{"auth.invalid"}).
        self.code = code
        #: The C{message}: what went wrong, and what to do.
        self.message = message
        #: Headers of the answer (C{Retry-After}, ...).
        self.headers: dict[bytes, bytes] = {}


def bad_request(code: str, message: str) -> HttpError:
    """A 400 answer: the request is malformed."""
    return HttpError(400, code, message)


def unauthorized(message: str, code: str = "auth.invalid") -> HttpError:
    """A 401 answer: the request has no good token."""
    return HttpError(401, code, message)


def forbidden(message: str, code: str = "permission.denied") -> HttpError:
    """A 403 answer: the caller may not do that."""
    return HttpError(403, code, message)


def not_found(what: str) -> HttpError:
    """A 404 answer: C{what} (C{"device <uuid>"}) does not exist."""
    return HttpError(404, "resource.notFound", f"{what} does not exist")


@attrs.frozen
class Raw:
    """
    A non-JSON answer: bytes with their content type.

    @ivar content_type: the C{Content-Type}.
    @ivar body: the bytes.
    """

    content_type: str
    body: bytes


@attrs.frozen
class Redirect:
    """
    A 302 answer to C{location}.

    @ivar location: the URL, or the path on this server, to go to.
    """

    location: str


@attrs.frozen
class Delegate:
    """
    An answer rendered by another twisted.web resource (static files).

    @ivar resource: the resource that renders it.
    """

    resource: resource.Resource


class ApiRequest:
    """What a handler sees of a request."""

    def __init__(self, request: server.Request, match: dict[str, str]) -> None:
        #: The twisted.web request.
        self.http = request
        #: The values of the route's path template's C{{names}}, decoded.
        self.match = match
        raw_query = request.uri.partition(b"?")[2].decode("utf-8", "replace")
        #: The query's parameters, each with its values in order.
        self.params: dict[str, list[str]] = parse_qs(raw_query, keep_blank_values=True)

    def param(self, name: str) -> str | None:
        """The last value of the query parameter C{name}, if it has one."""
        values = self.params.get(name)
        return values[-1] if values else None

    @property
    def peer(self) -> str:
        """The address the request came from (what budgets per peer count)."""
        return str(getattr(self.http.getClientAddress(), "host", "local"))

    def header(self, name: str) -> str | None:
        """The value of the header C{name}, if the request has it."""
        # As bytes: Twisted's str headers raise on bytes that are not UTF-8.
        value = self.http.getHeader(name.encode("ascii"))
        return None if value is None else value.decode("utf-8", "replace")

    def json(self) -> Any:
        """
        The decoded JSON body.  An empty body (or one of blanks) is C{{}}:
        the official clients send none when the caller gives no document
        (PROTOCOL.md A7).

        @raise HttpError: 400 if the body is not JSON.
        """
        content = self.http.content
        raw = content.read() if content is not None else b""
        if not raw.strip():
            return {}
        try:
            return strict_json(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise bad_request("request.invalidJson", f"the body is not valid JSON: {e}") from None

    def document(self) -> dict[str, Any]:
        """The JSON body, which must be an object."""
        body = self.json()
        if not isinstance(body, dict):
            raise bad_request("request.invalidDocument", "the body must be a JSON object")
        return body

    def body_bytes(self) -> bytes:
        """The body as it came."""
        content = self.http.content
        return content.read() if content is not None else b""


#: What answers a request: given it, returns the answer (see L{_write_answer}).
Handler = Callable[[ApiRequest], Awaitable[Any]]

#: What the routes are bound to (the server, for the REST API's routes).
S = TypeVar("S")
#: A handler as route modules declare it: given what its routes are bound
#: to and the request, returns the answer.
BoundHandler = Callable[[S, ApiRequest], Awaitable[Any]]


class Routes(Generic[S]):
    """
    Routes declared klein-style, each by a decorated function of what they
    are bound to and the request; L{Router.include} binds them::

        routes: Routes[Server] = Routes()

        @routes.post("/api/auth/login")
        async def login(server: Server, req: ApiRequest) -> Any:
            ...

    A path template's C{{name}} matches one path segment, C{{name*}} the rest
    of the path; the handler finds them in L{ApiRequest.match}.
    """

    def __init__(self, *included: Routes[S]) -> None:
        """
        @param included: routes declared elsewhere, taken first, in order.
        """
        self._declared: list[tuple[str, str, BoundHandler[S]]] = [
            route for routes in included for route in routes]

    def __iter__(self) -> Iterator[tuple[str, str, BoundHandler[S]]]:
        """The C{(method, path template, handler)} of each route, in the order declared."""
        return iter(self._declared)

    def add(self, method: str, template: str, handler: BoundHandler[S]) -> None:
        """Declare C{handler} as the answer to C{method} on C{template}."""
        self._declared.append((method, template, handler))

    def route(self, method: str, template: str
              ) -> Callable[[BoundHandler[S]], BoundHandler[S]]:
        """A decorator that declares its function the handler of C{method} on C{template}."""
        def declare(handler: BoundHandler[S]) -> BoundHandler[S]:
            self.add(method, template, handler)
            return handler

        return declare

    def get(self, template: str) -> Callable[[BoundHandler[S]], BoundHandler[S]]:
        """L{route} for C{GET} (which answers C{HEAD} too)."""
        return self.route("GET", template)

    def post(self, template: str) -> Callable[[BoundHandler[S]], BoundHandler[S]]:
        """L{route} for C{POST}."""
        return self.route("POST", template)

    def put(self, template: str) -> Callable[[BoundHandler[S]], BoundHandler[S]]:
        """L{route} for C{PUT}."""
        return self.route("PUT", template)

    def patch(self, template: str) -> Callable[[BoundHandler[S]], BoundHandler[S]]:
        """L{route} for C{PATCH}."""
        return self.route("PATCH", template)

    def delete(self, template: str) -> Callable[[BoundHandler[S]], BoundHandler[S]]:
        """L{route} for C{DELETE}."""
        return self.route("DELETE", template)


@attrs.frozen
class _Route:
    method: bytes
    pattern: re.Pattern[str]
    handler: Handler
    template: str = ""


def _compile(template: str) -> re.Pattern[str]:
    """C{/api/devices/{uuid}} → a regex; C{{path*}} takes the rest of the path."""
    out = ""
    for part in re.split(r"(\{\w+\*?\})", template):
        if part.startswith("{") and part.endswith("*}"):
            out += f"(?P<{part[1:-2]}>.+)"
        elif part.startswith("{"):
            out += f"(?P<{part[1:-1]}>[^/]+)"
        else:
            out += re.escape(part)
    return re.compile(out + "/?$")


def _head(path: str) -> str:
    """
    The first two segments of a path or path template (C{/api/devices} of
    C{/api/devices/{uuid}}): no path matches a template with other literal
    first segments.
    """
    return "/".join(path.split("/", 3)[:3]).rstrip("/")


class _Exchange:
    """A request being answered, and whether its client has gone."""

    def __init__(self, request: server.Request) -> None:
        self.request = request
        self.gone = False

    def finished(self) -> bool:
        """Whether the answer is written, or nobody is left to read it."""
        return bool(self.request.finished or self.gone)


class Router(resource.Resource):
    """A leaf resource that dispatches on method and path to async handlers."""

    #: It answers every path below it.
    isLeaf = True

    def __init__(self, prefix: str = "") -> None:
        """
        @param prefix: put before every path template added (C{"/api"}).
        """
        super().__init__()
        self._prefix = prefix
        self._routes: list[_Route] = []
        #: The routes a path may match, by the path's first segments (L{_head}):
        #: those whose template starts with these segments, and those whose
        #: template has a parameter among its first segments (in L{_anywhere}),
        #: in the order added.
        self._by_head: dict[str, list[_Route]] = {}
        self._anywhere: list[_Route] = []

    def add(self, method: str, template: str, handler: Handler) -> None:
        """Answer C{method} requests whose path matches C{template} with C{handler}."""
        template = self._prefix + template
        route = _Route(method.encode("ascii"), _compile(template), handler, template)
        self._routes.append(route)
        head = _head(template)
        if "{" in head:
            self._anywhere.append(route)
            for routes in self._by_head.values():
                routes.append(route)
        else:
            self._by_head.setdefault(head, list(self._anywhere)).append(route)

    def include(self, routes: Routes[S], bound_to: S) -> None:
        """Add the handlers of C{routes}, each given C{bound_to} before the request."""
        for method, template, handler in routes:
            self.add(method, template, partial(handler, bound_to))

    def routes(self) -> list[tuple[str, str]]:
        """The C{(method, path template)} of every route, in the order added."""
        return [(route.method.decode("ascii"), route.template) for route in self._routes]

    def render(self, request: server.Request) -> int:
        """Answer C{request} later, from its route's handler."""
        exchange = _Exchange(request)
        d = ensureDeferred(self._dispatch(exchange))
        if d.called:
            return server.NOT_DONE_YET  # answered already

        def gone(_: Failure) -> None:
            exchange.gone = True
            d.cancel()

        request.notifyFinish().addErrback(gone)
        return server.NOT_DONE_YET

    async def _dispatch(self, exchange: _Exchange) -> None:
        request = exchange.request
        try:
            answer = await self._answer(request)
        except HttpError as e:
            _write_error(exchange, e)
        except CancelledError:
            return
        except InvalidDocument as e:
            _write_error(exchange, bad_request("request.invalidDocument", str(e)))
        except Unavailable as e:
            _log.failure("{method} {path}: {error}", method=request.method, path=request.path,
                         error=e)
            _write_error(exchange, HttpError(503, "server.unavailable", f"{e}; try again later"))
        except Exception:
            _log.failure("unhandled error answering {method} {path}",
                         method=request.method, path=request.path)
            _write_error(exchange, HttpError(500, "server.error", "internal server error"))
        else:
            try:
                _write_answer(exchange, answer)
            except Exception:
                # Never leave the request hanging: answer 500 while we can.
                _log.failure("unhandled error writing the answer to {method} {path}",
                             method=request.method, path=request.path)
                if not request.startedWriting:
                    _write_error(exchange, HttpError(500, "server.error",
                                                     "internal server error"))
                elif not exchange.finished():
                    request.loseConnection()

    async def _answer(self, request: server.Request) -> Any:
        if getattr(request, "body_too_large", False):
            raise HttpError(413, "payload.tooLarge", "the request body is too large")
        path = request.path.decode("utf-8", "replace")
        allowed: list[bytes] = []
        for route in self._by_head.get(_head(path), self._anywhere):
            match = route.pattern.match(path)
            if match is None:
                continue
            method = b"GET" if request.method == b"HEAD" else request.method
            if route.method != method:
                allowed.append(route.method)
                continue
            groups = {k: unquote(v) for k, v in match.groupdict().items()}
            return await route.handler(ApiRequest(request, groups))
        if allowed:
            request.setHeader(b"allow", b", ".join(sorted(set(allowed))))
            raise HttpError(405, "method.notAllowed",
                            f"{request.method.decode('ascii', 'replace')} is not allowed here")
        raise HttpError(404, "route.notFound", f"no such route: {path}")


def _write_error(exchange: _Exchange, error: HttpError) -> None:
    request = exchange.request
    request.setResponseCode(error.status)
    for name, value in error.headers.items():
        request.setHeader(name, value)
    _write_json(exchange, {"code": error.code, "message": error.message})


#: Compact JSON text in ASCII (other characters escaped), one encoder for all answers.
_ascii_json = json.JSONEncoder(separators=(",", ":")).encode


def _write_json(exchange: _Exchange, value: Any) -> None:
    if exchange.finished():
        return
    request = exchange.request
    body = _ascii_json(value).encode("ascii")
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"content-length", str(len(body)).encode("ascii"))
    request.write(body)
    request.finish()


def _write_answer(exchange: _Exchange, answer: Any) -> None:
    if exchange.finished():
        return
    request = exchange.request
    if isinstance(answer, Delegate):
        body = answer.resource.render(request)
        if body is not server.NOT_DONE_YET:
            request.write(body)
            request.finish()
        return
    if isinstance(answer, Redirect):
        request.redirect(answer.location.encode("utf-8"))
        request.setHeader(b"content-length", b"0")
        request.finish()
        return
    if isinstance(answer, Raw):
        request.setHeader(b"content-type", answer.content_type.encode("ascii"))
        request.setHeader(b"content-length", str(len(answer.body)).encode("ascii"))
        request.write(answer.body)
        request.finish()
        return
    if answer is None:
        request.setHeader(b"content-length", b"0")
        request.finish()
        return
    _write_json(exchange, answer)


#: Twisted can be told not to parse bodies as forms (the API has none).
_SKIP_FORMS = "parsePOSTFormSubmission" in inspect.signature(server.Request.__init__).parameters


#: The C{Server} header: no product version for a scanner to match.
SERVER_BANNER = b"exp"


class LimitedRequest(server.Request):
    """
    A request that refuses to buffer a body over the site's limit, and whose
    answer names no server version.
    """

    #: Whether the body went past the site's limit (it was not kept).
    body_too_large = False
    _received = 0

    def write(self, data: bytes) -> None:
        """Write C{data} of the answer, after its headers, the C{Server} header ours."""
        if not self.startedWriting:
            self.responseHeaders.setRawHeaders(b"server", [SERVER_BANNER])
        super().write(data)

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        if _SKIP_FORMS:
            kwargs["parsePOSTFormSubmission"] = False
        super().__init__(channel, *args, **kwargs)

    def _limit(self) -> int:
        return int(getattr(getattr(self.channel, "site", None), "max_body", 1 << 20))

    def gotLength(self, length: int | None) -> None:
        """Keep no body whose announced length is past the limit."""
        if length is not None and length > self._limit():
            self.body_too_large = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        """Keep C{data} of the body, unless the body has gone past the limit."""
        if self.body_too_large:
            return
        self._received += len(data)
        if self._received > self._limit():
            self.body_too_large = True
            #: The body received (emptied once it is past the limit).
            self.content = BytesIO()
            return
        super().handleContentChunk(data)


class NotFound(resource.Resource):
    """The answer to any path outside the API."""

    #: It answers every path below it.
    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        """A 404 C{{code, message}}."""
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        path = request.path.decode("utf-8", "replace")
        return json.dumps({"code": "route.notFound", "message": f"no such route: {path}"}
                          ).encode("utf-8")


_PATH_TOKEN = re.compile(rb"/_rt=[^/]*")
#: Query parameters whose values the access log never shows.
#: C{sid} is an Engine.IO session's id, which lets whoever holds it (with
#: a token of its identity) poll that session.
REDACTED_PARAMETERS = frozenset({"token", "_rt", "secret", "apiKey", "password", "sid"})


def redact_uri(uri: bytes) -> bytes:
    """
    C{uri} with the values of L{REDACTED_PARAMETERS} replaced by C{<redacted>},
    and the token of a delivery path (C{/_rt=<token>/}) too.
    """
    path, question, rest = uri.partition(b"?")
    if b"/_rt=" in path:
        path = _PATH_TOKEN.sub(b"/_rt=<redacted>", path)
    if not question:
        return path
    query, hash_, fragment = rest.partition(b"#")
    fields = []
    for field in query.split(b"&"):
        name, equals, _ = field.partition(b"=")
        if equals and unquote_plus(name.decode("utf-8", "replace")) in REDACTED_PARAMETERS:
            field = name + b"=<redacted>"
        fields.append(field)
    return path + question + b"&".join(fields) + hash_ + fragment


class _Redacted:
    """What the access log sees of a request: no token in its URI or referrer."""

    def __init__(self, request: server.Request) -> None:
        self._request = request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)

    @property
    def uri(self) -> bytes:
        return redact_uri(self._request.uri)

    def getHeader(self, name: bytes) -> bytes | None:
        value = self._request.getHeader(name)
        if name.lower() == b"referer" and value is not None:
            return redact_uri(value)
        return value


def _plain(value: bytes) -> str | None:
    """
    C{value} as text, if twisted.web's log escaping leaves it as it is
    (printable ASCII, no quote or backslash); else None.
    """
    if not value.isascii():
        return None
    text = value.decode("ascii")
    if not text.isprintable() or '"' in text or "\\" in text:
        return None
    return text


def access_log_formatter(timestamp: str, request: server.Request) -> str:
    """
    The combined log format of twisted.web, with the tokens that delivery
    URLs (C{_rt}) and socket handshakes (C{token}) carry in the query redacted.
    (The line of twisted.web's C{combinedLogFormatter}, written at once when
    none of its parts needs escaping, as is the rule.)
    """
    address = request.getClientAddress()
    referrer = request.getHeader(b"referer")
    parts = [_plain(part) for part in (
        address.host.encode("utf-8") if isinstance(address, (IPv4Address, IPv6Address))
        else b"-",
        request.method, redact_uri(request.uri), request.clientproto,
        (None if referrer is None else redact_uri(referrer)) or b"-",
        request.getHeader(b"user-agent") or b"-")]
    if None in parts:
        return str(http.combinedLogFormatter(timestamp, _Redacted(request)))
    host, method, path, protocol, referred, agent = parts
    return (f'"{host}" - - {timestamp} "{method} {path} {protocol}" {request.code:d} '
            f'{request.sentLength or "-"} "{referred}" "{agent}"')


class DeadlineChannel(http.HTTPChannel):
    """
    An HTTP channel that gives each request's head (request line and
    headers) C{head_timeout} seconds from its first byte: a client that
    trickles header lines to hold the connection open is answered 408 and
    cut off.  Idle connections between requests keep Twisted's idle timeout.
    """

    #: Seconds a request's head may take from its first byte.
    head_timeout = 10.0
    _head_clock: Any = None
    _past_head = False
    #: The head of the answer being written, until its body's first bytes.
    _answer_head: bytes | None = None

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes,
                     headers: Headers) -> None:
        """
        Keep the head of an answer (as Twisted writes it) until the first
        bytes of its body, to write both at once: one write, one send.
        """
        if not isinstance(headers, Headers):
            super().writeHeaders(version, code, reason, headers)
            return
        head = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        self._answer_head = b"".join(head)

    def write(self, data: bytes) -> None:
        """Write C{data} of an answer, after its head if that still waits."""
        head = self._answer_head
        if head is not None:
            self._answer_head = None
            data = head + data
        assert self.transport is not None
        self.transport.write(data)

    def writeSequence(self, iovec: list[bytes]) -> None:
        """Write the parts of C{iovec} as one."""
        self.write(b"".join(iovec))

    def _write_head(self) -> None:
        """Write the head of an answer that has no body."""
        if self._answer_head is not None:
            self.write(b"")

    def loseConnection(self) -> None:
        """Close the connection, once what waits is written."""
        self._write_head()
        super().loseConnection()

    def dataReceived(self, data: bytes) -> None:
        """Start the head's clock at the first byte of a request."""
        if self._head_clock is None and not self._past_head:
            self._head_clock = self.callLater(self.head_timeout, self._head_expired)
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        """Stop the head's clock: the head is complete."""
        self._stop_head_clock()
        self._past_head = True
        super().allHeadersReceived()

    def requestDone(self, request: http.Request) -> None:
        """The next request's head gets a clock of its own."""
        self._write_head()
        self._past_head = False
        super().requestDone(request)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Stop the head's clock."""
        self._stop_head_clock()
        super().connectionLost(reason)

    def _stop_head_clock(self) -> None:
        if self._head_clock is not None and self._head_clock.active():
            self._head_clock.cancel()
        self._head_clock = None

    def _head_expired(self) -> None:
        self._head_clock = None
        assert self.transport is not None
        _log.info("{peer} sent no complete request head in {seconds:g} s; closing",
                  peer=self.transport.getPeer(), seconds=self.head_timeout)
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                             b"Content-Length: 0\r\n\r\n")
        self.loseConnection()


def socket_of(transport: Any) -> socket.socket | None:
    """
    The socket that the bytes written to C{transport} go to as they are:
    that of a TCP (or UNIX) connection, perhaps behind a protocol wrapper
    that passes writes on unchanged (C{twisted.protocols.policies}'s, or a
    L{Connection} once its HTTP channel has handed it over).  None for
    anything else (TLS encrypts what is written).
    """
    if type(transport) is policies.ProtocolWrapper or isinstance(transport, Connection):
        transport = transport.transport
    if not isinstance(transport, FileDescriptor) or getattr(transport, "TLS", False):
        return None
    handle = transport.getHandle()  # type: ignore[attr-defined]
    return handle if isinstance(handle, socket.socket) else None


def write_at_once(sock: socket.socket, transport: Any, data: bytes) -> bool:
    """
    Send C{data} on C{sock} at once (a caller's word that nothing waits
    in C{transport}, the transport over C{sock}); what the socket does not
    take goes to C{transport}, which sends it on a later turn of the reactor.

    @return: whether the socket took all of C{data}.
    """
    try:
        sent = sock.send(data)
    except OSError:
        sent = 0  # (full, or broken: Twisted finds the error as it writes, and closes)
    if sent == len(data):
        return True
    transport.write(data[sent:])
    return False


class Connection(policies.ProtocolWrapper):
    """
    A connection of the site (see L{PeerLimit}).  Over a plain socket, what
    its HTTP channel writes (an answer at a time, see
    L{DeadlineChannel.writeHeaders}) goes to the socket at once, without
    waiting for the reactor's next turn, as long as the transport has never
    had to keep anything; once it has, Twisted writes as usual.  Writes of
    a protocol that takes the connection over (a WebSocket) are passed on.
    """

    _socket: socket.socket | None = None

    def makeConnection(self, transport: Any) -> None:
        """Find the socket under C{transport}, then connect the HTTP channel."""
        self._socket = socket_of(transport)
        super().makeConnection(transport)

    def write(self, data: bytes) -> None:
        """Write C{data}: to the socket if nothing waits before it, else after what waits."""
        sock, transport = self._socket, self.transport
        assert transport is not None
        if sock is None or not isinstance(self.wrappedProtocol, HTTPChannel):
            transport.write(data)
        elif not write_at_once(sock, transport, data):
            # The rest waits in the transport, and from now on all that follows.
            self._socket = None

    def writeSequence(self, data: list[bytes]) -> None:
        """Write the parts of C{data} as one."""
        self.write(b"".join(data))


class PeerLimit(policies.WrappingFactory):
    """
    At most C{limit} connections at once from one peer address (0: no
    limit); a connection past it is closed at once, and logged.  Each
    connection is a L{Connection}.
    """

    protocol = Connection

    def __init__(self, site: server.Site, limit: int) -> None:
        super().__init__(site)
        #: The site that answers the connections let in.
        self.site = site
        #: Connections at once from one peer address (0: no limit).
        self.limit = limit
        self._peers: Counter[str] = Counter()

    def buildProtocol(self, addr: Any) -> Any:
        """A connection of the site, unless C{addr}'s host has its limit already."""
        host = str(getattr(addr, "host", ""))
        if self.limit and self._peers[host] >= self.limit:
            _log.info("refused a connection from {peer}: it has {count} open already",
                      peer=host, count=self._peers[host])
            return None
        protocol = super().buildProtocol(addr)
        if protocol is not None:
            self._peers[host] += 1
        return protocol

    def unregisterProtocol(self, p: Any) -> None:
        """Count a connection closed."""
        super().unregisterProtocol(p)
        host = str(getattr(p.getPeer(), "host", ""))
        self._peers[host] -= 1
        if self._peers[host] <= 0:
            del self._peers[host]
