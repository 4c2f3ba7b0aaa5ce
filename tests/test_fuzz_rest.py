"""
Hostile requests against every operation of the OpenAPI description
(exp/server/openapi.json), over real HTTP, against one server in a child
process: malformed and hostile bodies, parameters, headers and path
segments.  Whatever comes in, the server answers below 500 (but the 502 of
a feed whose source is broken: the fuzz has such feeds), every error is a
JSON C{{code, message}}, and it keeps serving normal calls.

The requests are made of raw bytes on a socket, so nothing on the way
tidies them up.  The answers that are not C{{code, message}} are Twisted's
own bodiless ones to requests that never reach the API: 400 to a head it
will not parse (over its 16 KiB limit, control characters, raw non-ASCII
bytes in the target) and 405 to the target C{*} with a method other than
OPTIONS.  The server's log must hold no traceback at the end.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import attrs
import pytest
from hypothesis import strategies as st

from exp.server.testing import DEMO

from ._fuzz import (
    HEAD_LIMIT,
    HS256,
    LOBBY,
    ORG,
    Fuzzed,
    Reply,
    check_serving,
    hostile_json,
    is_error_body,
    json_text,
    json_values,
    jwt,
    jwt_headers,
    logged_failures,
    login_tokens,
    near_limit_bodies,
    raw_request,
    repeat,
    run_examples,
    server_claims,
    start_fuzzed,
    time_claims,
)
from ._network import channel
from ._openapi import SPEC, operations, resolve

pytestmark = pytest.mark.slow

#: Examples per operation; raise EXP_FUZZ_EXAMPLES for a longer hunt.
EXAMPLES = 25


@attrs.frozen(repr=False)
class Operation:
    method: str
    path: str
    operation: dict[str, Any]
    parameters: list[dict[str, Any]]

    def __str__(self) -> str:
        return str(self.operation["operationId"])

    __repr__ = __str__


OPERATIONS = [Operation(*found) for found in operations(SPEC)]


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Fuzzed]:
    running = start_fuzzed()
    try:
        yield running
    finally:
        log = running.server.log()
        running.server.stop()
    # What the server logged as a failure is a bug even if it answered.
    assert not logged_failures(log), "\n".join(logged_failures(log)[:5])


# -- requests -------------------------------------------------------------------------


@attrs.frozen
class Request:
    """One request, as bytes."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes | None
    chunked: bool = False

    @property
    def below_api(self) -> bool:
        """
        Whether Twisted's HTTP layer may answer this request itself, before
        the API sees it: a head over its size limit, control characters, raw
        bytes outside printable ASCII in the target, or the target C{*}.
        """
        head = self.target + b"".join(n + v for n, v in self.headers)
        return (self.target == b"*" or len(head) + 40 * len(self.headers) > HEAD_LIMIT - 512
                or re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", head) is not None
                or re.search(rb"[^\x21-\x7e]", self.target) is not None)


def header_value(text: str) -> bytes:
    """Text as a header value that keeps the request framed: no CR or LF."""
    return text.encode("utf-8", "surrogatepass").replace(b"\r", b"").replace(b"\n", b"")


#: Path segments: plain, escaped, traversal, NUL, unicode, raw bytes.
hostile_segments = st.one_of(
    st.sampled_from([
        b".", b"..", b"...", b"%2e", b"%2e%2e", b"%2F", b"%2f..%2f", b"..%2F..%2Fetc%2Fpasswd",
        b"%00", b"a%00b", b"%", b"%zz", b"%ff", b"%ed%a0%80", b"%c0%af", b"%E2%80%AE",
        b"~", b"%7E", b"null", b"undefined", b"%20", b"+", b"%2B", b";", b"a;b=c", b"*",
        b"\xff", b"\xc3\xa9", b"@", b":", b"!$&'()*,=",
    ]),
    repeat(b"x", 300), repeat(b"%41", 200),
    json_text.map(lambda s: quote(s.encode("utf-8", "surrogatepass"), safe="").encode()),
)
KNOWN = {
    "uuid": ["demo-thing", "demo-location", "demo-experience", "test-uuid", "root",
             "fuzz-feed-json", "fuzz-feed-rss", "fuzz-feed-search", "fuzz-feed-weather",
             "nothing"],
    "group": ["cats", "g", "data", "%2F", "g%20one"],
    "key": ["fluffy", "k", "tom", "%00"],
    "path": ["welcome.txt", "images/logo.png", "nothing.txt", "a/b/c", "..%2F..%2Fseed.json",
             "../../exp.sqlite3", "%2e%2e/%2e%2e/exp.sqlite3", "./welcome.txt",
             "/welcome.txt", "//etc/passwd", "welcome.txt/", ".hidden", "a/%00/b"],
}


def segments(name: str) -> st.SearchStrategy[bytes]:
    known = st.sampled_from([v.encode() for v in KNOWN.get(name, ["x"])])
    return st.one_of(known, hostile_segments)


#: Query values for the parameters that must be numbers.
number_params = st.one_of(
    st.sampled_from(["0", "1", "2", "-1", "1.5", "1e3", "1e309", "-1e309", "NaN", "nan",
                     "inf", "-inf", "Infinity", "", " 1", "1 ", "0x10", "1_000", "+5", "-0",
                     "\uff19", "\u0661\u0662", "\u00b2", "true", "null", "9" * 20, "\x00",
                     "%00", "10000000", "0.0001", "60000"]),
    repeat("9", 4300, 5000),
    st.integers().map(str),
    st.floats().map(str),
    json_text,
)
sort_params = st.one_of(
    st.sampled_from(["name", "-name", "-", "--", "", "---name", "uuid", "-uuid",
                     "location.zones.key", "a..b", ".", "value", "-value", "value.age",
                     "payload", "zones", "-zones.key", "secret", "location"]),
    json_text,
)
filter_keys = st.one_of(
    st.sampled_from(["name", "subtype", "uuid", "location.uuid", "location.zones.key",
                     "experience.uuid", "zones.key", "value", "value.age", "group", "key",
                     "secret", "a..b", "", ".", "..", "__proto__", "parent", "path",
                     "variants.name", "limit", "skip", "sort"]),
    json_text,
)
QUERY_VALUES: dict[str, st.SearchStrategy[str]] = {
    "limit": number_params,
    "skip": number_params,
    "timeout": number_params,
    "sort": sort_params,
    "subtype": st.sampled_from(["scala:content:folder", "scala:content:file",
                                "scala:content:url", ""]) | json_text,
    "parent": st.sampled_from(["root", "nothing", ""]) | json_text,
    "variant": st.sampled_from(["small", "", ".", "..", "a/b", "\x00", ".hidden"]) | json_text,
    "searchValue": st.sampled_from(["x", "", "root", "../..", "%2F", "?a=b#c"]) | json_text,
}
raw_query_parts = st.sampled_from([
    b"%", b"%zz", b"%00", b"%ff", b"=", b"&", b"==", b"a=b=c", b"%E2%82", b"+", b"%2B",
    b";", b"limit", b"limit=", b"=x", b"sort", b"&&&&", b"a[]=1", b"a[b]=c", b"%u0041",
    b"\xff=\xfe", b"limit=1&limit=-1", b"skip=1&skip=x",
])


def encode(text: str) -> bytes:
    return quote(text.encode("utf-8", "surrogatepass"), safe="").encode()


@st.composite
def queries(draw: st.DrawFn, operation: Operation, fuzzed: Fuzzed) -> bytes:
    names = [p["name"] for p in operation.parameters if p["in"] == "query"]
    pairs: list[bytes] = []
    for name in names:
        if name == "filters":
            for key, value in draw(st.lists(st.tuples(filter_keys, json_text), max_size=4)):
                pairs.append(encode(key) + b"=" + encode(value))
            continue
        if name == "_rt":
            values = st.sampled_from([fuzzed.tokens[k] for k in sorted(fuzzed.tokens)]) | json_text
        else:
            values = QUERY_VALUES[name]
        for value in draw(st.lists(values, max_size=3)):  # repeated keys too
            pairs.append(encode(name) + b"=" + encode(value))
    pairs += draw(st.lists(raw_query_parts, max_size=3))
    pairs += [encode(k) + b"=" + encode(v)
              for k, v in draw(st.lists(st.tuples(json_text, json_text), max_size=2))]
    order = draw(st.permutations(pairs)) if pairs else []
    return b"&".join(order)


# -- headers ----------------------------------------------------------------------------


@st.composite
def authorizations(draw: st.DrawFn, fuzzed: Fuzzed) -> bytes | None:
    """An Authorization header value, or none."""
    tokens = fuzzed.tokens
    kind = draw(st.sampled_from(["none", "token", "token", "token", "scheme", "text", "bytes",
                                 "forged", "forged", "expired", "huge"]))
    if kind == "none":
        return None
    if kind == "token":
        return b"Bearer " + tokens[draw(st.sampled_from(sorted(tokens)))].encode()
    if kind == "scheme":
        token = tokens["user"]
        return draw(st.sampled_from([
            b"Basic dGVzdDp0ZXN0", b"Bearer", b"Bearer ", b"bearer  ", b"BEARER " + token.encode(),
            b"Token " + token.encode(), token.encode(), b"Bearer " + token.encode() + b"x",
            b"Bearer " + token.encode() + b" extra", b"Bearer\t" + token.encode(),
            b"Bearer " + token[:-3].encode(), b"Bearer " + token.replace(".", "..").encode(),
            b"Bearer a.b.c", b"Bearer ...", b"Bearer e30.e30.", b"Bearer " + b"." * 100,
        ]))
    if kind == "text":
        return b"Bearer " + header_value(draw(json_text))
    if kind == "bytes":
        return b"Bearer " + draw(st.binary(max_size=60)).replace(b"\r", b"").replace(b"\n", b"")
    if kind == "huge":
        return b"Bearer " + b"a" * draw(st.sampled_from([1000, 8000, 15_000, 17_000, 70_000]))
    if kind == "expired":
        claims = {"typ": "user", "sub": "x", "org": ORG, "usr": DEMO["username"],
                  "iat": 1, "exp": draw(st.sampled_from([1, 2, 10**11 + 1, 1_000_000_000]))}
        return b"Bearer " + jwt(HS256, json.dumps(claims).encode(), fuzzed.key).encode()
    # Tokens signed with the server's own key, or none, with hostile claims.
    header = draw(jwt_headers)
    claims = draw(st.one_of(
        server_claims.map(lambda c: json.dumps(c).encode()),
        st.sampled_from([b'{"typ":"user","sub":"x","org":"scala","exp":NaN}',
                         b'{"typ":"user","sub":"x","org":"scala","exp":Infinity}',
                         b'{"typ":"user","sub":"x","org":"scala","exp":1e999}',
                         b'{"typ":"user","sub":"x","org":"scala","exp":' + b"9" * 400 + b"}",
                         b"[]", b"null", b"\xff"]),
        st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
    ))
    key = draw(st.sampled_from([fuzzed.key, None, b"wrong", b""]))
    return b"Bearer " + jwt(header, claims, key).encode()


content_types = st.one_of(
    st.sampled_from([None, b"application/json", b"application/json; charset=utf-8",
                     b"text/plain", b"image/png", b"image/", b"IMAGE/PNG", b"image/png; x=y",
                     b"image/\xc3\xa9", b"image/\xff", b"image/svg+xml",
                     b"multipart/form-data; boundary=x", b"application/x-www-form-urlencoded",
                     b""]),
    json_text.map(lambda t: b"image/" + header_value(t)),
    repeat(b"x", 2000).map(lambda x: b"image/" + x),
)
hosts = st.sampled_from([b"127.0.0.1", None, b"", b"example.com:99999", b"\xff\xfe",
                         b"h\xc3\xa9st", b"[::1]", b"localhost:0"]) | repeat(b"a", 3000)
extra_headers = st.lists(st.tuples(
    st.sampled_from([b"X-Fuzz", b"Origin", b"Accept", b"Cookie", b"Accept-Charset",
                     b"Content-Encoding", b"X-Forwarded-For", b"Range"]),
    json_text.map(header_value),
), max_size=3)


# -- bodies --------------------------------------------------------------------------------


HINTS: dict[str, st.SearchStrategy[Any]] = {
    "token": login_tokens(),
    "username": st.sampled_from([DEMO["username"], DEMO["username"].upper(), "", "nobody"]),
    "password": st.sampled_from([DEMO["password"], "", "wrong"]) | repeat("x", 10_000),
    "organization": st.sampled_from([ORG, "", "other"]),
    "type": st.sampled_from(["user", "device", "consumerApp", ""]),
    "channel": st.sampled_from([
        LOBBY, channel(ORG, "lobby", consumer=True), channel(ORG, "test-uuid", system=True),
        channel("other", "lobby"), channel("", "x"), "", "=", "W10=", "bnVsbA==",
        "WyJzY2FsYSIsIngiLDIsMF0=", "!!!",
    ]) | repeat("a", 5000),
    "name": st.sampled_from(["fling", "identify", "x", ""]),
    "uuid": st.sampled_from(KNOWN["uuid"]),
    "id": st.sampled_from(["x", ""]),
    "subtype": st.sampled_from(["scala:feed:json", "scala:feed:rss", "scala:feed:atom",
                                "scala:feed:weather", "scala:device:player", ""]),
    "url": st.sampled_from(["ftp://x", "", "http://127.0.0.1:1/", "javascript:1"]),
    "secret": st.sampled_from(["s", "", "test-secret"]),
}


def from_schema(schema: Any, name: str | None = None) -> st.SearchStrategy[Any]:
    """Values shaped by an OpenAPI schema, with wrong types mixed in."""
    schema = resolve(SPEC, schema)
    hint = HINTS.get(name or "")
    if "oneOf" in schema:
        return st.one_of(*(from_schema(part) for part in schema["oneOf"]))
    if "allOf" in schema:
        merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
        for part in schema["allOf"]:
            part = resolve(SPEC, part)
            merged["properties"].update(part.get("properties", {}))
            merged["required"] += part.get("required", [])
        schema = merged
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        shaped = st.fixed_dictionaries(
            {k: from_schema(v, k) for k, v in properties.items() if k in required},
            optional={k: from_schema(v, k) for k, v in properties.items() if k not in required},
        )
        extra = st.dictionaries(json_text, json_values, max_size=3)
        typed: st.SearchStrategy[Any] = st.builds(lambda s, e: {**e, **s}, shaped, extra)
    elif kind == "array":
        typed = st.lists(from_schema(schema.get("items", {})), max_size=4)
    elif kind == "string":
        typed = json_text
    elif kind in ("integer", "number"):
        typed = st.integers()
    elif kind == "boolean":
        typed = st.booleans()
    else:
        typed = json_values
    if hint is not None:
        typed = hint | typed
    return st.one_of(typed, typed, json_values)


@st.composite
def bodies(draw: st.DrawFn, operation: Operation) -> bytes | None:
    body = operation.operation.get("requestBody")
    content = resolve(SPEC, body)["content"] if body else {}
    if "application/json" in content:
        schema = content["application/json"]["schema"]
        return draw(st.one_of(
            from_schema(schema).map(lambda v: json.dumps(v).encode()),
            from_schema(schema).map(
                lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
            hostile_json, near_limit_bodies, st.none(),
        ))
    if content:  # an image
        return draw(st.one_of(st.just(b"\x89PNG\r\n\x1a\nfuzz"), st.binary(max_size=300),
                              near_limit_bodies, st.just(b""), st.none()))
    return draw(st.one_of(st.none(), st.none(), st.binary(max_size=100), hostile_json))


@st.composite
def requests(draw: st.DrawFn, operation: Operation, fuzzed: Fuzzed) -> Request:
    path = operation.path.encode()
    for name in re.findall(r"\{(\w+)\}", operation.path):
        path = path.replace(b"{%s}" % name.encode(), draw(segments(name)))
    query = draw(queries(operation, fuzzed))
    target = path + (b"?" + query if query else b"")
    headers: list[tuple[bytes, bytes]] = []
    host = draw(hosts)
    if host is not None:
        headers.append((b"Host", host))
    authorization = draw(authorizations(fuzzed))
    if authorization is not None:
        headers.append((b"Authorization", authorization))
    content_type = draw(content_types)
    if content_type is not None:
        headers.append((b"Content-Type", content_type))
    headers += draw(extra_headers)
    body = draw(bodies(operation))
    chunked = body is not None and draw(st.booleans())
    return Request(operation.method.encode(), target, headers, body, chunked)


# -- the property -----------------------------------------------------------------------------


def send(fuzzed: Fuzzed, request: Request) -> Reply | None:
    """The answer to C{request}, or None if the connection ended without one."""
    try:
        return raw_request(fuzzed.port, request.method, request.target, request.headers,
                           request.body, request.chunked)
    except (OSError, http.client.HTTPException) as e:
        if request.below_api:
            return None
        raise AssertionError(f"no answer: {e!r}") from e


def assert_sane(request: Request, reply: Reply | None) -> None:
    """
    Below 500 (but a feed's broken source), and every error a JSON
    C{{code, message}} unless Twisted answered it.
    """
    if reply is None:
        return
    # A feed whose source is broken or slow is a 502 or 504 (README: Feeds), the server's
    # own fault never.
    feed_source = (reply.status in (502, 504) and is_error_body(reply)
                   and reply.json()["code"].startswith("feed."))
    assert reply.status < 500 or feed_source, reply
    if reply.status >= 400 and not (request.below_api and not reply.body):
        assert is_error_body(reply) or request.method == b"HEAD", reply


def fuzz_once(fuzzed: Fuzzed, request: Request) -> None:
    """Send C{request}, check its answer, and that the server still serves."""
    reply = send(fuzzed, request)
    assert_sane(request, reply)
    check_serving(fuzzed)


def fuzz(fuzzed: Fuzzed, requests: st.SearchStrategy[Request]) -> None:
    """
    Send hypothesis' examples of C{requests}, checking each answer and that
    the server still serves.
    """
    run_examples(requests, lambda request: fuzz_once(fuzzed, request), EXAMPLES)


@pytest.mark.parametrize("operation", OPERATIONS, ids=str)
def test_hostile_requests_to_every_operation(fuzzed: Fuzzed, operation: Operation) -> None:
    """Each operation answers hostile requests below 500 with {code, message} errors."""
    fuzz(fuzzed, requests(operation, fuzzed))


routes = st.one_of(
    st.sampled_from([op.path.encode() for op in OPERATIONS]).map(
        lambda p: re.sub(rb"\{\w+\}", b"x", p)),
    st.lists(hostile_segments, min_size=1, max_size=5).map(lambda s: b"/api/" + b"/".join(s)),
    st.lists(hostile_segments, max_size=3).map(lambda s: b"/" + b"/".join(s)),
    st.sampled_from([b"/", b"//", b"/api", b"/api/", b"/api//devices", b"/api/devices//x",
                     b"/API/devices", b"/api/./devices", b"/api/../api/devices", b"*",
                     b"http://127.0.0.1/api/devices", b"/api/devices#x",
                     b"/api/devices?", b"/api/devices??", b"/%2e%2e/", b"/api/%2e%2e/"]),
).filter(lambda target: not target.startswith(b"/socket.io"))  # Engine.IO's: not REST
methods = st.sampled_from([b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS", b"HEAD",
                           b"TRACE", b"CONNECT", b"PROPFIND", b"get", b"FOO"])


def test_hostile_methods_and_routes(fuzzed: Fuzzed) -> None:
    """Unknown routes and methods are JSON 404/405, whatever the path's bytes."""

    def request(method: bytes, target: bytes, authorization: bytes | None,
                body: bytes | None) -> Request:
        headers = [(b"Host", b"127.0.0.1")]
        if authorization is not None:
            headers.append((b"Authorization", authorization))
        return Request(method, target, headers, body)

    fuzz(fuzzed, st.builds(request, methods, routes, authorizations(fuzzed),
                           st.none() | hostile_json))


def test_hostile_expiry_in_login_tokens(fuzzed: Fuzzed) -> None:
    """A pairing login token's exp or iat, whatever its value, never makes a 5xx."""

    def request(claim: str, value: Any) -> Request:
        claims = {"type": "device", "uuid": "_", "allowPairing": True, claim: value}
        body = json.dumps({"token": jwt(HS256, json.dumps(claims).encode(), b"_")}).encode()
        return Request(b"POST", b"/api/auth/login",
                       [(b"Host", b"127.0.0.1"), (b"Content-Type", b"application/json")], body)

    fuzz(fuzzed, st.builds(request, st.sampled_from(["exp", "iat"]), time_claims))


def test_every_operation_is_fuzzed() -> None:
    """The fuzz covers every operation the description names."""
    described = {(m, p) for m, p, _, _ in operations(SPEC)}
    assert {(op.method, op.path) for op in OPERATIONS} == described
    assert len(OPERATIONS) >= 40


# -- what the fuzz found ---------------------------------------------------------------------


def _claims(claims: Any, key: bytes | None) -> bytes:
    return jwt(HS256, json.dumps(claims).encode(), key).encode()


#: (what, method, target, Authorization (a token name, or a function of the
#: server's key), Content-Type, body, status, code): requests that once
#: answered 500 or hung.
FOUND: list[tuple[str, bytes, bytes, Any, bytes, bytes | None, int, str]] = [
    ("non-UTF-8 Authorization", b"GET", b"/api/devices", lambda key: b"Bearer \x80",
     b"application/json", None, 401, "auth.invalid"),
    ("lone surrogate login token", b"POST", b"/api/auth/login", None, b"application/json",
     b'{"token":"\\ud800"}', 400, "request.invalidJson"),
    ("login token expiring past a float", b"POST", b"/api/auth/login", None,
     b"application/json",
     json.dumps({"token": _claims({"type": "device", "uuid": "_", "allowPairing": True,
                                   "exp": 10**400}, b"_").decode()}).encode(),
     401, "auth.invalid"),
    ("login token with deeply nested claims", b"POST", b"/api/auth/login", None,
     b"application/json",
     json.dumps({"token": jwt(HS256, b"[" * 5000 + b"]" * 5000, b"_")}).encode(),
     401, "auth.invalid"),
    ("bearer token expiring past a float", b"GET", b"/api/devices",
     lambda key: b"Bearer " + _claims({"typ": "user", "sub": "x", "org": ORG,
                                       "exp": 10**400}, key),
     b"application/json", None, 401, "auth.invalid"),
    ("bearer token with deeply nested claims", b"GET", b"/api/devices",
     lambda key: b"Bearer " + jwt(HS256, b"[" * 5000 + b"]" * 5000, key).encode(),
     b"application/json", None, 401, "auth.invalid"),
    ("lone surrogate in a document", b"POST", b"/api/things", "user", b"application/json",
     b'{"name":"\\ud800"}', 400, "request.invalidJson"),
    ("lone surrogate uuid", b"POST", b"/api/things", "user", b"application/json",
     b'{"uuid":"\\udfff"}', 400, "request.invalidJson"),
    ("lone surrogate data value", b"PUT", b"/api/data/g/k", "user", b"application/json",
     b'["\\ud800"]', 400, "request.invalidJson"),
    ("lone surrogate username", b"POST", b"/api/auth/login", None, b"application/json",
     b'{"username":"\\ud800","password":"x","organization":"scala"}', 400,
     "request.invalidJson"),
    ("broadcast nested deeper than encodable", b"POST", b"/api/networks/current/broadcasts",
     "user", b"application/json",
     b'{"channel":"' + LOBBY.encode() + b'","name":"x","payload":' + b"[" * 600 + b"]" * 600
     + b"}", 400, "request.invalidJson"),
    ("layout whose type is not ASCII", b"PUT", b"/api/locations/demo-location/layout", "user",
     b"image/\xc3\xa9", b"\x89PNG", 400, "layout.notImage"),
]


@pytest.mark.parametrize(("what", "method", "target", "authorization", "content_type", "body",
                          "status", "code"), FOUND, ids=[found[0] for found in FOUND])
def test_what_the_fuzz_found(fuzzed: Fuzzed, what: str, method: bytes, target: bytes,
                             authorization: Any, content_type: bytes, body: bytes | None,
                             status: int, code: str) -> None:
    """Requests that once made the server answer 500 (or never) now get a clean error."""
    headers = [(b"Host", b"127.0.0.1"), (b"Content-Type", content_type)]
    if isinstance(authorization, str):
        headers.append((b"Authorization", b"Bearer " + fuzzed.tokens[authorization].encode()))
    elif authorization is not None:
        headers.append((b"Authorization", authorization(fuzzed.key)))
    reply = send(fuzzed, Request(method, target, headers, body))
    assert reply is not None and reply.status == status, (what, reply)
    assert is_error_body(reply) and reply.json()["code"] == code, (what, reply)
    check_serving(fuzzed)
