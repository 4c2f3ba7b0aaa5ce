"""
What the fuzz tests share: a server in a child process with the tokens of
every kind of identity, a raw HTTP client that sends bytes as given, and
hypothesis strategies of hostile JSON and tokens.

Everything here is blocking on purpose: the server runs in another process
and the tests drive it from plain synchronous code, away from the reactor
of the test run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import socket
import sqlite3
import uuid as uuidlib
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exp.protocol import consumer_app_token, device_token
from exp.server.testing import DEMO, ServerProcess

from ._eio import frame, unframe
from ._network import channel
from ._processes import request

#: A small body limit, so that bodies near it are cheap to send.
MAX_BODY = 64 * 1024
#: Broadcasts hold their request at most this long (seconds).
MAX_BROADCAST_TIMEOUT = 0.2
#: Twisted answers a bodiless 400 to request heads above this many bytes.
HEAD_LIMIT = 16 * 1024
#: Seconds a single fuzz request may take: a guard against hangs.
REQUEST_TIMEOUT = 30.0
#: Seconds a watcher waits for a broadcast before it counts as lost.
WATCH_TIMEOUT = 10.0

_T = TypeVar("_T")

ORG = DEMO["organization"]
LOBBY = channel(ORG, "lobby")


def run_examples(strategy: st.SearchStrategy[_T], action: Callable[[_T], object],
                 examples: int) -> None:
    """
    Run C{action} on C{examples} of hypothesis' examples of C{strategy}
    (raise EXP_FUZZ_EXAMPLES for a longer hunt), with no deadline, no
    example database, and none of the health checks that a fuzz against a
    server fails.  (The C{@given} function is local: pytest-twisted runs a
    C{@given} test's examples in a way these blocking tests cannot use.)
    """

    @settings(max_examples=int(os.environ.get("EXP_FUZZ_EXAMPLES", str(examples))),
              deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])
    @given(example=strategy)
    def run(example: _T) -> None:
        action(example)

    run()


# -- raw HTTP ------------------------------------------------------------------------


@attrs.frozen
class Reply:
    """An HTTP answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Reply {self.status} {self.headers.get('content-type')} {self.body[:300]!r}>"


def raw_request(port: int, method: bytes, target: bytes,
                headers: list[tuple[bytes, bytes]], body: bytes | None,
                chunked: bool = False, timeout: float = REQUEST_TIMEOUT) -> Reply:
    """
    Send one HTTP/1.1 request made of exactly these bytes (plus Content-Length
    or chunked framing and C{Connection: close}) and read its answer.

    @raise OSError: if the connection fails or closes without an answer.
    """
    head = [method + b" " + target + b" HTTP/1.1"]
    head += [name + b": " + value for name, value in headers]
    payload = b""
    if body is not None:
        if chunked:
            head.append(b"Transfer-Encoding: chunked")
            step = max(1, len(body) // 3)
            for i in range(0, len(body), step):
                chunk = body[i:i + step]
                payload += b"%x\r\n" % len(chunk) + chunk + b"\r\n"
            payload += b"0\r\n\r\n"
        else:
            head.append(b"Content-Length: %d" % len(body))
            payload = body
    head.append(b"Connection: close")
    data = b"\r\n".join(head) + b"\r\n\r\n" + payload
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server may answer and close before it read everything
        response = http.client.HTTPResponse(sock, method=method.decode("ascii"))
        response.begin()
        content = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()},
                     content)


def is_error_body(reply: Reply) -> bool:
    """Whether C{reply} carries a JSON C{{code, message}} of strings."""
    if not reply.headers.get("content-type", "").startswith("application/json"):
        return False
    try:
        body = reply.json()
    except ValueError:
        return False
    return (isinstance(body, dict) and set(body) == {"code", "message"}
            and all(isinstance(v, str) and v for v in body.values()))


def call(url: str, method: str, path: str, body: Any = None,
         token: str | None = None) -> tuple[int, Any]:
    """A well-behaved JSON call: the status and the decoded body (or None)."""
    return request(method, url + path, body, token, timeout=REQUEST_TIMEOUT)


def repeat(unit: Any, *counts: int) -> st.SearchStrategy[Any]:
    """C{unit} repeated one of C{counts} times (long values kept out of strategy reprs)."""
    return st.sampled_from(counts).map(lambda n: unit * n)


# -- tokens ----------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    """C{data} in unpadded base64url, as JWTs spell their parts."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt(header: bytes, claims: bytes, key: bytes | None) -> str:
    """A JWT of these raw header and claims bytes, HS256-signed with C{key} (unsigned if None)."""
    signing = f"{b64url(header)}.{b64url(claims)}"
    if key is None:
        return signing + "."
    return f"{signing}.{b64url(hmac.new(key, signing.encode('ascii'), hashlib.sha256).digest())}"


HS256 = b'{"alg":"HS256","typ":"JWT"}'

#: JWT headers from correct to hostile.
jwt_headers = st.one_of(
    st.just(HS256),
    st.sampled_from([
        b'{"alg":"none","typ":"JWT"}', b'{"alg":"None"}', b'{"alg":"HS512"}', b'{"alg":"RS256"}',
        b'{"alg":1}', b'{"alg":null}', b"{}", b"[]", b'"HS256"', b"null", b"not json",
        b"\xff\xfe", b'{"alg":"HS256","kid":[1]}', b'{"alg":"HS256","b64":false}',
        b'{"alg":"HS256","crit":["b64"]}', b'{"alg":"HS256","x":NaN}',
        b'{"alg":"HS256","x":1e999}', b'{"alg":"HS256","x":"\\ud800"}',
    ]),
    st.integers(1, 20_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 20_000).map(lambda n: b'{"alg":"HS256","x":' + b"[" * n + b"]" * n + b"}"),
)

#: Values of time claims: seconds, milliseconds, past, future, absurd.
time_claims = st.one_of(
    st.sampled_from([0, -1, 1, 10**11, 10**11 + 1, 10**13, 10**19, 10**30, 10**308, 10**400,
                     -(10**400), 1e308, 0.5, True, False, None, "soon", [], {}]),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
)
#: Claims text for literals Python's json emits but strict JSON refuses.
special_claims = st.sampled_from([b'{"exp":NaN}', b'{"exp":Infinity}', b'{"exp":-Infinity}',
                                  b'{"exp":1e999}']) | repeat(b"9", 400, 5000).map(
    lambda digits: b'{"exp":' + digits + b"}")


def claims_bytes(claims: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    """Claims as JSON bytes, or hostile bytes in their place."""
    return st.one_of(
        claims.map(lambda c: json.dumps(c).encode("utf-8")),
        special_claims,
        st.sampled_from([b"null", b"[]", b"1", b'"x"', b"", b"\xff", b"{", b'{"a":1}}']),
        st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(1, 20_000).map(lambda n: b'{"type":"device","uuid":"_","allowPairing":true,'
                                   b'"x":' + b"[" * n + b"]" * n + b"}"),
    )


#: The claims of login tokens (PROTOCOL.md A2), right and wrong.
login_claims = st.fixed_dictionaries(
    {"type": st.sampled_from(["device", "consumerApp", "user", "", 1, None])},
    optional={
        "uuid": st.sampled_from(["_", DEMO["device_uuid"], "nobody", "", 1, None, ["_"]]),
        "allowPairing": st.sampled_from([True, False, "true", 1, None]),
        "iat": time_claims,
        "exp": time_claims,
    },
)
login_keys = st.sampled_from([b"_", DEMO["device_secret"].encode(), DEMO["api_key"].encode(),
                              b"wrong", b"", None])


@st.composite
def login_tokens(draw: st.DrawFn) -> Any:
    """A login token (or something in its place) for C{{"token": ...}}."""
    kind = draw(st.sampled_from(["device", "consumer", "pairing", "forged", "forged", "forged",
                                 "json", "text"]))
    if kind == "device":
        return device_token(DEMO["device_uuid"], DEMO["device_secret"])
    if kind == "consumer":
        return consumer_app_token(DEMO["consumer_uuid"], DEMO["api_key"])
    if kind == "pairing":
        return device_token("_", "_", allow_pairing=True)
    if kind == "forged":
        return jwt(draw(jwt_headers), draw(claims_bytes(login_claims)), draw(login_keys))
    if kind == "json":
        return draw(json_values)
    return draw(json_text)


#: The claims of the server's own tokens, right and wrong.
server_claims = st.fixed_dictionaries(
    {},
    optional={
        "typ": st.sampled_from(["user", "device", "consumerApp", "admin", 1, None]),
        "sub": st.sampled_from(["x", DEMO["device_uuid"], "", 1, None, []]),
        "org": st.sampled_from([ORG, "", "other", 1, None]),
        "usr": st.sampled_from([DEMO["username"], 1, None]),
        "pair": st.sampled_from(["ABCDEF", 1, None]),
        "rt": st.sampled_from([True, False, 1, "yes"]),
        "iat": time_claims,
        "exp": time_claims,
    },
)


# -- JSON -----------------------------------------------------------------------------

#: Any text, lone surrogates included (JSON escapes them as \\udxxx).
json_text = st.one_of(
    st.text(st.characters(exclude_categories=[]), max_size=40),
    st.sampled_from(["", " ", ".", "..", "/", "\x00", "\ud800", "\udfff", "\ud83d\ude00",
                     "\u202e", "\ufeff", "\U0001d7d8", "null", "true", "NaN", "__proto__",
                     "constructor", "data:cats:fluffy", "%2F", "%00"]),
    repeat("a", 300, 5000),
)
json_numbers = st.one_of(
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**100, 10**4000, -(10**4000),
                     1e308, -1e308, 5e-324, -0.0]),
)
json_values = st.recursive(
    st.none() | st.booleans() | json_numbers | json_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
    max_leaves=15,
)


def deep(depth: int, kind: str) -> bytes:
    """JSON nested C{depth} deep."""
    if kind == "list":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"name":"deep","v":' + b"[" * depth + b"]" * depth + b"}"


depths = st.sampled_from([10, 100, 400, 495, 496, 497, 498, 499, 500, 501, 600, 700, 900,
                          990, 995, 996, 997, 998, 999, 1000, 1001, 1500, 3000, 10_000, 30_000])
hostile_json = st.one_of(
    st.builds(deep, depths, st.sampled_from(["list", "object", "document"])),
    st.sampled_from([
        b"", b" ", b"\r\n", b"null", b"true", b"0", b'""', b"[]", b"{}", b"{", b"}", b"[",
        b'{"a":NaN}', b"NaN", b"Infinity", b"-Infinity", b"[1e999]", b"1e400", b"-1e400",
        b'"\\ud800"', b'{"\\udfff":1}', b'{"name":"\\ud800"}', b'{"uuid":"\\ud800x"}',
        b'{"name":"a","\\u0000":"\\u0000"}', b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00",
        b'{"a":1,"a":2}', b"{'a':1}", b'{"a":1}}', b"[1,]", b'{"a" 1}', b"\x00",
        b'"\xed\xa0\x80"', b'{"name":"\xc0\xaf"}', b"0x10", b"+1", b".5", b"01",
    ]),
    repeat(b"9", 4300, 4301, 10_000),
    repeat(b"9", 5000).map(lambda digits: b'{"a":' + digits + b"}"),
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
)


def near_limit(size: int) -> bytes:
    """A JSON object of exactly C{size} bytes."""
    return b'{"name":"' + b"x" * max(0, size - 11) + b'"}'


near_limit_bodies = st.integers(MAX_BODY - 40, MAX_BODY + 40).map(near_limit)


# -- the server -----------------------------------------------------------------------------


@attrs.define(repr=False)
class Fuzzed:
    """A server in a child process, the tokens of each identity, and fixtures of data."""

    server: ServerProcess
    #: Where the started server listens.
    url: str = attrs.field(init=False)
    port: int = attrs.field(init=False)
    tokens: dict[str, str] = attrs.field(factory=dict)
    key: bytes = b""
    pairing_code: str = ""
    canary: str = ""

    def __attrs_post_init__(self) -> None:
        self.url, self.port = self.server.url, self.server.port

    def __repr__(self) -> str:
        return f"<Fuzzed {self.url}>"

    def alive(self) -> bool:
        """Whether the server process still runs."""
        process = self.server.process
        return process is not None and process.poll() is None


def start_fuzzed() -> Fuzzed:
    """Start a server with the demo seed and log in as everyone."""
    server = ServerProcess("--max-body", str(MAX_BODY),
                           "--max-broadcast-timeout", str(MAX_BROADCAST_TIMEOUT),
                           # the feeds' sources are the server's own pages
                           "--feed-allow", "127.0.0.0/8",
                           # the fuzz opens sessions of the watchers' identity by the
                           # hundred; that cap has tests of its own (test_network_limits)
                           "--max-sessions-per-identity", "100000").start()
    fuzzed = Fuzzed(server)
    try:
        _prepare(fuzzed)
    except BaseException:
        server.stop()
        raise
    return fuzzed


def _login(fuzzed: Fuzzed, body: dict[str, Any]) -> dict[str, Any]:
    status, auth = call(fuzzed.url, "POST", "/api/auth/login", body)
    assert status == 200, (status, auth)
    return dict(auth)


def _prepare(fuzzed: Fuzzed) -> None:
    user = _login(fuzzed, {"username": DEMO["username"], "password": DEMO["password"],
                           "organization": ORG})
    device = _login(fuzzed, {"token": device_token(DEMO["device_uuid"], DEMO["device_secret"])})
    consumer = _login(fuzzed, {"token": consumer_app_token(DEMO["consumer_uuid"],
                                                           DEMO["api_key"])})
    pairing = _login(fuzzed, {"token": device_token("_", "_", allow_pairing=True)})
    fuzzed.tokens = {"user": user["token"], "device": device["token"],
                     "consumer": consumer["token"], "restricted": user["restrictedToken"],
                     "pairing": pairing["token"]}
    fuzzed.pairing_code = pairing["identity"]["pairingCode"]
    db = os.path.join(fuzzed.server.directory, "exp.sqlite3")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        row = connection.execute("SELECT value FROM settings WHERE name = 'signingKey'").fetchone()
    fuzzed.key = row[0].encode("utf-8")
    # A document no strategy knows the uuid of: it must outlive the fuzz.
    fuzzed.canary = f"canary-{uuidlib.uuid4().hex}"
    token = fuzzed.tokens["user"]
    status, _ = call(fuzzed.url, "POST", "/api/things", {"uuid": fuzzed.canary, "name": "canary"},
                     token=token)
    assert status == 200
    own = fuzzed.url
    for document in (
        {"uuid": "fuzz-feed-json", "subtype": "scala:feed:json", "url": own + "/api/openapi.json"},
        {"uuid": "fuzz-feed-rss", "subtype": "scala:feed:rss", "url": own + "/api/openapi.json"},
        {"uuid": "fuzz-feed-search", "subtype": "scala:feed:json",
         "url": own + "/api/content/{searchValue}"},
        {"uuid": "fuzz-feed-weather", "subtype": "scala:feed:weather"},
    ):
        status, _ = call(own, "POST", "/api/connectors/feeds", document, token=token)
        assert status == 200


def check_serving(fuzzed: Fuzzed) -> None:
    """The process lives and answers normal calls, none of them with a 5xx."""
    assert fuzzed.alive(), "the server exited:\n" + fuzzed.server.log()[-5000:]
    token = fuzzed.tokens["user"]
    status, thing = call(fuzzed.url, "GET", f"/api/things/{fuzzed.canary}", token=token)
    assert status == 200 and thing["name"] == "canary", (status, thing)
    for path in ("/api/things?sort=name&name=canary&limit=2", "/api/data?sort=-value&value.age=3",
                 "/api/devices?sort=location.uuid&limit=1", "/api/locations/demo-location/layout",
                 "/api/content?parent=root"):
        headers = [(b"Host", b"127.0.0.1"), (b"Authorization", b"Bearer " + token.encode())]
        reply = raw_request(fuzzed.port, b"GET", path.encode(), headers, None)
        assert reply.status < 500, (path, reply)


def logged_failures(log: str) -> list[str]:
    """The entries of a server log that report an exception (a traceback)."""
    entries = re.split(r"\n(?=\d{4}-\d\d-\d\dT)", log)
    return [entry for entry in entries if "Traceback" in entry or "Unhandled" in entry]


# -- Engine.IO over raw sockets ------------------------------------------------------------


class Closed(Exception):
    """The server closed the connection."""


class RawWebSocket:
    """
    A WebSocket client written from RFC 6455 on a plain socket, so that it
    can send any frame at all; C{status} is the handshake's HTTP status.
    """

    def __init__(self, port: int, target: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                 timeout: float = REQUEST_TIMEOUT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self._buffer = b""
        key = base64.b64encode(os.urandom(16))
        if headers is None:
            headers = [(b"Host", b"127.0.0.1"), (b"Upgrade", b"websocket"),
                       (b"Connection", b"Upgrade"), (b"Sec-WebSocket-Key", key),
                       (b"Sec-WebSocket-Version", b"13")]
        head = [b"GET " + target + b" HTTP/1.1", *(n + b": " + v for n, v in headers)]
        self.sock.sendall(b"\r\n".join(head) + b"\r\n\r\n")
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        response, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        self.status = int(response.split(b" ", 2)[1])

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise Closed("the server closed the connection")
        self._buffer += data

    def _take(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0,
                   mask: bool = True, length: int | None = None) -> None:
        """One frame; C{length} overrides the length the header claims."""
        size = len(payload) if length is None else length
        head = bytes([(0x80 if fin else 0) | (rsv & 7) << 4 | opcode & 0xF])
        bit = 0x80 if mask else 0
        if size < 126:
            head += bytes([bit | size])
        elif size < 1 << 16:
            head += bytes([bit | 126]) + size.to_bytes(2, "big")
        else:
            head += bytes([bit | 127]) + size.to_bytes(8, "big")
        if mask:
            key = os.urandom(4)
            head += key
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + payload)

    def send_text(self, text: str) -> None:
        """One text frame of C{text}, lone surrogates and all."""
        self.send_frame(1, text.encode("utf-8", "surrogatepass"))

    def recv_frame(self) -> tuple[int, bytes]:
        """The next frame from the server: C{(opcode, payload)}."""
        first, second = self._take(2)
        size = second & 0x7F
        if size == 126:
            size = int.from_bytes(self._take(2), "big")
        elif size == 127:
            size = int.from_bytes(self._take(8), "big")
        return first & 0xF, self._take(size)

    def recv_text(self) -> str:
        """The next text message, answering pings; L{Closed} on a close frame."""
        while True:
            opcode, payload = self.recv_frame()
            if opcode == 1:
                return payload.decode("utf-8")
            if opcode == 8:
                raise Closed(f"close frame {payload[:2].hex()} {payload[2:]!r}")
            if opcode == 9:
                self.send_frame(10, payload)

    def drain(self, seconds: float = 0.02) -> None:
        """Read what comes for a moment, whatever it is."""
        self.sock.settimeout(seconds)
        try:
            while True:
                self._fill()
        except (OSError, Closed):
            pass
        finally:
            self.sock.settimeout(self.timeout)
            self._buffer = b""

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


def eio_query(token: str, transport: str, sid: str | None = None) -> bytes:
    """The target of an Engine.IO request: a handshake, or one of session C{sid}."""
    query = f"/socket.io/?EIO=3&transport={transport}&token={token}"
    if sid is not None:
        query += f"&sid={sid}"
    elif transport == "polling":
        query += "&b64=1"  # text payloads
    return query.encode("ascii")


class Watcher:
    """
    A well-behaved client subscribed to a channel, over WebSocket or
    polling, that must see every broadcast posted on it.
    """

    def __init__(self, fuzzed: Fuzzed, transport: str, channel: str) -> None:
        self.fuzzed = fuzzed
        self.transport = transport
        self.channel = channel
        token = fuzzed.tokens["user"]
        self.websocket: RawWebSocket | None = None
        self._pending: list[str] = []
        if transport == "websocket":
            self.websocket = RawWebSocket(fuzzed.port, eio_query(token, "websocket"),
                                          timeout=WATCH_TIMEOUT)
            assert self.websocket.status == 101
            packets = [self.websocket.recv_text(), self.websocket.recv_text()]
        else:
            reply = self._http(b"GET", eio_query(token, "polling"))
            packets = unframe(reply.body.decode("utf-8"))
        assert packets[0].startswith("0") and packets[1] == "40", packets
        self.sid = json.loads(packets[0][1:])["sid"]
        self.send("42" + json.dumps(["subscribe", [channel]]))
        assert self.next() == "42" + json.dumps(["subscribed", [channel]], separators=(",", ":"))

    def _http(self, method: bytes, target: bytes, body: bytes | None = None) -> Reply:
        reply = raw_request(self.fuzzed.port, method, target,
                            [(b"Host", b"127.0.0.1"), (b"Content-Type", b"text/plain")], body,
                            timeout=WATCH_TIMEOUT)
        assert reply.status == 200, reply
        return reply

    def send(self, packet: str) -> None:
        """Send one packet over the watcher's transport."""
        if self.websocket is not None:
            self.websocket.send_text(packet)
        else:
            target = eio_query(self.fuzzed.tokens["user"], "polling", self.sid)
            assert self._http(b"POST", target, frame([packet]).encode()).body == b"ok"

    def next(self) -> str:
        """The next packet from the server, polling when none is buffered."""
        if self.websocket is not None:
            return self.websocket.recv_text()
        while not self._pending:
            target = eio_query(self.fuzzed.tokens["user"], "polling", self.sid)
            self._pending = unframe(self._http(b"GET", target).body.decode("utf-8"))
        return self._pending.pop(0)

    def expect_broadcast(self, name: str, payload: Any) -> None:
        """Ping (to stay alive), then read until the broadcast C{name} with C{payload} comes."""
        self.send("2")
        while True:
            packet = self.next()
            if packet.startswith("42"):
                event, body = json.loads(packet[2:])
                assert event == "broadcast", packet
                assert body["channel"] == self.channel, packet
                if body["name"] == name and body["payload"] == payload:
                    return
            else:
                assert packet in ("3", "6"), packet

    def close(self) -> None:
        """Close the WebSocket, if the watcher has one."""
        if self.websocket is not None:
            self.websocket.close()
