"""
The REST API's answers to broken requests (README: Errors): each is a JSON
C{{code, message}} with the right status, and the server keeps serving.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from io import BytesIO
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from exp.protocol import encode_channel
from exp.server.testing import DEMO, RunningServer, start_server

from ._support import assert_error
from .conftest import Answer, Http

LIMIT = 1024


async def still_serving(http: Http, token: str) -> None:
    """A normal call after an error still works."""
    answer = await http.call("GET", "/api/things/demo-thing", token=token)
    assert answer.code == 200, answer
    assert answer.json["uuid"] == "demo-thing"


# -- bodies -------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b'{"name": ', b"{'name': 'x'}", b"not json", b'{"a": 1}}', b"\xff\xfe{}",
    b'{"a": NaN}', b"[Infinity]", b"-Infinity", b"1e999", b'{"a": -1e400}',
    b"[" * 100_000,
])
@pytest_twisted.ensureDeferred
async def test_malformed_json_is_400(http: Http, token: str, raw: bytes) -> None:
    """A body that is not strict UTF-8 JSON is 400 request.invalidJson."""
    for method, path in (("POST", "/api/things"), ("PATCH", "/api/things/demo-thing"),
                         ("PUT", "/api/data/g/k"), ("POST", "/api/logs"),
                         ("POST", "/api/auth/login")):
        answer = await http.call(method, path, raw=raw, token=token)
        assert_error(answer, 400, "request.invalidJson")
    assert (await http.call("GET", "/api/data/g/k", token=token)).code == 404
    await still_serving(http, token)


@pytest.mark.parametrize("raw", [b"", b"   \r\n\t "])
@pytest_twisted.ensureDeferred
async def test_empty_body_is_an_empty_document(http: Http, token: str, raw: bytes) -> None:
    """POST, PATCH and PUT without a body (or with only blanks) act on {}, as the
    official clients mean when they send none; where {} is not enough, 400 says why."""
    created = await http.call("POST", "/api/things", raw=raw, token=token)
    assert created.code == 200, created
    assert created.json["name"] == "" and created.json["uuid"]
    before = (await http.call("GET", "/api/things/demo-thing", token=token)).json
    patched = await http.call("PATCH", "/api/things/demo-thing", raw=raw, token=token)
    assert (patched.code, patched.json) == (200, before)
    put = await http.call("PUT", "/api/data/g/k", raw=raw, token=token)
    assert (put.code, put.json) == (200, {"group": "g", "key": "k", "value": {}})
    for method, path, code in (("POST", "/api/logs", "logs.invalid"),
                               ("POST", "/api/auth/login", "auth.invalidRequest"),
                               ("POST", "/api/networks/current/broadcasts", "channel.invalid"),
                               ("POST", "/api/devices/pair", "pairing.codeRequired")):
        assert_error(await http.call(method, path, raw=raw, token=token), 400, code)
    await still_serving(http, token)


@pytest_twisted.ensureDeferred
async def test_delete_ignores_its_body(http: Http, token: str) -> None:
    """A DELETE's body, JSON or not, is ignored."""
    made = await http.call("POST", "/api/things", {"name": "doomed"}, token=token)
    answer = await http.call("DELETE", f"/api/things/{made.json['uuid']}", raw=b"{not json",
                             token=token)
    assert answer.code == 200, answer
    assert (await http.call("GET", f"/api/things/{made.json['uuid']}", token=token)).code == 404


@pytest.mark.parametrize("document", [[1, 2], [], "text", 42, None, True])
@pytest_twisted.ensureDeferred
async def test_document_that_is_not_an_object_is_400(http: Http, token: str,
                                                     document: Any) -> None:
    """Where a document is expected, any JSON other than an object is 400."""
    raw = json.dumps(document).encode()
    for method, path in (("POST", "/api/things"), ("PATCH", "/api/things/demo-thing"),
                         ("POST", "/api/auth/login"), ("POST", "/api/devices/pair"),
                         ("POST", "/api/networks/current/broadcasts"),
                         ("POST", "/api/networks/current/responses")):
        answer = await http.call(method, path, raw=raw, token=token)
        assert_error(answer, 400, "request.invalidDocument")
    answer = await http.call("GET", "/api/things/demo-thing", token=token)
    assert answer.json["name"] == "badge reader"
    await still_serving(http, token)


# -- routes and methods --------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/api/nothing", "/api/devices/test-uuid/more", "/api/data/onlygroup",
    "/api/data/a/b/c", "/api/networks/current", "/api/", "/api",
])
@pytest_twisted.ensureDeferred
async def test_unknown_api_route_is_404(http: Http, token: str, path: str) -> None:
    """A path under /api that names no route is 404 route.notFound."""
    for method in ("GET", "POST", "DELETE"):
        answer = await http.call(method, path, token=token)
        assert_error(answer, 404, "route.notFound")
    await still_serving(http, token)


@pytest.mark.parametrize("path", ["/nothing", "/index.html", "/socket.io.js",
                                  "/apix/devices", "/API/devices", "//console"])
@pytest_twisted.ensureDeferred
async def test_unknown_top_level_path_is_404_json(http: Http, token: str, path: str) -> None:
    """A path outside /api is a JSON 404 too, for any method and without a token."""
    for method in ("GET", "POST", "PUT"):
        answer = await http.call(method, path)
        assert_error(answer, 404, "route.notFound")
    await still_serving(http, token)


@pytest_twisted.ensureDeferred
async def test_the_root_leads_to_the_web_console(http: Http, token: str) -> None:
    """GET / is redirected to the console (/console/); other methods there are a JSON 404."""
    answer = await http.call("GET", "/")  # treq follows the redirect
    assert answer.code == 200 and b"<title>EXP console</title>" in answer.body, answer
    for method in ("POST", "PUT"):
        assert_error(await http.call(method, "/"), 404, "route.notFound")
    await still_serving(http, token)


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/api/devices", b"GET, POST"),
    ("DELETE", "/api/connectors/feeds", b"GET, POST"),
    ("POST", "/api/things/demo-thing", b"DELETE, GET, PATCH"),
    ("PUT", "/api/things/demo-thing", b"DELETE, GET, PATCH"),
    ("GET", "/api/auth/login", b"POST"),
    ("DELETE", "/api/auth/token", b"POST"),
    ("POST", "/api/data", b"GET"),
    ("POST", "/api/data/cats/fluffy", b"DELETE, GET, PUT"),
    ("GET", "/api/networks/current/broadcasts", b"POST"),
    ("DELETE", "/api/locations/demo-location/layout", b"GET, PUT"),
    ("POST", "/api/content", b"GET"),
    ("OPTIONS", "/api/logs", b"POST"),
])
@pytest_twisted.ensureDeferred
async def test_wrong_method_is_405_with_allow(http: Http, token: str, method: str,
                                              path: str, allow: bytes) -> None:
    """A known path with a method it does not take is 405 with an Allow header."""
    answer = await http.call(method, path, token=token)
    assert_error(answer, 405, "method.notAllowed")
    assert answer.headers.getRawHeaders(b"allow") == [allow]
    await still_serving(http, token)


@pytest.mark.parametrize(("method", "path", "answer"), [
    ("GET", "/api/a", "first"), ("GET", "/api/a/", "first"), ("GET", "/api/b", "any-b"),
    ("GET", "/api/b/x", "b-x"), ("POST", "/api/b/x", "any-x"), ("GET", "/x/y/z", "deep"),
    ("GET", "/api/c/x", "any-x"), ("PUT", "/api/a", 405), ("GET", "/api/d", "any-d"),
    ("GET", "/api/d/e", 404),
    ("GET", "/api", 404), ("GET", "/", 404), ("GET", "/api/a/b/c", 404),
])
def test_a_path_takes_the_first_route_it_matches(method: str, path: str,
                                                  answer: str | int) -> None:
    """Routes are matched in the order added, whatever their first segments (the router
    looks only at those that may match); a known path's other methods are 405."""
    from twisted.web.test.requesthelper import DummyRequest

    from exp.server._web import Router

    router = Router()
    for route_method, template in [("GET", "/api/a"), ("GET", "/api/{kind}"),
                                   ("GET", "/api/b/x"), ("GET", "/{one}/{two}/z"),
                                   ("GET", "/api/{kind}/x"), ("POST", "/api/{kind}/x")]:
        async def handler(req: Any, template: str = template, route_method: str = route_method
                          ) -> str:
            names = {"/api/a": "first", "/api/b/x": "b-x", "/{one}/{two}/z": "deep"}
            if template == "/api/{kind}":
                return f"any-{req.match['kind']}"
            return names.get(template, "any-x")

        router.add(route_method, template, handler)
    request = DummyRequest(path.lstrip("/").split("/"))
    request.method, request.path, request.uri = method.encode(), path.encode(), path.encode()
    router.render(request)
    body = b"".join(request.written)
    if isinstance(answer, int):
        assert request.responseCode == answer and b"code" in body, body
    else:
        assert json.loads(body) == answer


@pytest_twisted.ensureDeferred
async def test_wrong_method_is_405_before_authentication(http: Http, token: str) -> None:
    """A wrong method is 405 even without a token: the route decides first."""
    answer = await http.call("PUT", "/api/devices")
    assert_error(answer, 405, "method.notAllowed")
    await still_serving(http, token)


# -- authorization header ----------------------------------------------------------------


@pytest.mark.parametrize("header", [
    "Basic dGVzdDp0ZXN0", "Token {token}", "{token}", "Bearer", "Bearer    ", "bearer",
    "Bearer garbage", "Bearer {token}x",
])
@pytest_twisted.ensureDeferred
async def test_bad_authorization_header_is_401(http: Http, token: str, header: str) -> None:
    """An Authorization header that is not 'Bearer <valid token>' is 401."""
    headers = {"Authorization": header.format(token=token)}
    for method, path in (("GET", "/api/devices"), ("POST", "/api/auth/token"),
                         ("GET", "/api/delivery/welcome.txt")):
        answer = await http.call(method, path, headers=headers)
        assert_error(answer, 401, "auth.invalid")
    await still_serving(http, token)


@pytest_twisted.ensureDeferred
async def test_bearer_scheme_is_case_insensitive(http: Http, token: str) -> None:
    """'bearer <token>' is as good as 'Bearer <token>'."""
    answer = await http.call("GET", "/api/devices", headers={"Authorization": f"bearer {token}"})
    assert answer.code == 200, answer


@pytest_twisted.ensureDeferred
async def test_missing_token_is_401(http: Http, token: str) -> None:
    """A call that needs a token and has none is 401 auth.required."""
    for method, path in (("GET", "/api/devices"), ("POST", "/api/things"),
                         ("GET", "/api/data/cats/fluffy"), ("POST", "/api/auth/token"),
                         ("GET", "/api/delivery/welcome.txt")):
        answer = await http.call(method, path, {"name": "x"} if method == "POST" else None)
        assert_error(answer, 401, "auth.required")
    await still_serving(http, token)


# -- body size ----------------------------------------------------------------------------


@pytest_twisted.async_yield_fixture()
async def small() -> AsyncIterator[RunningServer]:
    running = await start_server(max_body=LIMIT)
    yield running
    await running.stop()


@implementer(IBodyProducer)
class Chunked:
    """A body of unknown length: the agent sends it with chunked transfer encoding."""

    length = UNKNOWN_LENGTH

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def startProducing(self, consumer: Any) -> Deferred[None]:
        for chunk in self._chunks:
            consumer.write(chunk)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


async def raw_request(agent: Agent, method: str, url: str, token: str | None,
                      body: IBodyProducer | None) -> Answer:
    headers = Headers({b"content-type": [b"application/json"]})
    if token is not None:
        headers.addRawHeader(b"authorization", f"Bearer {token}".encode())
    response = await agent.request(method.encode(), url.encode(), headers, body)
    return Answer(response.code, response.headers, await readBody(response))


def document_of(size: int) -> bytes:
    """A JSON object of exactly C{size} bytes."""
    head = b'{"name": "'
    tail = b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


@pytest_twisted.ensureDeferred
async def test_body_over_limit_is_413(small: RunningServer) -> None:
    """A body with a Content-Length over --max-body is 413; one at the limit is served."""
    http = Http(small.url)
    token = await http.user_token()
    for size in (LIMIT + 1, 10 * LIMIT, 200 * LIMIT):
        answer = await http.call("POST", "/api/things", raw=document_of(size), token=token)
        assert_error(answer, 413, "payload.tooLarge")
        answer = await http.call("POST", "/api/auth/login", raw=document_of(size))
        assert_error(answer, 413, "payload.tooLarge")
    found = await http.call("GET", "/api/things", token=token, params={"limit": "0"})
    assert found.json["total"] == 1
    answer = await http.call("POST", "/api/things", raw=document_of(LIMIT), token=token)
    assert answer.code == 200, answer
    await still_serving(http, token)


@pytest_twisted.ensureDeferred
async def test_chunked_body_over_limit_is_413(small: RunningServer) -> None:
    """A chunked body that grows over --max-body is 413; a small chunked body is served."""
    http = Http(small.url)
    token = await http.user_token()
    pool = HTTPConnectionPool(reactor, persistent=False)
    agent = Agent(reactor, pool=pool)
    body = document_of(4 * LIMIT)
    chunks = [body[i:i + 300] for i in range(0, len(body), 300)]
    answer = await raw_request(agent, "POST", small.url + "/api/things", token, Chunked(chunks))
    assert_error(answer, 413, "payload.tooLarge")
    answer = await raw_request(agent, "PUT", small.url + "/api/data/g/k", token,
                               Chunked([b"[1, ", b"2, ", b"3]"]))
    assert answer.code == 200, answer
    assert answer.json == {"group": "g", "key": "k", "value": [1, 2, 3]}
    found = await http.call("GET", "/api/things", token=token, params={"limit": "0"})
    assert found.json["total"] == 1
    await still_serving(http, token)


@pytest_twisted.ensureDeferred
async def test_connection_is_reused_after_errors(small: RunningServer) -> None:
    """On one persistent connection, errors (413 included) leave later calls working."""
    http = Http(small.url)
    token = await http.user_token()
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 1
    agent = Agent(reactor, pool=pool)
    url = small.url

    def body(data: bytes) -> FileBodyProducer:
        return FileBodyProducer(BytesIO(data))

    try:
        calls = [
            ("POST", "/api/things", body(document_of(3 * LIMIT)), 413),
            ("GET", "/api/things/demo-thing", None, 200),
            ("POST", "/api/things", body(b"{nope"), 400),
            ("GET", "/api/things/demo-thing", None, 200),
            ("PUT", "/api/things", body(b"{}"), 405),
            ("GET", "/api/nothing", None, 404),
            ("POST", "/api/things", Chunked([document_of(2 * LIMIT)]), 413),
            ("GET", "/api/things/demo-thing", None, 200),
        ]
        for method, path, producer, status in calls:
            answer = await raw_request(agent, method, url + path, token, producer)
            assert answer.code == status, (method, path, answer)
            if status >= 400:
                assert_error(answer, status)
    finally:
        await pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_text_with_nul_is_stored_on_sqlite_and_400_on_postgresql(
        http: Http, token: str, backend: dict[str, Any]) -> None:
    """PostgreSQL cannot hold U+0000: a document or key with it is 400 there, never 5xx."""
    on_postgresql = bool(backend)
    for method, path, body in (("POST", "/api/things", {"name": "a\u0000b"}),
                               ("PUT", "/api/data/g/k", {"v": "\u0000"}),
                               ("PUT", "/api/data/g%00/k", {"v": 1})):
        answer = await http.call(method, path, body, token=token)
        if on_postgresql:
            assert_error(answer, 400, "request.invalidDocument")
        else:
            assert answer.code == 200, answer
    answer = await http.call("GET", "/api/data/g/k", token=token)
    assert answer.code == (404 if on_postgresql else 200), answer
    answer = await http.call("GET", "/api/things/a%00b", token=token)
    assert answer.code == (400 if on_postgresql else 404), answer
    # A broadcast is any JSON (PROTOCOL.md A4), and is not stored.
    channel = encode_channel(DEMO["organization"], "nul")
    answer = await http.call("POST", "/api/networks/current/broadcasts",
                             {"channel": channel, "name": "n", "payload": "\u0000"}, token=token)
    assert answer.code == 200, answer
    await still_serving(http, token)
