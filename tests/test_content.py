"""
The content tree, delivery URLs and location layouts of PROTOCOL.md A6 and
Part B, against a real server serving a content folder built in the test.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from exp.protocol import consumer_app_token
from exp.server import demo_seed_path
from exp.server.testing import DEMO, RunningServer, start_server

from .conftest import Answer, Http

LOGO = b"\x89PNG\r\n\x1a\n" + b"big logo" * 50
SMALL_LOGO = b"\x89PNG\r\n\x1a\n" + b"small logo"
OUTSIDE = b"OUTSIDE-THE-CONTENT-FOLDER"
REPORT = "docs/sub dir/report \u00fc.txt"
CLOCK_PAGE = b'<!doctype html><script src="lib/app.js"></script>'

ACME_USER = {"username": "ann@acme.test", "password": "acme-Password1", "organization": "acme"}
OTHER_USER = {"username": "bob@other.test", "password": "other-Password1",
              "organization": "other"}


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build_folders(base: Path) -> None:
    """A content folder for acme, one for other, and files outside both."""
    content = base / "content"
    _write(content / "welcome.txt", b"hello, world\n")
    _write(content / "homepage.url", b"https://www.goexp.io/\n")
    _write(content / "images" / "logo.png", LOGO)
    _write(content / "images" / "logo.small.png", SMALL_LOGO)
    _write(content / REPORT, "r\u00e9sum\u00e9\n".encode())
    _write(content / "clock" / "manifest.json", b'{"name": "clock"}')
    _write(content / "clock" / "index.html", CLOCK_PAGE)
    _write(content / "clock" / "lib" / "app.js", b"tick();\n")
    _write(content / ".secret", b"dotfile")
    _write(content / ".hidden" / "inside.txt", b"hidden folder")
    _write(base / "outside.txt", OUTSIDE)
    _write(base / "outside-dir" / "secret.txt", OUTSIDE)
    os.symlink(base / "outside.txt", content / "escape.txt")
    os.symlink(base / "outside-dir", content / "escape-dir")
    _write(base / "other-content" / "other.txt", b"the other organization's file")


SEED: dict[str, Any] = {"organizations": [
    {"name": "acme",
     "users": [{"username": ACME_USER["username"], "password": ACME_USER["password"]}],
     "consumerApps": [{"uuid": "acme-app", "apiKey": "acme-key"}],
     "content": "content"},
    {"name": "other",
     "users": [{"username": OTHER_USER["username"], "password": OTHER_USER["password"]}],
     "content": "other-content"},
]}


class Content:
    """A running server with the content folders, and an acme user's auth payload."""

    def __init__(self, running: RunningServer, base: Path, http: Http,
                 auth: dict[str, Any]) -> None:
        self.running = running
        self.base = base
        self.http = http
        self.auth = auth
        self.token: str = auth["token"]
        self.rt: str = auth["restrictedToken"]

    async def items(self, **params: str) -> dict[str, dict[str, Any]]:
        answer = await self.http.call("GET", "/api/content", token=self.token, params=params)
        assert answer.code == 200, answer
        assert answer.json["total"] == len(answer.json["results"])
        return {item["path"]: item for item in answer.json["results"]}

    async def raw(self, target: bytes, token: str | None = None,
                  headers: dict[bytes, bytes] | None = None) -> Answer:
        """GET C{target} exactly as given: no client-side normalization of the path."""
        headers = Headers({k: [v] for k, v in (headers or {}).items()})
        if token is not None:
            headers.addRawHeader(b"authorization", f"Bearer {token}".encode())
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        response = await agent.request(b"GET", self.running.url.encode() + target, headers)
        return Answer(response.code, response.headers, await treq.content(response))


@pytest_twisted.async_yield_fixture()
async def content(tmp_path: Path) -> AsyncIterator[Content]:
    build_folders(tmp_path)
    running = await start_server(SEED, directory=str(tmp_path))
    http = Http(running.url)
    yield Content(running, tmp_path, http, await http.login(**ACME_USER))
    await running.stop()


def delivery(path: str, **params: str) -> bytes:
    """The delivery URL of C{path}, escaped segment by segment as clients do."""
    escaped = "/".join(quote(part, safe="") for part in path.split("/"))
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return f"/api/delivery{escaped}{'?' + query if query else ''}".encode()


@pytest_twisted.ensureDeferred
async def test_listing_has_the_whole_tree(content: Content) -> None:
    """GET /api/content lists every folder, file and url item with its fields."""
    items = await content.items()
    assert set(items) == {
        "/", "/welcome.txt", "/homepage.url", "/images", "/images/logo.png",
        "/docs", "/docs/sub dir", "/" + REPORT, "/clock",
    }
    assert items["/"]["uuid"] == "root"
    for path, item in items.items():
        assert {"uuid", "name", "path", "subtype", "variants"} <= set(item), item
        if path != "/":
            folder = path.rsplit("/", 1)[0] or "/"
            assert item["parent"] == items[folder]["uuid"], item
            assert item["name"] == path.rsplit("/", 1)[1].removesuffix(".url")
    assert items["/images"]["subtype"] == "scala:content:folder"
    assert items["/welcome.txt"]["subtype"] == "scala:content:file"
    assert items["/images/logo.png"]["mimeType"] == "image/png"
    assert items["/images/logo.png"]["size"] == len(LOGO)
    assert len({item["uuid"] for item in items.values()}) == len(items)


@pytest_twisted.ensureDeferred
async def test_parent_lists_children(content: Content) -> None:
    """?parent=root lists the root's children only; ?parent=<folder> that folder's."""
    children = await content.items(parent="root")
    assert set(children) == {"/welcome.txt", "/homepage.url", "/images", "/docs", "/clock"}
    images = children["/images"]["uuid"]
    assert set(await content.items(parent=images)) == {"/images/logo.png"}
    folders = await content.items(subtype="scala:content:folder")
    assert set(folders) == {"/", "/images", "/docs", "/docs/sub dir"}


@pytest_twisted.ensureDeferred
async def test_get_item_by_uuid(content: Content) -> None:
    """GET /api/content/<uuid> answers the item; an unknown uuid is 404."""
    items = await content.items()
    logo = items["/images/logo.png"]
    answer = await content.http.call("GET", f"/api/content/{logo['uuid']}", token=content.token)
    assert answer.code == 200, answer
    assert answer.json == logo
    answer = await content.http.call("GET", "/api/content/root", token=content.token)
    assert answer.json["path"] == "/"
    answer = await content.http.call("GET", "/api/content/no-such-item", token=content.token)
    assert answer.code == 404, answer
    assert answer.json["code"] == "resource.notFound"


@pytest_twisted.ensureDeferred
async def test_url_item_has_its_url(content: Content) -> None:
    """A *.url file is a scala:content:url item carrying the URL it holds."""
    item = (await content.items())["/homepage.url"]
    assert item["subtype"] == "scala:content:url"
    assert item["name"] == "homepage"
    assert item["url"] == "https://www.goexp.io/"


@pytest_twisted.ensureDeferred
async def test_variants_are_on_the_base_file(content: Content) -> None:
    """logo.small.png is the variant 'small' of logo.png, not an item of its own."""
    items = await content.items()
    assert items["/images/logo.png"]["variants"] == [{"name": "small"}]
    assert items["/welcome.txt"]["variants"] == []
    assert not any("logo.small" in path for path in items)


@pytest_twisted.ensureDeferred
async def test_hidden_and_escaping_entries_are_not_listed(content: Content) -> None:
    """Dotfiles and symlinks leading out of the folder appear nowhere in the listing."""
    answer = await content.http.call("GET", "/api/content", token=content.token)
    assert b"secret" not in answer.body
    assert b"hidden" not in answer.body
    assert b"escape" not in answer.body


@pytest_twisted.ensureDeferred
async def test_delivery_serves_exact_bytes(content: Content) -> None:
    """The delivery URL with _rt serves the file's bytes, whatever its name."""
    answer = await content.raw(delivery("/images/logo.png", _rt=content.rt))
    assert answer.code == 200, answer
    assert answer.body == LOGO
    assert answer.headers.getRawHeaders(b"content-type") == [b"image/png"]
    answer = await content.raw(delivery("/" + REPORT, _rt=content.rt))
    assert answer.code == 200, answer
    assert answer.body == (content.base / "content" / REPORT).read_bytes()


@pytest_twisted.ensureDeferred
async def test_delivery_of_a_variant(content: Content) -> None:
    """&variant=small serves the variant's bytes; an unknown variant is 404."""
    answer = await content.raw(delivery("/images/logo.png", _rt=content.rt, variant="small"))
    assert answer.code == 200, answer
    assert answer.body == SMALL_LOGO
    answer = await content.raw(delivery("/images/logo.png", _rt=content.rt, variant="large"))
    assert answer.code == 404, answer
    answer = await content.raw(delivery("/welcome.txt", _rt=content.rt, variant="small"))
    assert answer.code == 404, answer


@pytest_twisted.ensureDeferred
async def test_delivery_path_escaped_as_one_segment(content: Content) -> None:
    """The path may be escaped whole (slashes as %2F) or follow a slash of its own."""
    for path in ("/images/logo.png", "images/logo.png"):
        target = f"/api/delivery/{quote(path, safe='')}?_rt={content.rt}".encode()
        answer = await content.raw(target)
        assert answer.code == 200, (path, answer)
        assert answer.body == LOGO
    # "/api/delivery/" + the item's path, which starts with a slash.
    answer = await content.raw(f"/api/delivery//images/logo.png?_rt={content.rt}".encode())
    assert answer.code == 200, answer
    assert answer.body == LOGO
    target = f"/api/delivery/{quote('/' + REPORT, safe='')}?_rt={content.rt}".encode()
    answer = await content.raw(target)
    assert answer.code == 200, answer
    assert answer.body == (content.base / "content" / REPORT).read_bytes()


@pytest_twisted.ensureDeferred
async def test_delivery_with_authorization_header(content: Content) -> None:
    """Any token of the organization works as Authorization instead of _rt."""
    app = await content.http.login(token=consumer_app_token("acme-app", "acme-key"))
    for token in (content.token, content.rt, app["token"]):
        answer = await content.raw(delivery("/welcome.txt"), token=token)
        assert answer.code == 200, answer
        assert answer.body == b"hello, world\n"


@pytest_twisted.ensureDeferred
async def test_a_folder_with_a_manifest_is_one_app(content: Content) -> None:
    """A folder holding manifest.json is a scala:content:app item, its files no items."""
    items = await content.items()
    assert items["/clock"]["subtype"] == "scala:content:app"
    assert items["/clock"]["name"] == "clock"
    assert not [path for path in items if path.startswith("/clock/")]
    assert set(await content.items(parent=items["/clock"]["uuid"])) == set()


@pytest_twisted.ensureDeferred
async def test_an_app_is_delivered_with_its_own_files(content: Content) -> None:
    """An app's file asked for with ?_rt= redirects to the token in the path, so that the
    files it loads by relative URLs carry it too; a forged path token is 401."""
    answer = await content.raw(delivery("/clock/index.html", _rt=content.rt))
    assert answer.code == 302, answer
    [location] = answer.headers.getRawHeaders(b"location")
    assert location == f"/api/delivery/_rt={content.rt}/clock/index.html".encode()
    answer = await content.raw(location)
    assert (answer.code, answer.body) == (200, CLOCK_PAGE)
    script = location.replace(b"/index.html", b"/lib/app.js")
    answer = await content.raw(script)
    assert (answer.code, answer.body) == (200, b"tick();\n")
    for bad in (delivery("/clock/lib/app.js"), b"/api/delivery/_rt=forged/clock/lib/app.js",
                b"/api/delivery/_rt=/clock/lib/app.js"):
        assert (await content.raw(bad)).code == 401, bad
    # Files outside apps are served where they are asked for.
    answer = await content.raw(delivery("/welcome.txt", _rt=content.rt))
    assert (answer.code, answer.body) == (200, b"hello, world\n")


@pytest_twisted.ensureDeferred
async def test_delivered_content_is_sandboxed_and_not_sniffed(content: Content) -> None:
    """Delivery answers carry nosniff and a CSP sandbox (no access to the API's origin),
    and name no server version."""
    for target in (delivery("/welcome.txt", _rt=content.rt),
                   f"/api/delivery/_rt={content.rt}/clock/index.html".encode()):
        answer = await content.raw(target)
        assert answer.code == 200, answer
        assert answer.headers.getRawHeaders(b"x-content-type-options") == [b"nosniff"]
        [policy] = answer.headers.getRawHeaders(b"content-security-policy")
        assert policy.startswith(b"sandbox ") and b"allow-same-origin" not in policy
        assert answer.headers.getRawHeaders(b"server") == [b"exp"]


@pytest_twisted.ensureDeferred
async def test_many_ranges_get_the_whole_file(content: Content) -> None:
    """A Range of a few parts is answered 206; hundreds of parts get the whole file (200)."""
    target = delivery("/images/logo.png", _rt=content.rt)
    answer = await content.raw(target, headers={b"range": b"bytes=0-3,5-9"})
    assert answer.code == 206, answer
    many = b"bytes=" + b",".join(b"%d-%d" % (i, i) for i in range(400))
    answer = await content.raw(target, headers={b"range": many})
    assert (answer.code, answer.body) == (200, LOGO)


@pytest_twisted.ensureDeferred
async def test_delivery_needs_a_valid_token(content: Content) -> None:
    """Without a token delivery is 401, and so with a token that is not the server's."""
    answer = await content.raw(delivery("/welcome.txt"))
    assert answer.code == 401, answer
    assert b"hello" not in answer.body
    answer = await content.raw(delivery("/welcome.txt", _rt="not-a-token"))
    assert answer.code == 401, answer


@pytest_twisted.ensureDeferred
async def test_other_organization_cannot_read(content: Content) -> None:
    """A token of another organization gets 404 for this organization's files."""
    other = await content.http.login(**OTHER_USER)
    answer = await content.raw(delivery("/welcome.txt", _rt=other["restrictedToken"]))
    assert answer.code == 404, answer
    answer = await content.raw(delivery("/images/logo.png"), token=other["token"])
    assert answer.code == 404, answer
    answer = await content.raw(delivery("/other.txt", _rt=other["restrictedToken"]))
    assert answer.code == 200, answer
    assert answer.body == b"the other organization's file"
    answer = await content.raw(delivery("/other.txt", _rt=content.rt))
    assert answer.code == 404, answer
    listing = await content.http.call("GET", "/api/content", token=other["token"])
    assert {item["path"] for item in listing.json["results"]} == {"/", "/other.txt"}


@pytest_twisted.ensureDeferred
async def test_no_file_outside_the_folder_is_served(content: Content) -> None:
    """Traversal, absolute paths, symlinks out, dotfiles and NUL bytes are all 404."""
    outside = str(content.base / "outside.txt")
    targets = [
        "/api/delivery/../outside.txt",
        "/api/delivery/images/../../outside.txt",
        "/api/delivery/%2e%2e/outside.txt",
        "/api/delivery/%2E%2E%2Foutside.txt",
        "/api/delivery/..%2Foutside.txt",
        "/api/delivery/images%2F..%2F..%2Foutside.txt",
        "/api/delivery/%252e%252e/outside.txt",
        "/api/delivery/" + quote(outside),
        "/api/delivery/" + quote(outside, safe=""),
        "/api/delivery/escape.txt",
        "/api/delivery/escape-dir/secret.txt",
        "/api/delivery/.secret",
        "/api/delivery/%2Esecret",
        "/api/delivery/.hidden/inside.txt",
        "/api/delivery/welcome.txt%00.png",
        "/api/delivery/images/logo.png?variant=%2F..%2F..%2F..%2Foutside",
        "/api/delivery/images/logo.png?variant=..",
        "/api/delivery/images/logo.png?variant=",
        "/api/delivery/",
    ]
    for target in targets:
        joiner = "&" if "?" in target else "?"
        answer = await content.raw(f"{target}{joiner}_rt={content.rt}".encode())
        assert answer.code == 404, (target, answer)
        assert OUTSIDE not in answer.body
        assert b"dotfile" not in answer.body and b"hidden folder" not in answer.body


# -- location layouts (the demo seed) -------------------------------------------


def demo_layout() -> bytes:
    with open(os.path.join(os.path.dirname(demo_seed_path()), "layout.png"), "rb") as f:
        return f.read()


@pytest_twisted.ensureDeferred
async def test_demo_layout_is_served_with_rt(http: Http) -> None:
    """The demo location's layout GET with the restricted token answers its PNG bytes."""
    auth = await http.login(username=DEMO["username"], password=DEMO["password"],
                            organization=DEMO["organization"])
    answer = await http.call("GET", "/api/locations/demo-location/layout",
                             params={"_rt": auth["restrictedToken"]})
    assert answer.code == 200, answer
    assert answer.body.startswith(b"\x89PNG\r\n\x1a\n")
    assert answer.body == demo_layout()
    assert answer.headers.getRawHeaders(b"content-type") == [b"image/png"]
    assert answer.headers.getRawHeaders(b"x-content-type-options") == [b"nosniff"]
    answer = await http.call("GET", "/api/locations/demo-location/layout")
    assert answer.code == 401, answer


@pytest_twisted.ensureDeferred
async def test_user_uploads_a_layout(http: Http, token: str) -> None:
    """PUT of an image/* body stores the layout that GET then answers."""
    image = b"\x89PNG\r\n\x1a\n" + os.urandom(2000)
    answer = await http.call("PUT", "/api/locations/demo-location/layout", raw=image,
                             token=token, headers={"Content-Type": "image/png"})
    assert answer.code == 200, answer
    answer = await http.call("GET", "/api/locations/demo-location/layout", token=token)
    assert answer.code == 200, answer
    assert answer.body == image
    assert answer.headers.getRawHeaders(b"content-type") == [b"image/png"]


@pytest_twisted.ensureDeferred
async def test_layout_upload_errors(http: Http, token: str) -> None:
    """A non-image body is 400, an unknown location 404, and neither changes anything."""
    answer = await http.call("PUT", "/api/locations/demo-location/layout", {"not": "image"},
                             token=token)
    assert answer.code == 400, answer
    assert answer.json["code"] == "layout.notImage"
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    for kind in ("image/svg+xml", "image/x-anything", "text/html"):
        answer = await http.call("PUT", "/api/locations/demo-location/layout", raw=svg,
                                 token=token, headers={"Content-Type": kind})
        assert (answer.code, answer.json["code"]) == (400, "layout.notImage"), kind
    answer = await http.call("PUT", "/api/locations/no-such-location/layout", raw=b"\x89PNG",
                             token=token, headers={"Content-Type": "image/png"})
    assert answer.code == 404, answer
    answer = await http.call("GET", "/api/locations/no-such-location/layout", token=token)
    assert answer.code == 404, answer
    answer = await http.call("GET", "/api/locations/demo-location/layout", token=token)
    assert answer.body == demo_layout()


@pytest_twisted.ensureDeferred
async def test_consumer_app_cannot_upload_a_layout(http: Http) -> None:
    """A consumer app may read the layout but uploading one is 403."""
    app = await http.login(token=consumer_app_token(DEMO["consumer_uuid"], DEMO["api_key"]))
    answer = await http.call("PUT", "/api/locations/demo-location/layout", raw=b"\x89PNG!",
                             token=app["token"], headers={"Content-Type": "image/png"})
    assert answer.code == 403, answer
    assert answer.json["code"] == "permission.denied"
    answer = await http.call("GET", "/api/locations/demo-location/layout", token=app["token"])
    assert answer.code == 200, answer
    assert answer.body == demo_layout()
