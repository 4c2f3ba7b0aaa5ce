"""
Feed data (PROTOCOL.md Part B): the server fetches RSS/Atom and JSON sources
with its HTTP client and decodes them.  A provider it does not have answers
C{feed.unavailable}; no data is ever made up.

A feed document names its source in C{url}; C{{searchValue}} in the URL is
replaced by the C{searchValue} query parameter (dynamic feeds).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import feedparser
import treq
from treq.client import HTTPClient

from exp.server._web import HttpError

RSS, JSON = "scala:feed:rss", "scala:feed:json"
SUPPORTED = (RSS, "scala:feed:atom", JSON)
MAX_FEED_BYTES = 5 * 1024 * 1024
FETCH_TIMEOUT = 15.0


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


async def fetch(client: HTTPClient, document: dict[str, Any],
                search_value: str | None) -> Any:
    """The decoded data of a feed."""
    url = source_url(document, search_value)
    try:
        response = await client.get(url, timeout=FETCH_TIMEOUT)
        chunks: list[bytes] = []
        size = 0

        def collect(data: bytes) -> None:
            nonlocal size
            size += len(data)
            if size > MAX_FEED_BYTES:
                raise HttpError(502, "feed.tooLarge", "the feed's source is too large")
            chunks.append(data)

        await treq.collect(response, collect)
    except HttpError:
        raise
    except Exception as e:
        raise HttpError(502, "feed.fetchFailed",
                        f"could not fetch the feed's source: {e.__class__.__name__}") from None
    if response.code >= 400:
        raise HttpError(502, "feed.fetchFailed",
                        f"the feed's source answered HTTP {response.code}")
    body = b"".join(chunks)
    if document.get("subtype") == JSON:
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise HttpError(502, "feed.invalidSource", "the feed's source is not JSON") from None
    return parse_xml_feed(body)


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
