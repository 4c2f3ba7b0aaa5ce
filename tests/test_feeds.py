"""
Feed data (PROTOCOL.md A6 and Part B): the server fetches RSS, Atom and JSON
sources from a small web server started by the test, and says clearly when
it cannot.  The sources are on loopback, which the server reaches only with
C{--feed-allow}: the tests that check what it refuses go without.
"""

from __future__ import annotations

import ipaddress
import json
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, ssl
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.internet.testing import MemoryReactor
from twisted.python import usage
from twisted.web import resource, server
from twisted.web.client import BrowserLikePolicyForHTTPS

from exp.protocol import consumer_app_token
from exp.server._feeds import (
    FeedFetcher,
    FeedPolicy,
    ForbiddenAddress,
    _CheckedEndpoint,
    is_public,
)
from exp.server._web import HttpError
from exp.server.tap import Options
from exp.server.testing import DEMO

from .conftest import Http

LOOPBACK = {"feed_allow": ["127.0.0.0/8"]}


@pytest.fixture
def server_config() -> dict[str, Any]:
    """The sources are on loopback: the server may fetch from there."""
    return LOOPBACK

RSS = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0">
  <channel>
    <title>Cat news</title>
    <link>https://cats.example/</link>
    <description>All about cats</description>
    <item>
      <title>Fluffy turns 3</title>
      <link>https://cats.example/fluffy</link>
      <description>Cake &amp; candles</description>
      <pubDate>Tue, 10 Jun 2025 04:00:00 GMT</pubDate>
      <guid>fluffy-3</guid>
    </item>
    <item>
      <title>Tom naps</title>
      <link>https://cats.example/tom</link>
      <description>All day</description>
      <pubDate>Wed, 11 Jun 2025 05:00:00 GMT</pubDate>
      <guid>tom-nap</guid>
    </item>
  </channel>
</rss>
"""

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Dog log</title>
  <link href="https://dogs.example/"/>
  <updated>2025-06-10T04:00:00Z</updated>
  <id>urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6</id>
  <entry>
    <title>Rex fetches \u00e9l\u00e8gamment</title>
    <link href="https://dogs.example/rex"/>
    <id>urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a</id>
    <updated>2025-06-10T04:00:00Z</updated>
    <summary>Good dog</summary>
  </entry>
</feed>
""".encode()

#: Links with a rel before the ones a reader follows: the alternate link is the link.
ATOM_RELS = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Dog log</title>
  <link rel="self" href="https://dogs.example/feed.atom"/>
  <link rel="alternate" type="text/html" href="https://dogs.example/"/>
  <id>urn:dogs</id>
  <entry>
    <title>Rex barks</title>
    <link rel="enclosure" type="audio/mpeg" href="https://dogs.example/rex.mp3"/>
    <link rel="alternate" href="https://dogs.example/rex"/>
    <id>urn:dogs:rex</id>
    <updated>2025-06-10T04:00:00Z</updated>
  </entry>
  <entry>
    <title>Fido sleeps</title>
    <link rel="related" href="https://dogs.example/beds"/>
    <link href="https://dogs.example/fido"/>
    <id>urn:dogs:fido</id>
    <published>2025-06-11T04:00:00Z</published>
  </entry>
  <entry>
    <title>No page</title>
    <link rel="edit" href="https://dogs.example/edit/3"/>
    <id>urn:dogs:3</id>
  </entry>
</feed>
"""

JSON_DOCUMENT = {"weather": [{"city": "Oslo", "celsius": -3.5}], "ok": True, "none": None}


class Source(resource.Resource):
    """The feeds' sources; remembers every request it was sent."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[str, dict[str, list[str]]]] = []
        self.cookies: list[bytes | None] = []
        self.url = ""
        #: Fire when the connection of a /dribble or /silent request is gone.
        self.dribble_closed: defer.Deferred[None] | None = None
        self.silent_closed: defer.Deferred[None] | None = None

    def render_GET(self, request: server.Request) -> bytes:
        path = request.path.decode()
        args = {k.decode(): [v.decode() for v in vs] for k, vs in request.args.items()}
        self.received.append((path, args))
        self.cookies.append(request.getHeader(b"cookie"))
        if path == "/rss":
            request.setHeader(b"content-type", b"application/rss+xml")
            return RSS
        if path == "/atom":
            request.setHeader(b"content-type", b"application/atom+xml")
            return ATOM
        if path == "/json":
            request.setHeader(b"content-type", b"application/json")
            return json.dumps(JSON_DOCUMENT).encode()
        if path == "/search":
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"query": args.get("q")}).encode()
        if path == "/fail":
            request.setResponseCode(500)
            return b"internal error"
        if path == "/moved":
            request.redirect(b"/rss")
            return b""
        if path == "/redirect":
            request.redirect(args["to"][0].encode())
            return b""
        if path == "/loop":
            request.redirect(b"/loop")
            return b""
        if path == "/cookie":
            request.addCookie(b"sid", b"org-a-secret", path=b"/", httpOnly=True)
            request.setHeader(b"content-type", b"application/json")
            return b"{}"
        if path == "/dribble":
            return self._dribble(request)
        if path == "/silent":
            self.silent_closed = request.notifyFinish().addBoth(lambda _: None)
            return server.NOT_DONE_YET
        if path in ("/gzip", "/deflate", "/truncated", "/brotli"):
            body = json.dumps(JSON_DOCUMENT).encode()
            gzipped = zlib.compress(body, wbits=16 + zlib.MAX_WBITS)
            encoded = {"/gzip": (b"gzip", gzipped), "/deflate": (b"deflate", zlib.compress(body)),
                       "/truncated": (b"gzip", gzipped[:-12]), "/brotli": (b"br", b"\x0b\x02")}
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"content-encoding", encoded[path][0])
            return encoded[path][1]
        if path == "/bomb":
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"content-encoding", b"gzip")
            return gzip_bomb()
        if path == "/atom-rels":
            request.setHeader(b"content-type", b"application/atom+xml")
            return ATOM_RELS
        if path == "/huge":
            return b"<rss><channel>" + b" " * (6 << 20) + b"</channel></rss>"
        if path == "/garbage":
            return b"\x00\xff<<not a feed at all>> {"
        request.setResponseCode(404)
        return b"no such source"

    def _dribble(self, request: server.Request) -> int:
        """One byte in a while, of a body that says it is 1000 bytes long, for ever."""
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"content-length", b"1000")
        drip = LoopingCall(request.write, b" ")
        request.notifyFinish().addBoth(lambda _: drip.stop())
        self.dribble_closed = request.notifyFinish().addBoth(lambda _: None)
        drip.start(0.1)
        return server.NOT_DONE_YET


_BOMB: list[bytes] = []


def gzip_bomb() -> bytes:
    """About 200 KB of gzip that decompress to 200 MB of zeros."""
    if not _BOMB:
        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        zeros = bytes(1 << 20)
        _BOMB.append(b"".join(compressor.compress(zeros) for _ in range(200))
                     + compressor.flush())
    return _BOMB[0]


async def serve(interface: str) -> tuple[Source, Any]:
    site_resource = Source()
    port = await TCP4ServerEndpoint(reactor, 0, interface=interface).listen(
        server.Site(site_resource))
    site_resource.url = f"http://{interface}:{port.getHost().port}"
    return site_resource, port


@pytest_twisted.async_yield_fixture()
async def source() -> AsyncIterator[Source]:
    site_resource, port = await serve("127.0.0.1")
    yield site_resource
    await port.stopListening()


async def create_feed(http: Http, token: str, subtype: str, url: str | None) -> str:
    document: dict[str, Any] = {"name": f"a {subtype} feed", "subtype": subtype}
    if url is not None:
        document["url"] = url
    answer = await http.call("POST", "/api/connectors/feeds", document, token=token)
    assert answer.code == 200, answer
    assert answer.json["url"] == url if url is not None else "url" not in answer.json
    return str(answer.json["uuid"])


async def feed_data(http: Http, token: str, uuid: str, **params: str) -> Any:
    return await http.call("GET", f"/api/connectors/feeds/{uuid}/data", token=token,
                           params=params or None)


@pytest_twisted.ensureDeferred
async def test_rss_feed_is_decoded(source: Source, http: Http, token: str) -> None:
    """An RSS 2.0 source decodes into title, link and items with their fields."""
    uuid = await create_feed(http, token, "scala:feed:rss", source.url + "/rss")
    answer = await feed_data(http, token, uuid)
    assert answer.code == 200, answer
    assert answer.json == {
        "title": "Cat news",
        "link": "https://cats.example/",
        "items": [
            {"id": "fluffy-3", "title": "Fluffy turns 3", "link": "https://cats.example/fluffy",
             "description": "Cake & candles", "date": "Tue, 10 Jun 2025 04:00:00 GMT"},
            {"id": "tom-nap", "title": "Tom naps", "link": "https://cats.example/tom",
             "description": "All day", "date": "Wed, 11 Jun 2025 05:00:00 GMT"},
        ],
    }
    assert [path for path, _ in source.received] == ["/rss"]


@pytest_twisted.ensureDeferred
async def test_redirected_source_is_followed(source: Source, http: Http, token: str) -> None:
    """A source that redirects is fetched from where it points; one that redirects for
    ever is 502 after 5 redirects."""
    uuid = await create_feed(http, token, "scala:feed:rss", source.url + "/moved")
    answer = await feed_data(http, token, uuid)
    assert answer.code == 200, answer
    assert answer.json["title"] == "Cat news"
    assert [path for path, _ in source.received] == ["/moved", "/rss"]
    uuid = await create_feed(http, token, "scala:feed:rss", source.url + "/loop")
    answer = await feed_data(http, token, uuid)
    assert answer.code == 502, answer
    assert answer.json["code"] == "feed.fetchFailed"
    assert "more than 5 times" in answer.json["message"]
    assert [path for path, _ in source.received[2:]] == ["/loop"] * 6


@pytest_twisted.ensureDeferred
async def test_atom_feed_is_decoded(source: Source, http: Http, token: str) -> None:
    """An Atom source decodes into the same shape, links taken from href."""
    uuid = await create_feed(http, token, "scala:feed:atom", source.url + "/atom")
    answer = await feed_data(http, token, uuid)
    assert answer.code == 200, answer
    assert answer.json == {
        "title": "Dog log",
        "link": "https://dogs.example/",
        "items": [
            {"id": "urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a",
             "title": "Rex fetches \u00e9l\u00e8gamment", "link": "https://dogs.example/rex",
             "description": "Good dog", "date": "2025-06-10T04:00:00Z"},
        ],
    }


@pytest_twisted.ensureDeferred
async def test_atom_link_is_the_alternate_one(source: Source, http: Http, token: str) -> None:
    """An Atom feed's and entry's link is the rel="alternate" one (or the one without rel),
    not the first; none when there is none."""
    uuid = await create_feed(http, token, "scala:feed:atom", source.url + "/atom-rels")
    answer = await feed_data(http, token, uuid)
    assert answer.code == 200, answer
    assert answer.json["link"] == "https://dogs.example/"
    assert [(item["id"], item["link"], item["date"]) for item in answer.json["items"]] == [
        ("urn:dogs:rex", "https://dogs.example/rex", "2025-06-10T04:00:00Z"),
        ("urn:dogs:fido", "https://dogs.example/fido", "2025-06-11T04:00:00Z"),
        ("urn:dogs:3", None, None),
    ]


@pytest_twisted.ensureDeferred
async def test_json_feed_is_passed_through(source: Source, http: Http, token: str) -> None:
    """A JSON source answers its document as it is."""
    uuid = await create_feed(http, token, "scala:feed:json", source.url + "/json")
    answer = await feed_data(http, token, uuid)
    assert answer.code == 200, answer
    assert answer.json == JSON_DOCUMENT


@pytest_twisted.ensureDeferred
async def test_compressed_source_is_decoded(source: Source, http: Http, token: str) -> None:
    """A source answering in gzip or deflate is decompressed."""
    for path in ("/gzip", "/deflate"):
        uuid = await create_feed(http, token, "scala:feed:json", source.url + path)
        answer = await feed_data(http, token, uuid)
        assert answer.code == 200, (path, answer)
        assert answer.json == JSON_DOCUMENT


@pytest_twisted.ensureDeferred
async def test_consumer_app_reads_feed_data(source: Source, http: Http, token: str) -> None:
    """A consumer app may read a feed's data."""
    uuid = await create_feed(http, token, "scala:feed:json", source.url + "/json")
    app = await http.login(token=consumer_app_token(DEMO["consumer_uuid"], DEMO["api_key"]))
    answer = await feed_data(http, app["token"], uuid)
    assert answer.code == 200, answer
    assert answer.json == JSON_DOCUMENT


@pytest_twisted.ensureDeferred
async def test_dynamic_feed_substitutes_search_value(source: Source, http: Http,
                                                     token: str) -> None:
    """{searchValue} in the url is replaced, escaped, by the searchValue parameter."""
    uuid = await create_feed(http, token, "scala:feed:json",
                             source.url + "/search?q={searchValue}")
    value = "caf\u00e9 & cake/tea?x=1#top"
    answer = await feed_data(http, token, uuid, searchValue=value)
    assert answer.code == 200, answer
    assert answer.json == {"query": [value]}
    assert source.received == [("/search", {"q": [value]})]


@pytest_twisted.ensureDeferred
async def test_dynamic_feed_needs_search_value(source: Source, http: Http, token: str) -> None:
    """A dynamic feed without searchValue is 400 and its source is not asked."""
    uuid = await create_feed(http, token, "scala:feed:json",
                             source.url + "/search?q={searchValue}")
    for params in ({}, {"searchValue": ""}):
        answer = await feed_data(http, token, uuid, **params)
        assert answer.code == 400, answer
        assert answer.json["code"] == "feed.searchValueRequired"
    assert source.received == []


@pytest_twisted.ensureDeferred
async def test_unknown_provider_is_unavailable(source: Source, http: Http, token: str) -> None:
    """A provider the server lacks answers 422 feed.unavailable, with no data made up."""
    uuid = await create_feed(http, token, "scala:feed:weather", source.url + "/json")
    answer = await feed_data(http, token, uuid, searchValue="Oslo")
    assert answer.code == 422, answer
    assert set(answer.json) == {"code", "message"}
    assert answer.json["code"] == "feed.unavailable"
    assert "scala:feed:weather" in answer.json["message"]
    assert source.received == []


@pytest_twisted.ensureDeferred
async def test_feed_without_http_url_is_refused(source: Source, http: Http, token: str) -> None:
    """A supported feed whose url is missing or not http(s) is 422, nothing fetched."""
    for url in (None, "file:///etc/passwd", "ftp://127.0.0.1/feed"):
        uuid = await create_feed(http, token, "scala:feed:rss", url)
        answer = await feed_data(http, token, uuid)
        assert answer.code == 422, (url, answer)
        assert answer.json["code"] == "feed.invalid"
        assert "root:" not in answer.body.decode()


@pytest_twisted.ensureDeferred
async def test_broken_sources_are_502(source: Source, http: Http, token: str) -> None:
    """A source answering 500, garbage, the wrong format, too much or nothing is 502."""
    closed = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        server.Site(resource.Resource()))
    refused_url = f"http://127.0.0.1:{closed.getHost().port}/rss"
    await closed.stopListening()
    cases = [
        ("scala:feed:rss", source.url + "/fail", "feed.fetchFailed"),
        ("scala:feed:json", source.url + "/fail", "feed.fetchFailed"),
        ("scala:feed:rss", source.url + "/missing", "feed.fetchFailed"),
        ("scala:feed:rss", source.url + "/garbage", "feed.invalidSource"),
        ("scala:feed:atom", source.url + "/garbage", "feed.invalidSource"),
        ("scala:feed:json", source.url + "/garbage", "feed.invalidSource"),
        ("scala:feed:rss", source.url + "/json", "feed.invalidSource"),
        ("scala:feed:json", source.url + "/rss", "feed.invalidSource"),
        ("scala:feed:rss", refused_url, "feed.fetchFailed"),
        ("scala:feed:rss", source.url + "/huge", "feed.tooLarge"),
        ("scala:feed:json", source.url + "/truncated", "feed.invalidSource"),
        ("scala:feed:json", source.url + "/brotli", "feed.fetchFailed"),
    ]
    for subtype, url, code in cases:
        uuid = await create_feed(http, token, subtype, url)
        answer = await feed_data(http, token, uuid)
        assert answer.code == 502, (subtype, url, answer)
        assert answer.json["code"] == code, (subtype, url, answer)
        assert answer.json["message"]


@pytest_twisted.ensureDeferred
async def test_unknown_feed_is_404(http: Http, token: str) -> None:
    """Data of a feed that does not exist is 404."""
    answer = await feed_data(http, token, "no-such-feed")
    assert answer.code == 404, answer
    assert answer.json["code"] == "resource.notFound"
    answer = await feed_data(http, token, "no-such-feed", searchValue="x")
    assert answer.code == 404, answer


# -- what a feed may not make the server do ---------------------------------------------


@pytest.mark.parametrize("server_config", [{}])
@pytest_twisted.ensureDeferred
async def test_loopback_source_is_refused(source: Source, http: Http, token: str) -> None:
    """Without --feed-allow, a url on loopback in any spelling is 422 feed.forbiddenAddress,
    and nothing connects to it."""
    port = source.url.rsplit(":", 1)[1]
    for host in ("127.0.0.1", "localhost", "127.1", "2130706433", "0.0.0.0",
                 "[::ffff:127.0.0.1]", "[::1]"):
        uuid = await create_feed(http, token, "scala:feed:rss", f"http://{host}:{port}/rss")
        answer = await feed_data(http, token, uuid)
        assert answer.code == 422, (host, answer)
        assert answer.json["code"] == "feed.forbiddenAddress", (host, answer)
        assert "--feed-allow" in answer.json["message"]
        assert "Cat news" not in answer.body.decode()
    assert source.received == []


@pytest.mark.parametrize("server_config", [{"feed_allow": ["127.0.0.1/32"]}])
@pytest_twisted.ensureDeferred
async def test_redirect_to_refused_address_is_refused(source: Source, http: Http,
                                                      token: str) -> None:
    """An allowed source that redirects to an address outside the allowed ranges is 422
    feed.forbiddenAddress: the internal server is never asked."""
    internal, port = await serve("127.0.0.2")
    try:
        uuid = await create_feed(http, token, "scala:feed:rss",
                                 f"{source.url}/redirect?to={internal.url}/rss")
        answer = await feed_data(http, token, uuid)
    finally:
        await port.stopListening()
    assert answer.code == 422, answer
    assert answer.json["code"] == "feed.forbiddenAddress"
    assert "redirected" in answer.json["message"]
    assert [path for path, _ in source.received] == ["/redirect"]
    assert internal.received == []


@pytest.mark.parametrize("server_config", [{**LOOPBACK, "feed_timeout": 0.5}])
@pytest_twisted.ensureDeferred
async def test_slow_sources_are_cut_at_the_deadline(source: Source, http: Http,
                                                    token: str) -> None:
    """A source that sends its body a byte at a time, or never answers, is 504
    feed.timeout naming the deadline, and its connection is closed."""
    for path in ("/dribble", "/silent"):
        uuid = await create_feed(http, token, "scala:feed:json", source.url + path)
        answer = await feed_data(http, token, uuid)
        assert answer.code == 504, (path, answer)
        assert answer.json["code"] == "feed.timeout"
        assert "0.5 s" in answer.json["message"]
    for closed in (source.dribble_closed, source.silent_closed):
        assert closed is not None
        # Closed by the server: were it not, this would wait for ever (bounded for the report).
        await closed.addTimeout(30, reactor)


@pytest.mark.parametrize("server_config", [{**LOOPBACK, "feed_max_bytes": 1 << 20}])
@pytest_twisted.ensureDeferred
async def test_gzip_bomb_is_cut_at_the_cap(source: Source, http: Http, token: str) -> None:
    """200 KB of gzip that would be 200 MB is 502 feed.tooLarge naming the cap, and the
    server never holds much more than the cap."""
    gzip_bomb()
    uuid = await create_feed(http, token, "scala:feed:json", source.url + "/bomb")
    tracemalloc.start()
    try:
        answer = await feed_data(http, token, uuid)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer.code == 502, answer
    assert answer.json["code"] == "feed.tooLarge"
    assert "1048576 bytes" in answer.json["message"]
    assert peak < 32 << 20, peak


@pytest_twisted.ensureDeferred
async def test_cookies_are_not_kept(source: Source, http: Http, token: str) -> None:
    """A cookie set by one source is sent to none: the server keeps no cookie jar."""
    setter = await create_feed(http, token, "scala:feed:json", source.url + "/cookie")
    reader = await create_feed(http, token, "scala:feed:json", source.url + "/json")
    for uuid in (setter, reader, setter):
        answer = await feed_data(http, token, uuid)
        assert answer.code == 200, answer
    assert [path for path, _ in source.received] == ["/cookie", "/json", "/cookie"]
    assert source.cookies == [None, None, None]


def _localhost_certificate() -> tuple[bytes, bytes]:
    """A self-signed certificate for localhost and its key, in PEM."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (certificate.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@pytest_twisted.ensureDeferred
async def test_https_source_is_checked_against_its_host_name() -> None:
    """An https source is fetched by name (resolved and checked here) with its certificate
    verified for that name; a certificate nobody vouches for is 502."""
    certificate_pem, key_pem = _localhost_certificate()
    certificate = ssl.PrivateCertificate.loadPEM(certificate_pem + key_pem)
    site_resource = Source()
    port = await SSL4ServerEndpoint(reactor, 0, certificate.options(),
                                    interface="127.0.0.1").listen(server.Site(site_resource))
    url = f"https://localhost:{port.getHost().port}/json"
    policy = FeedPolicy.of(["127.0.0.0/8"])
    trusting = FeedFetcher(reactor, policy, BrowserLikePolicyForHTTPS(
        trustRoot=ssl.Certificate.loadPEM(certificate_pem)))
    default = FeedFetcher(reactor, policy)
    try:
        assert await trusting.fetch({"subtype": "scala:feed:json", "url": url},
                                    None) == JSON_DOCUMENT
        with pytest.raises(HttpError) as caught:
            await default.fetch({"subtype": "scala:feed:json", "url": url}, None)
        assert (caught.value.status, caught.value.code) == (502, "feed.fetchFailed")
        with pytest.raises(HttpError) as caught:
            await FeedFetcher(reactor, FeedPolicy()).fetch(
                {"subtype": "scala:feed:json", "url": url}, None)
        assert caught.value.code == "feed.forbiddenAddress"
    finally:
        await trusting.close()
        await default.close()
        await port.stopListening()
    assert [path for path, _ in site_resource.received] == ["/json"]


REFUSED = [
    "127.0.0.1", "127.255.255.254", "0.0.0.0", "10.0.0.1", "10.255.255.255", "172.16.0.1",
    "172.31.255.255", "192.168.1.1", "100.64.0.1", "100.127.255.254", "169.254.169.254",
    "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1", "192.0.0.8",
    "198.18.0.1", "::", "::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
    "fe80::1", "fe80::1%1", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1", "ff0e::1",
    "64:ff9b::7f00:1", "64:ff9b::a00:1", "2002:7f00:1::1", "2002:a00:1::1", "::7f00:1",
    "2001:db8::1", "100::1", "64:ff9b::808:808", "2001::1", "192.88.99.1",
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1",
          "::ffff:93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "2001:4860:4860::8888",
          "2002:808:808::1"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str) -> None:
    """Loopback, private, link-local, CGNAT, multicast, unspecified, reserved, and their
    IPv6 forms (mapped, NAT64, 6to4, ULA, site-local) are not fetched from by default."""
    parsed = ipaddress.ip_address(address)
    assert not is_public(parsed)
    assert not FeedPolicy().permits(parsed)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_permitted(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_allowed_ranges_open_their_addresses_only() -> None:
    """--feed-allow opens its range (and the IPv4-mapped forms of it), nothing more."""
    policy = FeedPolicy.of(["127.0.0.0/8", "fd00::/8", "10.1.2.3"])
    for address in ("127.0.0.1", "127.9.9.9", "::ffff:127.0.0.1", "fd00::5", "10.1.2.3"):
        assert policy.permits(ipaddress.ip_address(address)), address
    for address in ("::1", "10.1.2.4", "192.168.1.1", "fc00::1", "169.254.169.254"):
        assert not policy.permits(ipaddress.ip_address(address)), address
    with pytest.raises(ValueError):
        FeedPolicy.of(["intranet"])


class _Resolver:
    """Answers every name with the same addresses."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses

    def resolveHostName(self, receiver: Any, hostName: str, portNumber: int = 0,
                        *args: Any, **kwargs: Any) -> Any:
        from twisted.internet.address import IPv4Address, IPv6Address

        receiver.resolutionBegan(None)
        for address in self.addresses:
            kind = IPv6Address if ":" in address else IPv4Address
            receiver.addressResolved(kind("TCP", address, portNumber))
        receiver.resolutionComplete()
        return receiver


def _connect(addresses: list[str]) -> tuple[MemoryReactor, list[Any]]:
    fake = MemoryReactor()
    fake.nameResolver = _Resolver(addresses)  # type: ignore[attr-defined]
    results: list[Any] = []
    endpoint = _CheckedEndpoint(fake, FeedPolicy().permits, None, "feeds.example", 80)
    endpoint.connect(Factory.forProtocol(Protocol)).addBoth(results.append)
    return fake, results


def test_connection_goes_to_the_checked_address() -> None:
    """The name is resolved once and the connection made to a permitted address of it, by
    address: a name that also resolves to an internal address is not connected there."""
    fake, results = _connect(["10.0.0.1", "::1", "93.184.216.34"])
    assert [(host, port) for host, port, *_ in fake.tcpClients] == [("93.184.216.34", 80)]
    assert results == []  # still connecting


def test_name_of_internal_addresses_only_is_refused() -> None:
    """A name that resolves to internal addresses only is refused before connecting."""
    fake, results = _connect(["127.0.0.1", "::1", "169.254.169.254"])
    assert fake.tcpClients == []
    assert len(results) == 1 and results[0].check(ForbiddenAddress)


def test_feed_allow_option_is_repeatable() -> None:
    """--feed-allow takes CIDR ranges, once or more; anything else is a usage error."""
    options = Options()
    options.parseOptions(["--feed-allow", "10.0.0.0/8", "--feed-allow", "fd00::/8"])
    assert options["feed-allow"] == ["10.0.0.0/8", "fd00::/8"]
    assert Options()["feed-allow"] == []
    with pytest.raises(usage.UsageError, match="--feed-allow"):
        Options().parseOptions(["--feed-allow", "intranet"])
