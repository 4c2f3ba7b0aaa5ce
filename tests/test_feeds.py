"""
Feed data (PROTOCOL.md A6 and Part B): the server fetches RSS, Atom and JSON
sources from a small web server started by the test, and says clearly when
it cannot.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web import resource, server

from exp.protocol import consumer_app_token
from exp.server.testing import DEMO

from .conftest import Http

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
        self.url = ""

    def render_GET(self, request: server.Request) -> bytes:
        path = request.path.decode()
        args = {k.decode(): [v.decode() for v in vs] for k, vs in request.args.items()}
        self.received.append((path, args))
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
        if path == "/atom-rels":
            request.setHeader(b"content-type", b"application/atom+xml")
            return ATOM_RELS
        if path == "/huge":
            return b"<rss><channel>" + b" " * (6 << 20) + b"</channel></rss>"
        if path == "/garbage":
            return b"\x00\xff<<not a feed at all>> {"
        request.setResponseCode(404)
        return b"no such source"


@pytest_twisted.async_yield_fixture()
async def source() -> AsyncIterator[Source]:
    site_resource = Source()
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        server.Site(site_resource))
    site_resource.url = f"http://127.0.0.1:{port.getHost().port}"
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
    """A source that redirects is fetched from where it points."""
    uuid = await create_feed(http, token, "scala:feed:rss", source.url + "/moved")
    answer = await feed_data(http, token, uuid)
    assert answer.code == 200, answer
    assert answer.json["title"] == "Cat news"
    assert [path for path, _ in source.received] == ["/moved", "/rss"]


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
