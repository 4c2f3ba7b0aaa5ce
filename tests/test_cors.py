"""
Cross-origin requests (README: Decisions where the protocol is silent, CORS):
the headers a browser needs to let a page on another origin read the REST API
and poll the network, over real HTTP.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.python import usage

from exp.server._cors import normalize_origin
from exp.server.tap import Options, makeService
from exp.server.testing import RunningServer, start_server

from ._eio import Polling, frame
from ._support import assert_error
from .conftest import Answer, Http

PAGE = "http://127.0.0.1:8080"
ALLOWED = ("http://app.test", "https://kiosk.test:8443")
API_METHODS = {"DELETE", "GET", "PATCH", "POST", "PUT"}


@pytest_twisted.async_yield_fixture()
async def anyone() -> AsyncIterator[RunningServer]:
    """A demo server with the default: any origin."""
    running = await start_server()
    yield running
    await running.stop()


@pytest_twisted.async_yield_fixture()
async def restricted() -> AsyncIterator[RunningServer]:
    """A demo server that allows the origins of L{ALLOWED} only."""
    running = await start_server(cors_origins=ALLOWED)
    yield running
    await running.stop()


def header(answer: Answer, name: str) -> str | None:
    values = answer.headers.getRawHeaders(name)
    return None if values is None else ", ".join(values)


def assert_allows(answer: Answer, origin: str) -> None:
    """C{answer} may be read by a page of C{origin}, with credentials."""
    assert header(answer, "Access-Control-Allow-Origin") == origin, answer.headers
    assert header(answer, "Access-Control-Allow-Credentials") == "true", answer.headers
    assert "Origin" in (header(answer, "Vary") or ""), answer.headers


def assert_no_cors(answer: Answer) -> None:
    """C{answer} carries no CORS permission at all."""
    names = {name.lower() for name, _ in answer.headers.getAllRawHeaders()}
    assert not {n for n in names if n.startswith(b"access-control-")}, answer.headers
    assert "Origin" in (header(answer, "Vary") or ""), answer.headers


async def preflight(http: Http, path: str, method: str, origin: str = PAGE,
                    requested: str | None = "authorization,content-type,accept",
                    params: Any = None) -> Answer:
    headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if requested is not None:
        headers["Access-Control-Request-Headers"] = requested
    return await http.call("OPTIONS", path, headers=headers, params=params)


# -- any origin (the default) -------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_answer_names_the_requesting_origin(anyone: RunningServer) -> None:
    """By default an answer allows its request's exact origin, with credentials."""
    http = Http(anyone.url)
    token = await http.user_token()
    for origin in (PAGE, "https://elsewhere.example", "null"):
        answer = await http.call("GET", "/api/devices", token=token, headers={"Origin": origin})
        assert answer.code == 200, answer
        assert_allows(answer, origin)


@pytest_twisted.ensureDeferred
async def test_delivered_content_names_the_origin(anyone: RunningServer) -> None:
    """Content files delivered by /api/delivery can be read by the page too."""
    http = Http(anyone.url)
    token = await http.user_token()
    answer = await http.call("GET", "/api/delivery/welcome.txt", token=token,
                             headers={"Origin": PAGE})
    assert answer.code == 200 and answer.body, answer
    assert_allows(answer, PAGE)


@pytest_twisted.ensureDeferred
async def test_no_origin_no_cors_headers(anyone: RunningServer) -> None:
    """A request without Origin (not from a page elsewhere) gets only Vary: Origin."""
    answer = await Http(anyone.url).call("GET", "/api/openapi.json")
    assert answer.code == 200, answer
    assert_no_cors(answer)


@pytest_twisted.ensureDeferred
async def test_preflight_of_every_route(anyone: RunningServer) -> None:
    """Every /api route answers its preflight 204 with methods, headers and max age."""
    http = Http(anyone.url)
    routes = anyone.server.router.routes()
    assert {method for method, _ in routes} == API_METHODS
    for method, template in routes:
        path = re.sub(r"\{\w+\*?\}", "x", template)
        answer = await preflight(http, path, method)
        assert (answer.code, answer.body) == (204, b""), (method, path, answer)
        assert_allows(answer, PAGE)
        methods = {m.strip() for m in (header(answer, "Access-Control-Allow-Methods") or "")
                   .split(",")}
        assert methods == API_METHODS, answer.headers
        assert header(answer, "Access-Control-Allow-Headers") == \
            "authorization,content-type,accept", answer.headers
        assert header(answer, "Access-Control-Max-Age") == "600", answer.headers
        assert header(answer, "Content-Length") is None, answer.headers


@pytest_twisted.ensureDeferred
async def test_preflight_never_reaches_the_handler(anyone: RunningServer) -> None:
    """A preflight of DELETE deletes nothing, and needs no token."""
    http = Http(anyone.url)
    answer = await preflight(http, "/api/things/demo-thing", "DELETE")
    assert answer.code == 204, answer
    token = await http.user_token()
    assert (await http.call("GET", "/api/things/demo-thing", token=token)).code == 200


@pytest_twisted.ensureDeferred
async def test_preflight_without_requested_headers(anyone: RunningServer) -> None:
    """A preflight that names no headers is told Accept, Authorization and Content-Type."""
    answer = await preflight(Http(anyone.url), "/api/auth/login", "POST", requested=None)
    assert answer.code == 204, answer
    assert header(answer, "Access-Control-Allow-Headers") == \
        "Accept, Authorization, Content-Type", answer.headers


@pytest_twisted.ensureDeferred
async def test_plain_options_is_not_a_preflight(anyone: RunningServer) -> None:
    """OPTIONS without Access-Control-Request-Method is an ordinary 405."""
    answer = await Http(anyone.url).call("OPTIONS", "/api/devices", headers={"Origin": PAGE})
    assert_error(answer, 405, "method.notAllowed")
    assert_allows(answer, PAGE)


@pytest_twisted.ensureDeferred
async def test_errors_carry_cors_headers(anyone: RunningServer) -> None:
    """Error answers {code, message} can be read by the page: 400, 401, 404, 405."""
    http = Http(anyone.url)
    token = await http.user_token()
    origin = {"Origin": PAGE}
    cases = [
        (await http.call("GET", "/api/devices", headers=origin), 401, "auth.required"),
        (await http.call("POST", "/api/things", raw=b"{", token=token, headers=origin),
         400, "request.invalidJson"),
        (await http.call("GET", "/api/things/nothing", token=token, headers=origin),
         404, "resource.notFound"),
        (await http.call("GET", "/api/nowhere", token=token, headers=origin),
         404, "route.notFound"),
        (await http.call("PUT", "/api/devices", token=token, headers=origin),
         405, "method.notAllowed"),
        (await http.call("POST", "/api/auth/login", {"username": "nobody", "password": "x",
                                                     "organization": "scala"}, headers=origin),
         401, None),
    ]
    for answer, status, code in cases:
        assert_error(answer, status, code)
        assert_allows(answer, PAGE)


@pytest_twisted.ensureDeferred
async def test_too_large_body_carries_cors_headers() -> None:
    """A 413 for a body over --max-body can be read by the page."""
    running = await start_server(max_body=1024)
    try:
        http = Http(running.url)
        answer = await http.call("POST", "/api/auth/login", raw=b"x" * 2048,
                                 headers={"Origin": PAGE})
        assert_error(answer, 413, "payload.tooLarge")
        assert_allows(answer, PAGE)
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_socketio_polling(anyone: RunningServer) -> None:
    """Handshake, POST and GET polls, their preflight and errors all allow the page."""
    http = Http(anyone.url)
    polling = Polling(http, await http.user_token())
    origin = {"Origin": PAGE}
    handshake = await http.call("GET", "/socket.io/", params=polling.params(), headers=origin)
    assert handshake.code == 200, handshake
    assert_allows(handshake, PAGE)
    await polling.open()
    post = await http.call("POST", "/socket.io/", params=polling.params(),
                           raw=frame(["2probe"]).encode(), headers=origin)
    assert (post.code, post.body) == (200, b"ok"), post
    assert_allows(post, PAGE)
    get = await http.call("GET", "/socket.io/", params=polling.params(), headers=origin)
    assert get.code == 200 and b"3probe" in get.body, get
    assert_allows(get, PAGE)
    answer = await preflight(http, "/socket.io/", "POST", requested="content-type",
                             params=polling.params())
    assert (answer.code, answer.body) == (204, b""), answer
    assert_allows(answer, PAGE)
    assert header(answer, "Access-Control-Allow-Methods") == "GET, POST", answer.headers
    for params in (polling.params(sid="unknown"), {"EIO": "2", "transport": "polling"},
                   polling.params(transport="carrier-pigeon"), {"EIO": "3"}):
        error = await http.call("GET", "/socket.io/", params=params, headers=origin)
        assert error.code in (400, 401), error
        assert error.json["message"], error
        assert_allows(error, PAGE)


# -- --cors-origin ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_listed_origins_are_allowed(restricted: RunningServer) -> None:
    """With --cors-origin, each listed origin is allowed on REST and polling."""
    http = Http(restricted.url)
    token = await http.user_token()
    for origin in ALLOWED:
        answer = await http.call("GET", "/api/devices", token=token, headers={"Origin": origin})
        assert answer.code == 200, answer
        assert_allows(answer, origin)
        answer = await preflight(http, "/api/devices", "GET", origin=origin)
        assert answer.code == 204, answer
        assert_allows(answer, origin)
        answer = await http.call("GET", "/socket.io/", headers={"Origin": origin},
                                 params=Polling(http, token).params())
        assert answer.code == 200, answer
        assert_allows(answer, origin)


@pytest_twisted.ensureDeferred
async def test_other_origins_get_no_cors_headers(restricted: RunningServer) -> None:
    """With --cors-origin, another origin's requests are answered without CORS headers."""
    http = Http(restricted.url)
    token = await http.user_token()
    for origin in (PAGE, "https://kiosk.test", "http://kiosk.test:8443", "null"):
        answer = await http.call("GET", "/api/devices", token=token, headers={"Origin": origin})
        assert answer.code == 200, answer
        assert_no_cors(answer)
        answer = await http.call("GET", "/socket.io/", headers={"Origin": origin},
                                 params=Polling(http, token).params())
        assert answer.code == 200, answer
        assert_no_cors(answer)


@pytest_twisted.ensureDeferred
async def test_preflight_of_other_origin_is_403(restricted: RunningServer) -> None:
    """With --cors-origin, another origin's preflight is 403 cors.originNotAllowed."""
    http = Http(restricted.url)
    for path in ("/api/devices", "/socket.io/"):
        answer = await preflight(http, path, "GET", params={"EIO": "3", "transport": "polling"})
        assert_error(answer, 403, "cors.originNotAllowed")
        assert PAGE in answer.json["message"], answer
        assert_no_cors(answer)


@pytest_twisted.ensureDeferred
async def test_no_origins_allows_none() -> None:
    """cors_origins=() lets no page elsewhere read any answer."""
    running = await start_server(cors_origins=())
    try:
        http = Http(running.url)
        assert_no_cors(await http.call("GET", "/api/devices", headers={"Origin": PAGE}))
        assert_error(await preflight(http, "/api/devices", "GET"), 403, "cors.originNotAllowed")
    finally:
        await running.stop()


# -- the option ---------------------------------------------------------------------


@pytest.mark.parametrize(("value", "origin"), [
    ("*", "*"),
    ("null", "null"),
    ("http://localhost:3000", "http://localhost:3000"),
    ("HTTP://LocalHost:3000/", "http://localhost:3000"),
    ("https://app.example:443", "https://app.example"),
    ("http://app.example:80", "http://app.example"),
    ("http://[::1]:8080", "http://[::1]:8080"),
    (" https://app.example ", "https://app.example"),
])
def test_origin_is_normalized(value: str, origin: str) -> None:
    """An origin is compared as browsers send it: lower case, no default port, no slash."""
    assert normalize_origin(value) == origin


@pytest.mark.parametrize("value", [
    "localhost:3000", "app.example", "http://app.example/path", "http://app.example?x=1",
    "http://user@app.example", "http://app.example:port", "", "http://",
])
def test_bad_origin_is_a_usage_error(value: str) -> None:
    """--cors-origin with something that is not an origin stops twistd with a message."""
    with pytest.raises(usage.UsageError, match="--cors-origin"):
        Options().parseOptions(["--cors-origin", value])


def test_cors_origin_is_repeatable(tmp_path: Path) -> None:
    """--cors-origin may be given many times; without it any origin is allowed."""
    db = ["--db", str(tmp_path / "exp.sqlite3")]
    for args, origins in (
        (["--cors-origin", "http://a.test", "--cors-origin", "https://b.test/"],
         ("http://a.test", "https://b.test")),
        ([], ("*",)),
    ):
        options = Options()
        options.parseOptions([*db, *args])
        service = makeService(options)
        assert service.server.config.cors_origins == origins  # type: ignore[attr-defined]
