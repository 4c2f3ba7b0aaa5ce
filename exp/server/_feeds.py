"""
Feed data (PROTOCOL.md Part B): the server fetches RSS/Atom and JSON sources
with its HTTP client and decodes them.  A provider it does not have answers
C{feed.unavailable}; no data is ever made up.

A feed document names its source in C{url}; C{{searchValue}} in the URL is
replaced by the C{searchValue} query parameter (dynamic feeds).

Any user or device may name any URL, so the fetch is made as if by a
stranger (L{FeedFetcher}):

  - the host is resolved here and only addresses that L{FeedPolicy}
    permits are connected to, by address: loopback, private, link-local,
    shared (CGNAT), multicast, reserved and unspecified addresses, and
    their IPv6 forms, are refused unless a range of C{--feed-allow}
    holds them;
  - redirects are followed by hand, at most L{MAX_REDIRECTS}, each one
    connected to through the same check;
  - one deadline covers the whole fetch, from name resolution to the
    last byte of the body;
  - the body is capped in bytes as received and as decompressed;
  - no cookie is kept, and no credential is sent.
"""

from __future__ import annotations

import io
import ipaddress
import json
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import attrs
import feedparser
from twisted.internet import defer, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import (
    IAddress,
    IHostResolution,
    IProtocol,
    IProtocolFactory,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import (
    URI,
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    PotentialDataLoss,
    ResponseDone,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgentEndpointFactory, IResponse
from zope.interface import implementer

from exp.server._web import HttpError

#: The providers of RSS (and Atom) feeds and of JSON feeds.
RSS, JSON = "scala:feed:rss", "scala:feed:json"
#: The providers whose data the server fetches.
SUPPORTED = (RSS, "scala:feed:atom", JSON)
#: Default of C{--feed-max-bytes}: the largest source body, as received and
#: as decompressed.
MAX_FEED_BYTES = 5 * 1024 * 1024
#: Default of C{--feed-timeout}: seconds for the whole fetch, body included.
FETCH_TIMEOUT = 15.0
#: The most redirects followed for one fetch.
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_ACCEPT = {
    JSON: b"application/json, */*;q=0.5",
    RSS: b"application/rss+xml, application/atom+xml, application/xml;q=0.9,"
         b" text/xml;q=0.9, */*;q=0.5",
}
#: zlib's window bits that read a gzip or a zlib header, whichever comes.
_GZIP_OR_ZLIB = 32 + zlib.MAX_WBITS

#: An IPv4 or IPv6 address.
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: An IPv4 or IPv6 range.
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Special-purpose ranges (RFC 6890 and its updates), on top of what the
#: predicates of C{ipaddress} say: the same on every Python version.
_SPECIAL = tuple(ipaddress.ip_network(cidr) for cidr in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    # ::/8 holds ::, ::1, the IPv4-compatible, mapped and NAT64 (64:ff9b::/96) forms.
    "::/8", "100::/64", "2001::/23", "2001:db8::/32", "fc00::/7", "fe80::/10", "fec0::/10",
    "ff00::/8",
))


def _canonical(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (C{::ffff:a.b.c.d}) as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        # Without its scope (fe80::1%eth0), for the predicates and the ranges.
        return ipaddress.IPv6Address(int(address))
    return address


def is_public(address: IPAddress) -> bool:
    """
    Whether C{address} is one anybody on the Internet may reach: not
    loopback, private, link-local, shared (CGNAT, 100.64/10), multicast,
    reserved or unspecified, in IPv4 or any IPv6 form (mapped, 6to4, NAT64,
    unique-local, site-local included).
    """
    address = _canonical(address)
    if any(address.version == network.version and address in network
           for network in _SPECIAL):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.sixtofour is not None \
            and not is_public(address.sixtofour):
        return False
    return address.is_global and not (
        address.is_private or address.is_loopback or address.is_link_local
        or address.is_multicast or address.is_reserved or address.is_unspecified
    )


@attrs.frozen
class FeedPolicy:
    """
    What a fetch may do.

    @ivar allow: ranges fetched from even though they are not public
        (C{--feed-allow}).
    @ivar timeout: seconds for a whole fetch, body included (C{--feed-timeout}).
    @ivar max_bytes: the largest body, as received and as decompressed
        (C{--feed-max-bytes}).
    """

    allow: tuple[IPNetwork, ...] = ()
    timeout: float = FETCH_TIMEOUT
    max_bytes: int = MAX_FEED_BYTES

    @classmethod
    def of(cls, allow: Iterable[str] = (), timeout: float = FETCH_TIMEOUT,
           max_bytes: int = MAX_FEED_BYTES) -> FeedPolicy:
        """A policy from CIDR strings (C{10.1.0.0/16}, C{::1}); ValueError if one is not."""
        return cls(tuple(ipaddress.ip_network(cidr, strict=False) for cidr in allow),
                   timeout, max_bytes)

    def permits(self, address: IPAddress) -> bool:
        """Whether a feed may be fetched from C{address}."""
        address = _canonical(address)
        return is_public(address) or any(
            address.version == network.version and address in network
            for network in self.allow
        )


class ForbiddenAddress(ConnectError):
    """The host has no address a feed may be fetched from."""

    def __init__(self, host: str) -> None:
        super().__init__(string=f"no permitted address for {host}")
        #: The host name.
        self.host = host


@implementer(IResolutionReceiver)
class _Addresses:
    """Collects the addresses a name resolves to."""

    def __init__(self) -> None:
        self.done: defer.Deferred[list[IPAddress]] = defer.Deferred()
        self._found: list[IPAddress] = []

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
        pass

    def addressResolved(self, address: IAddress) -> None:
        try:
            self._found.append(ipaddress.ip_address(address.host))  # type: ignore[attr-defined]
        except (AttributeError, ValueError):
            pass

    def resolutionComplete(self) -> None:
        if not self.done.called:  # it may have been cancelled
            self.done.callback(self._found)


@implementer(IStreamClientEndpoint)
@attrs.define
class _CheckedEndpoint:
    """
    Connects to C{host} by one of its addresses that C{permits}: the name is
    resolved here, so the address checked is the address connected to.
    """

    reactor: Any
    permits: Callable[[IPAddress], bool]
    tls: BrowserLikePolicyForHTTPS | None
    host: str
    port: int

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        return defer.Deferred.fromCoroutine(self._connect(protocolFactory))

    async def _connect(self, factory: IProtocolFactory) -> IProtocol:
        addresses = await self._resolve()
        if not addresses:
            raise DNSLookupError(self.host)
        permitted = [_canonical(address) for address in addresses if self.permits(address)]
        if not permitted:
            raise ForbiddenAddress(self.host)
        failure: Exception | None = None
        for address in dict.fromkeys(permitted):
            kind = TCP4ClientEndpoint if address.version == 4 else TCP6ClientEndpoint
            endpoint: IStreamClientEndpoint = kind(self.reactor, str(address), self.port)
            if self.tls is not None:
                creator = self.tls.creatorForNetloc(self.host.encode("ascii"), self.port)
                endpoint = wrapClientTLS(creator, endpoint)
            try:
                return await endpoint.connect(factory)
            except ConnectError as e:
                failure = e
        assert failure is not None
        raise failure

    async def _resolve(self) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(self.host)]
        except ValueError:
            pass
        receiver = _Addresses()
        self.reactor.nameResolver.resolveHostName(receiver, self.host, self.port)
        return await receiver.done


@implementer(IAgentEndpointFactory)
@attrs.define
class _CheckedEndpoints:
    reactor: Any
    permits: Callable[[IPAddress], bool]
    tls: BrowserLikePolicyForHTTPS

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii")
        return _CheckedEndpoint(self.reactor, self.permits,
                                self.tls if uri.scheme == b"https" else None, host, uri.port)


def _too_large(limit: int) -> HttpError:
    return HttpError(502, "feed.tooLarge",
                     f"the feed's source is larger than {limit} bytes (--feed-max-bytes)")


class _Decoder:
    """Decodes a body's Content-Encoding, stopping at C{limit} bytes out."""

    def __init__(self, encodings: Sequence[bytes], limit: int) -> None:
        names = [name.strip().lower() for value in encodings for name in value.split(b",")]
        names = [name for name in names if name not in (b"", b"identity")]
        self._zlib: Any = None
        if names in ([b"gzip"], [b"x-gzip"], [b"deflate"]):
            self._zlib = zlib.decompressobj(_GZIP_OR_ZLIB)
        elif names:
            raise HttpError(502, "feed.fetchFailed",
                            "the feed's source answered in an encoding this server does not"
                            f" decode: {b', '.join(names).decode('latin-1')}")
        self._limit = limit
        self.chunks: list[bytes] = []
        self._size = 0

    def _add(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            raise _too_large(self._limit)
        self.chunks.append(data)

    def feed(self, data: bytes) -> None:
        if self._zlib is None:
            self._add(data)
            return
        while data and not self._zlib.eof:  # what follows a gzip member is ignored
            try:
                # Never more than one byte past the limit at a time.
                self._add(self._zlib.decompress(data, self._limit - self._size + 1))
            except zlib.error:
                raise HttpError(502, "feed.invalidSource",
                                "the feed's source sent a body that does not decompress") from None
            data = self._zlib.unconsumed_tail

    def finish(self) -> bytes:
        if self._zlib is not None and not self._zlib.eof:
            raise HttpError(502, "feed.invalidSource",
                            "the feed's source sent a truncated compressed body")
        return b"".join(self.chunks)


class _Body(Protocol):
    """Reads a response body within the policy's byte limit."""

    def __init__(self, response: IResponse, limit: int, decode: bool) -> None:
        self.done: defer.Deferred[bytes] = defer.Deferred(self._cancel)
        self._response = response
        self._limit = limit
        self._decode = decode
        self._received = 0
        self._decoder: _Decoder | None = None

    def connectionMade(self) -> None:
        length, headers = self._response.length, self._response.headers
        try:
            if length is not UNKNOWN_LENGTH and length > self._limit:
                raise _too_large(self._limit)
            encodings = headers.getRawHeaders(b"content-encoding", []) if self._decode else []
            self._decoder = _Decoder(encodings, self._limit)
        except HttpError as e:
            self._fail(e)

    def dataReceived(self, data: bytes) -> None:
        if self.done.called or self._decoder is None:
            return
        self._received += len(data)
        try:
            if self._received > self._limit:
                raise _too_large(self._limit)
            self._decoder.feed(data)
        except HttpError as e:
            self._fail(e)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called or self._decoder is None:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            try:
                self.done.callback(self._decoder.finish())
            except HttpError as e:
                self.done.errback(e)
        else:
            self.done.errback(HttpError(
                502, "feed.fetchFailed",
                f"the feed's source broke off: {reason.value.__class__.__name__}"))

    def _fail(self, error: HttpError) -> None:
        self.done.errback(error)
        self.transport.stopProducing()  # type: ignore[union-attr]

    def _cancel(self, done: defer.Deferred[bytes]) -> None:
        # Called with CancelledError before the transport goes: connectionLost lets it be.
        done.errback(defer.CancelledError())
        self.transport.stopProducing()  # type: ignore[union-attr]


def _read(response: IResponse, limit: int, decode: bool = True) -> defer.Deferred[bytes]:
    """The body of C{response}, decompressed unless not C{decode}, at most C{limit} bytes."""
    body = _Body(response, limit, decode)
    response.deliverBody(body)
    return body.done


def _ascii_url(url: str) -> bytes:
    """C{url} as the request target Twisted's agent takes: IDNA host, escaped path."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        host = None
    if parts.scheme not in ("http", "https") or not host:
        raise HttpError(422, "feed.invalid", "the feed's url must be an http(s) URL")
    try:
        netloc = f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        try:
            netloc = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise HttpError(422, "feed.invalid", "the feed's url has an invalid host") from None
    if port is not None:
        netloc += f":{port}"
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~")
    query = quote(parts.query, safe="/?%:@!$&'()*+,;=~")
    return f"{parts.scheme}://{netloc}{path}{'?' + query if query else ''}".encode("ascii")


def source_url(document: dict[str, Any], search_value: str | None) -> str:
    """The URL to fetch for a feed, or an L{HttpError} saying why there is none."""
    subtype = document.get("subtype")
    if subtype not in SUPPORTED:
        raise HttpError(
            422, "feed.unavailable",
            f"this server cannot fetch feeds of subtype {subtype!r};"
            f" it supports {', '.join(SUPPORTED)}",
        )
    url = document.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise HttpError(422, "feed.invalid", "the feed's url must be an http(s) URL")
    if "{searchValue}" in url:
        if not search_value:
            raise HttpError(400, "feed.searchValueRequired",
                            "this dynamic feed needs a searchValue parameter")
        url = url.replace("{searchValue}", quote(search_value, safe=""))
    return url


class FeedFetcher:
    """
    Fetches and decodes feeds' sources under a L{FeedPolicy}, with its own
    connection pool and no cookie jar.  HTTPS certificates are checked
    against the host name by C{tls} (the system's trust roots by default).
    """

    def __init__(self, reactor: Any, policy: FeedPolicy,
                 tls: BrowserLikePolicyForHTTPS | None = None) -> None:
        #: What connects, resolves names and runs the deadline.
        self.reactor = reactor
        #: Where feeds may be fetched from, how long and how large.
        self.policy = policy
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._agent = Agent.usingEndpointFactory(
            reactor, _CheckedEndpoints(reactor, policy.permits, tls or BrowserLikePolicyForHTTPS()),
            pool=self._pool)

    async def close(self) -> None:
        """Close the connections kept open."""
        await self._pool.closeCachedConnections()

    async def fetch(self, document: dict[str, Any], search_value: str | None) -> Any:
        """The decoded data of a feed."""
        url = source_url(document, search_value)
        subtype = document["subtype"]
        accept = _ACCEPT.get(subtype, _ACCEPT[RSS])
        fetching = defer.Deferred.fromCoroutine(self._download(url, accept))
        # Cancelled wherever it is: resolving, connecting, waiting or reading.
        deadline = self.reactor.callLater(self.policy.timeout, fetching.cancel)
        try:
            body, content_type = await fetching
        except Exception:
            if deadline.active():
                raise
            raise HttpError(504, "feed.timeout",
                            "the feed's source did not answer in full within"
                            f" {self.policy.timeout:g} s (--feed-timeout)") from None
        finally:
            if deadline.active():
                deadline.cancel()
        # Decoding a large feed takes a while: not on the reactor's thread.
        return await threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), decode, subtype, body, content_type)

    async def _download(self, url: str, accept: bytes) -> tuple[bytes, str | None]:
        headers = Headers({b"accept": [accept], b"accept-encoding": [b"gzip"],
                           b"user-agent": [b"exp-server feeds"]})
        for hop in range(MAX_REDIRECTS + 1):
            try:
                response = await self._agent.request(b"GET", _ascii_url(url), headers)
            except ForbiddenAddress as e:
                where = "the feed's url" if hop == 0 else "the feed's source redirected to a host"
                raise HttpError(
                    422, "feed.forbiddenAddress",
                    f"{where} ({e.host}) is not at an address feeds may be fetched from:"
                    " loopback, private, link-local, shared, multicast and reserved"
                    " addresses are refused (see --feed-allow)") from None
            except (HttpError, defer.CancelledError):
                raise
            except Exception as e:
                raise HttpError(502, "feed.fetchFailed",
                                f"could not fetch the feed's source: {e.__class__.__name__}"
                                ) from None
            location = response.headers.getRawHeaders(b"location")
            redirect = response.code in _REDIRECTS and bool(location)
            if redirect or response.code >= 400:
                await _read(response, self.policy.max_bytes, decode=False)  # not used
            if redirect:
                url = urljoin(url, location[0].decode("latin-1").strip())
                if not url.startswith(("http://", "https://")):
                    raise HttpError(502, "feed.fetchFailed",
                                    "the feed's source redirected to a URL that is not http(s)")
                continue
            if response.code >= 400:
                raise HttpError(502, "feed.fetchFailed",
                                f"the feed's source answered HTTP {response.code}")
            body = await _read(response, self.policy.max_bytes)
            content_type = response.headers.getRawHeaders(b"content-type")
            return body, content_type[0].decode("latin-1") if content_type else None
        raise HttpError(502, "feed.fetchFailed",
                        f"the feed's source redirected more than {MAX_REDIRECTS} times")


def decode(subtype: str, body: bytes, content_type: str | None = None) -> Any:
    """A source's body decoded for a feed of C{subtype}."""
    if subtype == JSON:
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise HttpError(502, "feed.invalidSource", "the feed's source is not JSON") from None
    return parse_xml_feed(body, content_type)


def _alternate(links: Iterable[dict[str, Any]]) -> str | None:
    """The href of the first C{rel="alternate"} link (feedparser gives that rel to
    links without one, and to RSS's C{<link>})."""
    return next((link.get("href") for link in links if link.get("rel") == "alternate"), None)


def parse_xml_feed(body: bytes, content_type: str | None = None) -> dict[str, Any]:
    """Decode an RSS or Atom document into C{{title, link, items}}."""
    # A stream, never bytes or str: feedparser would open those as a path or URL.
    parsed = feedparser.parse(
        io.BytesIO(body), sanitize_html=True, resolve_relative_uris=False,
        response_headers={"content-type": content_type} if content_type else None)
    version = parsed.get("version") or ""
    if not version.startswith(("rss", "atom")):
        raise HttpError(502, "feed.invalidSource", "the feed's source is neither RSS nor Atom")
    feed = parsed.feed
    return {
        "title": feed.get("title"),
        "link": _alternate(feed.get("links", ())),
        "items": [
            {
                "id": entry.get("id"),
                "title": entry.get("title"),
                "link": _alternate(entry.get("links", ())),
                "description": entry.get("summary")
                or next((c.get("value") for c in entry.get("content", ())), None),
                "date": entry.get("updated") or entry.get("published"),
            }
            for entry in parsed.entries
        ],
    }
