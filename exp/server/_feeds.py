"""
Feed data (PROTOCOL.md Part B): the server fetches RSS/Atom and JSON sources
with its HTTP client and decodes them.  A provider it does not have answers
C{feed.unavailable}; no data is ever made up.

A feed document names its source in C{url}; C{{searchValue}} in the URL is
replaced by the C{searchValue} query parameter (dynamic feeds).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

import treq
from treq.client import HTTPClient

from exp.server._web import HttpError

RSS, JSON = "scala:feed:rss", "scala:feed:json"
SUPPORTED = (RSS, "scala:feed:atom", JSON)
MAX_FEED_BYTES = 5 * 1024 * 1024
FETCH_TIMEOUT = 15.0
_ATOM = "{http://www.w3.org/2005/Atom}"


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


def _text(element: ElementTree.Element | None) -> str | None:
    if element is None:
        return None
    return (element.text or "").strip()


def parse_xml_feed(body: bytes) -> dict[str, Any]:
    """Decode an RSS 2.0 or Atom document into C{{title, link, items}}."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as e:
        raise HttpError(502, "feed.invalidSource", f"the feed's source is not XML: {e}") from None
    if root.tag == f"{_ATOM}feed":
        link = root.find(f"{_ATOM}link")
        return {
            "title": _text(root.find(f"{_ATOM}title")),
            "link": link.get("href") if link is not None else None,
            "items": [
                {
                    "id": _text(entry.find(f"{_ATOM}id")),
                    "title": _text(entry.find(f"{_ATOM}title")),
                    "link": (entry.find(f"{_ATOM}link").get("href")  # type: ignore[union-attr]
                             if entry.find(f"{_ATOM}link") is not None else None),
                    "description": _text(entry.find(f"{_ATOM}summary"))
                    or _text(entry.find(f"{_ATOM}content")),
                    "date": _text(entry.find(f"{_ATOM}updated"))
                    or _text(entry.find(f"{_ATOM}published")),
                }
                for entry in root.findall(f"{_ATOM}entry")
            ],
        }
    channel = root.find("channel")
    if root.tag != "rss" or channel is None:
        raise HttpError(502, "feed.invalidSource", "the feed's source is neither RSS nor Atom")
    return {
        "title": _text(channel.find("title")),
        "link": _text(channel.find("link")),
        "items": [
            {
                "id": _text(item.find("guid")),
                "title": _text(item.find("title")),
                "link": _text(item.find("link")),
                "description": _text(item.find("description")),
                "date": _text(item.find("pubDate")),
            }
            for item in channel.findall("item")
        ],
    }
