"""
Hostile traffic on the real-time network (PROTOCOL.md A5), against one
server in a child process: random text, almost-valid Engine.IO and
Socket.IO packets, polling payloads with wrong lengths, binary, huge and
malformed WebSocket frames, hostile handshakes and upgrades.  Whatever comes
in, the server lives, answers HTTP below 500, logs no traceback, and two
well-behaved clients (one on WebSocket, one polling), connected before the
fuzz and subscribed to a channel, receive every broadcast posted over REST
throughout.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from hypothesis import strategies as st

from ._eio import frame, unframe, utf16_length
from ._fuzz import (
    HEAD_LIMIT,
    LOBBY,
    MAX_BODY,
    ORG,
    Closed,
    Fuzzed,
    RawWebSocket,
    Watcher,
    call,
    check_serving,
    eio_query,
    hostile_json,
    is_error_body,
    json_text,
    json_values,
    jwt,
    logged_failures,
    raw_request,
    repeat,
    run_examples,
    start_fuzzed,
)
from ._network import channel

pytestmark = pytest.mark.slow

#: Examples per test; raise EXP_FUZZ_EXAMPLES for a longer hunt.
EXAMPLES = 40
WATCHED = channel(ORG, "fuzz-watch")


@attrs.define
class Network:
    """The server, its log so far, and the well-behaved clients."""

    fuzzed: Fuzzed
    watchers: list[Watcher]
    broadcasts: int = 0
    log_seen: int = 0

    def new_log(self) -> str:
        """What the server logged since the last call."""
        log = self.fuzzed.server.log()
        new, self.log_seen = log[self.log_seen:], len(log)
        return new

    def post(self, name: str, payload: Any, channel: str = WATCHED) -> tuple[int, Any]:
        body = {"channel": channel, "name": name, "payload": payload}
        return call(self.fuzzed.url, "POST", "/api/networks/current/broadcasts", body,
                    token=self.fuzzed.tokens["user"])

    def check(self) -> None:
        """The server lives, logged no failure, and every watcher gets a new broadcast."""
        self.broadcasts += 1
        payload = {"n": self.broadcasts}
        status, answer = self.post("watch", payload)
        assert status == 200, (status, answer)
        for watcher in self.watchers:
            watcher.expect_broadcast("watch", payload)
        check_serving(self.fuzzed)
        failures = logged_failures(self.new_log())
        assert not failures, "\n".join(failures[:3])


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    fuzzed = start_fuzzed()
    watchers: list[Watcher] = []
    try:
        watchers = [Watcher(fuzzed, "websocket", WATCHED), Watcher(fuzzed, "polling", WATCHED)]
        net = Network(fuzzed, watchers)
        net.check()
        yield net
        net.check()
    finally:
        for watcher in watchers:
            watcher.close()
        fuzzed.server.stop()


def fuzz(network: Network, strategy: st.SearchStrategy[Any], action: Any) -> None:
    """
    Run C{action} on hypothesis' examples of C{strategy}, then check the
    server and the watchers.
    """

    def run(example: Any) -> None:
        action(network, example)
        network.check()

    run_examples(strategy, run, EXAMPLES)


# -- strategies ----------------------------------------------------------------------------


json_texts = st.one_of(
    json_values.map(lambda v: json.dumps(v, ensure_ascii=False)),
    hostile_json.map(lambda b: b.decode("utf-8", "replace")),
    json_text,
)
channel_ids = st.one_of(
    st.sampled_from([LOBBY, WATCHED, channel(ORG, "x", system=True),
                     channel(ORG, "x", consumer=True), channel("other", "x"), "", "=",
                     "W10=", "bnVsbA==", "WyJzY2FsYSIsIngiLDIsMF0="]),
    json_values,
)
namespaces = st.one_of(
    st.just(""),
    st.sampled_from(["/", "/,", "/x,", "/chat", "//,", "/\u00e9,", "/" + "x" * 300 + ","]),
    json_text.map(lambda t: "/" + t + ","),
    json_text.map(lambda t: "/" + t),
)
packet_ids = st.one_of(
    st.just(""),
    st.integers(0, 2**70).map(str),
    st.sampled_from(["-1", "\u00b2", "\u0661", "\uff19", "00", "1e3"]),
    repeat("9", 4300, 4301, 5000),
)
socketio_packets = st.one_of(
    st.builds(lambda kind, ns, pid, data: kind + ns + pid + data,
              st.sampled_from([*list("0123456789"), "", "x", "²", "-"]),
              namespaces, packet_ids, json_texts),
    st.builds(lambda name, args: "2" + json.dumps([name, *args]),
              st.sampled_from(["subscribe", "broadcast", "subscribed", "", "x"]) | json_text,
              st.lists(st.one_of(st.lists(channel_ids, max_size=5), json_values), max_size=3)),
    st.builds(lambda n: "2" + json.dumps(["subscribe", [LOBBY] * n]),
              st.sampled_from([0, 1, 1000, 5000])),
    st.sampled_from(["0", "1", "2", "3", "4", "5", "6", "2[]", '2["subscribe"]',
                     '2["subscribe",null]', "0/x,", "1/x,", '4"x"', "3[]", "2/x,1[]"]),
)
engineio_packets = st.one_of(
    socketio_packets.map(lambda p: "4" + p),
    st.builds(lambda kind, data: kind + data,
              st.sampled_from([*list("0123456789"), "", "b", "x", "²", " "]), json_text),
    st.sampled_from(["2probe", "3probe", "5", "6", "1", "2", "3", "0", "4", "", " ", "b4AA==",
                     "2" + "x" * 1000]),
    st.text(max_size=60),
)
#: The identities that may open network sessions.
tokens = st.sampled_from(["user", "device", "consumer", "pairing"])


# -- WebSocket ------------------------------------------------------------------------------


def open_websocket(network: Network, identity: str) -> RawWebSocket:
    """A WebSocket session past its open packet and C{40}."""
    websocket = RawWebSocket(network.fuzzed.port,
                             eio_query(network.fuzzed.tokens[identity], "websocket"))
    assert websocket.status == 101
    assert websocket.recv_text().startswith("0")
    assert websocket.recv_text() == "40"
    return websocket


def send_packets(network: Network, example: tuple[str, list[str]]) -> None:
    identity, packets = example
    websocket = open_websocket(network, identity)
    try:
        for packet in packets:
            websocket.send_text(packet)
        websocket.drain()
    except OSError:
        pass  # the server may close a session that sent garbage
    finally:
        websocket.close()


def test_websocket_engineio_and_socketio_garbage(network: Network) -> None:
    """Random and almost-valid Engine.IO/Socket.IO text frames leave the server serving."""
    fuzz(network, st.tuples(tokens, st.lists(engineio_packets, min_size=1, max_size=8)),
         send_packets)


def is_unicode(text: str) -> bool:
    """Whether C{text} encodes to UTF-8 (has no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def socketio_garbage_keeps_session(network: Network, packets: list[str]) -> None:
    websocket = open_websocket(network, "user")
    try:
        for packet in packets:
            websocket.send_text("4" + packet)
        websocket.send_text("2")
        while (text := websocket.recv_text()) != "3":
            # Errors, subscribed answers and broadcasts of what it subscribed.
            assert text[:2] in ("44", "42"), text
    finally:
        websocket.close()


def test_socketio_garbage_keeps_the_session(network: Network) -> None:
    """Malformed Socket.IO packets get error packets; the session stays and answers a ping."""
    # Not a disconnect, a message over the size limit or text that is no UTF-8
    # (lone surrogates): those do end the session.
    packets = socketio_packets.filter(
        lambda p: not p.startswith("1") and len(p) < MAX_BODY // 2 and is_unicode(p))
    fuzz(network, st.lists(packets, min_size=1, max_size=6),
         socketio_garbage_keeps_session)


@attrs.frozen
class Frame:
    """A WebSocket frame, however wrong."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0
    mask: bool = True
    length: int | None = None


ws_frames = st.one_of(
    st.builds(Frame, st.just(1),
              engineio_packets.map(lambda t: t.encode("utf-8", "surrogatepass"))),
    st.builds(Frame, st.just(1), st.binary(max_size=40)),  # text that may not be UTF-8
    st.builds(Frame, st.just(2), st.binary(max_size=40)),  # binary
    st.builds(Frame, st.sampled_from([0, 3, 4, 5, 6, 7, 11, 12, 13, 14, 15]),
              st.binary(max_size=20)),
    st.builds(Frame, st.sampled_from([8, 9, 10]), st.binary(max_size=200)),  # control frames
    st.builds(Frame, st.just(1), st.just(b"2"), fin=st.booleans(), rsv=st.integers(0, 7),
              mask=st.booleans()),
    st.builds(Frame, st.just(1), st.sampled_from([MAX_BODY - 1, MAX_BODY, MAX_BODY + 1]).map(
        lambda n: b"4" + b"x" * (n - 1))),  # huge
    st.builds(Frame, st.just(1), st.just(b""),
              length=st.sampled_from([MAX_BODY + 1, 2**31, 2**63 - 1, 2**63])),  # lying length
)


def send_frames(network: Network, frames: list[Frame]) -> None:
    websocket = open_websocket(network, "user")
    try:
        for frame in frames:
            websocket.send_frame(frame.opcode, frame.payload, fin=frame.fin, rsv=frame.rsv,
                                 mask=frame.mask, length=frame.length)
        websocket.drain()
    except OSError:
        pass
    finally:
        websocket.close()


def test_websocket_protocol_garbage(network: Network) -> None:
    """Binary, huge, fragmented, unmasked, reserved and lying WebSocket frames harm nothing."""
    fuzz(network, st.lists(ws_frames, min_size=1, max_size=6), send_frames)


# -- handshakes and upgrades -----------------------------------------------------------------


def hostile_token(network: Network, kind: str) -> str:
    fuzzed = network.fuzzed
    if kind in fuzzed.tokens:
        return fuzzed.tokens[kind]
    if kind == "deep":
        return jwt(b'{"alg":"HS256"}', b"[" * 3000 + b"]" * 3000, fuzzed.key)
    if kind == "huge-exp":
        return jwt(b'{"alg":"HS256"}', json.dumps({"typ": "user", "sub": "x", "org": ORG,
                                                    "exp": 10**400}).encode(), fuzzed.key)
    if kind == "none":
        return jwt(b'{"alg":"none"}', json.dumps({"typ": "user", "sub": "x", "org": ORG,
                                                  "exp": 2**40}).encode(), None)
    return kind


query_values = st.one_of(
    st.sampled_from(["3", "4", "2", "", "polling", "websocket", "flashsocket", "x", "1"]),
    json_text,
)
handshake_tokens = st.one_of(
    st.sampled_from(["user", "device", "consumer", "pairing", "restricted", "deep", "huge-exp",
                     "none", "", "garbage", "a.b.c"]),
    json_text,
)


@st.composite
def handshakes(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, str]], str, bytes | None]:
    """A request to /socket.io/: method, query pairs, token kind, body."""
    method = draw(st.sampled_from([b"GET", b"POST", b"OPTIONS", b"PUT", b"DELETE", b"HEAD"]))
    pairs = draw(st.lists(st.tuples(
        st.sampled_from(["EIO", "transport", "sid", "j", "b64", "t", "token", "x"]),
        query_values), max_size=5))
    token = draw(handshake_tokens)
    body = draw(st.none() | hostile_json)
    return method, pairs, token, body


def quote(text: str) -> str:
    from urllib.parse import quote as _quote

    return _quote(text.encode("utf-8", "surrogatepass"), safe="")


def send_handshake(network: Network,
                   example: tuple[bytes, list[tuple[str, str]], str, bytes | None]) -> None:
    method, pairs, token, body = example
    query = [f"{quote(k)}={quote(v)}" for k, v in pairs]
    query.append(f"token={quote(hostile_token(network, token))}")
    target = ("/socket.io/?" + "&".join(query)).encode("ascii")
    too_long = len(target) > HEAD_LIMIT - 512  # Twisted refuses it before the server sees it
    try:
        reply = raw_request(network.fuzzed.port, method, target,
                            [(b"Host", b"127.0.0.1"), (b"Origin", b"http://x")], body)
    except (OSError, http.client.HTTPException):
        if too_long:
            return
        raise
    assert reply.status < 500, reply
    if too_long and reply.status == 400 and not reply.body:
        return
    if reply.status >= 400 and method != b"HEAD":
        assert reply.headers.get("content-type", "").startswith("application/json"), reply
        body_json = reply.json()
        assert set(body_json) == {"code", "message"}, reply


def test_hostile_polling_requests_and_handshakes(network: Network) -> None:
    """Any method and query on /socket.io/ is answered below 500, errors as JSON."""
    fuzz(network, handshakes(), send_handshake)


def send_websocket_handshake(network: Network,
                             example: tuple[list[tuple[str, str]], str, int]) -> None:
    pairs, token, variant = example
    query = [f"{quote(k)}={quote(v)}" for k, v in pairs]
    query.append(f"token={quote(hostile_token(network, token))}")
    target = ("/socket.io/?" + "&".join(query)).encode("ascii")
    headers = [(b"Host", b"127.0.0.1"), (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
               (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
               (b"Sec-WebSocket-Version", b"13")]
    broken = [
        headers,
        headers[:-1],
        [*headers[:3], (b"Sec-WebSocket-Key", b"short"), *headers[4:]],
        [*headers[:-1], (b"Sec-WebSocket-Version", b"8")],
        headers[:1] + headers[2:],
        [*headers, (b"Sec-WebSocket-Protocol", b"\xff,,")],
        [*headers, (b"Sec-WebSocket-Extensions",
                    b"permessage-deflate; client_max_window_bits=0")],
    ][variant]
    try:
        websocket = RawWebSocket(network.fuzzed.port, target, broken)
    except (OSError, Closed):
        return
    try:
        assert websocket.status < 500, websocket.status
        if websocket.status == 101:
            websocket.send_text("2")
            websocket.drain()
    finally:
        websocket.close()


def test_hostile_websocket_handshakes(network: Network) -> None:
    """WebSocket handshakes with hostile queries, tokens and headers are refused cleanly."""
    pairs = st.lists(st.tuples(st.sampled_from(["EIO", "transport", "sid", "x"]), query_values),
                     max_size=4).map(lambda p: [("EIO", "3"), ("transport", "websocket"), *p])
    fuzz(network, st.tuples(pairs, handshake_tokens, st.integers(0, 6)),
         send_websocket_handshake)


def open_polling(network: Network, identity: str) -> str:
    """The sid of a new polling session of C{identity}."""
    fuzzed = network.fuzzed
    reply = raw_request(fuzzed.port, b"GET", eio_query(fuzzed.tokens[identity], "polling"),
                        [(b"Host", b"127.0.0.1")], None)
    assert reply.status == 200, reply
    packets = unframe(reply.body.decode("utf-8"))
    return str(json.loads(packets[0][1:])["sid"])


def upgrade(network: Network, example: tuple[str, str, list[str], list[str], bool]) -> None:
    """A polling session upgraded to WebSocket by a client that gets the sequence wrong."""
    identity, other, before, probe, poll_after = example
    fuzzed = network.fuzzed
    sid = open_polling(network, identity)
    target = eio_query(fuzzed.tokens[identity], "polling", sid)
    if before:
        reply = raw_request(fuzzed.port, b"POST", target, [(b"Host", b"127.0.0.1")],
                            frame(before).encode("utf-8", "surrogatepass"))
        assert reply.status < 500, reply
    websockets = []
    try:
        for _ in range(2):  # a second upgrade on the same session drops the first
            websocket = RawWebSocket(fuzzed.port,
                                     eio_query(fuzzed.tokens[other], "websocket", sid))
            websockets.append(websocket)
            assert websocket.status < 500, websocket.status
            if websocket.status != 101:
                break
            for packet in probe:
                websocket.send_text(packet)
            websocket.drain()
        if poll_after:
            reply = raw_request(fuzzed.port, b"GET", target, [(b"Host", b"127.0.0.1")], None,
                                timeout=0.3)
            assert reply.status < 500, reply
    except TimeoutError:
        pass  # a poll with nothing to bring waits: it is not an answer
    except (OSError, Closed):
        pass
    finally:
        for websocket in websockets:
            websocket.close()


def test_upgrades_done_wrong(network: Network) -> None:
    """Probes, upgrades and polls in the wrong order, twice, or by another identity harm nothing."""
    probes = st.lists(st.sampled_from(["2probe", "5", "2", "2probe", "3probe", "6", "1", "x",
                                       "42[]", "40"]) | engineio_packets, max_size=5)
    before = st.lists(engineio_packets, max_size=3)
    fuzz(network, st.tuples(tokens,
                            st.sampled_from(["user", "device", "consumer"]),
                            before, probes, st.booleans()), upgrade)


# -- polling payloads ------------------------------------------------------------------------


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """A polling POST body: framed right, framed wrong, or not framed at all."""
    kind = draw(st.sampled_from(["right", "wrong", "wrong", "raw", "bytes", "huge", "binary"]))
    packets = draw(st.lists(engineio_packets, min_size=1, max_size=5))
    if kind == "right":
        return frame(packets).encode("utf-8", "surrogatepass")
    if kind == "wrong":
        parts = []
        for packet in packets:
            length = draw(st.one_of(
                st.integers(-2, 3).map(lambda d, p=packet: str(utf16_length(p) + d)),
                st.sampled_from(["", "x", "\u00b2", "\u0661", "\uff19", "-1", "+1", " 1",
                                 "99999999999", "0x1", "1.0"]),
                repeat("9", 20, 4301),
            ))
            separator = draw(st.sampled_from([":", ":", "", "::", ";"]))
            parts.append(f"{length}{separator}{packet}")
        return "".join(parts).encode("utf-8", "surrogatepass")
    if kind == "raw":
        return draw(json_text).encode("utf-8", "surrogatepass")
    if kind == "bytes":
        return draw(st.binary(max_size=100))
    if kind == "binary":  # engine.io's binary payload framing
        return draw(st.sampled_from([b"\x00\x01\xff4", b"\x01\x05\xff\x04abcd", b"b4AAAA",
                                     b"\x00\xff\xff", b"\x00" * 5]))
    size = draw(st.sampled_from([MAX_BODY - 10, MAX_BODY, MAX_BODY + 10]))
    packet = "4" + "x" * (size - 10)
    return frame([packet]).encode()[:size]


def post_payloads(network: Network, example: tuple[str, list[bytes], bool]) -> None:
    identity, bodies, get_between = example
    fuzzed = network.fuzzed
    sid = open_polling(network, identity)
    target = eio_query(fuzzed.tokens[identity], "polling", sid)
    for body in bodies:
        reply = raw_request(fuzzed.port, b"POST", target,
                            [(b"Host", b"127.0.0.1"), (b"Content-Type", b"text/plain")], body)
        assert reply.status < 500, reply
        if reply.status >= 400:
            assert is_error_body(reply) or reply.json().keys() == {"code", "message"}, reply
        if get_between and reply.status == 200:
            try:
                raw_request(fuzzed.port, b"GET", target, [(b"Host", b"127.0.0.1")], None,
                            timeout=0.5)
            except TimeoutError:
                pass  # nothing to bring: the poll waits


def test_polling_payload_garbage(network: Network) -> None:
    """Polling payloads with wrong lengths, bad packets, bytes and huge bodies harm nothing."""
    fuzz(network, st.tuples(tokens,
                            st.lists(payloads(), min_size=1, max_size=4), st.booleans()),
         post_payloads)


# -- broadcasts ---------------------------------------------------------------------------------


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


#: Payloads as JSON text: any value, or nested about as deep as the server parses.
payload_texts = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([100, 498, 499, 500, 501, 502, 900, 955, 956, 957, 958, 1000]).map(deep),
)


def hostile_broadcast(network: Network, example: tuple[str, bytes]) -> None:
    """Whatever a broadcast carries, if the server takes it, every watcher gets it."""
    name, payload = example
    body = json.dumps({"channel": WATCHED, "name": name, "payload": None}).encode()
    body = body[:-len(b"null}")] + payload + b"}"
    reply = raw_request(network.fuzzed.port, b"POST", b"/api/networks/current/broadcasts",
                        [(b"Host", b"127.0.0.1"), (b"Content-Type", b"application/json"),
                         (b"Authorization", b"Bearer " + network.fuzzed.tokens["user"].encode())],
                        body)
    assert reply.status < 500, reply
    if reply.status != 200:
        assert is_error_body(reply), reply
        return
    # As the server decoded them (a surrogate pair in the name is one character).
    expected_name, expected = json.loads(json.dumps(name)), json.loads(payload)
    for watcher in network.watchers:
        watcher.expect_broadcast(expected_name, expected)


def test_hostile_broadcast_payloads(network: Network) -> None:
    """Broadcasts of any JSON, deeply nested too, reach the watchers or are refused cleanly."""
    names = st.sampled_from(["watch", "fling"]) | repeat("x", 1000) | json_text.filter(bool)
    fuzz(network, st.tuples(names, payload_texts), hostile_broadcast)


# -- what the fuzz found ---------------------------------------------------------------------


@pytest.mark.parametrize("packet", ["42\u00b2[]", "42" + "1" * 4301 + "[]", "43" + "9" * 5000])
def test_odd_packet_ids_get_an_error_packet(network: Network, packet: str) -> None:
    """A packet id of non-ASCII digits or too many of them is a 44 error; the session stays."""
    websocket = open_websocket(network, "user")
    try:
        websocket.send_text(packet)
        assert websocket.recv_text().startswith('44"')
        websocket.send_text("2")
        assert websocket.recv_text() == "3"
    finally:
        websocket.close()
    network.check()


@pytest.mark.parametrize(("body", "status"), [
    ("\u00b2:2", 400), ("1\u0661:2", 400), ("5:42\u00b2[]", 200),
    (frame(["42" + "1" * 4301 + "[]"]), 200),
])
def test_odd_polling_lengths_and_ids(network: Network, body: str, status: int) -> None:
    """Lengths of non-ASCII digits are 400, odd packet ids are answered: never a 500."""
    sid = open_polling(network, "user")
    reply = raw_request(network.fuzzed.port, b"POST",
                        eio_query(network.fuzzed.tokens["user"], "polling", sid),
                        [(b"Host", b"127.0.0.1")], body.encode("utf-8"))
    assert reply.status == status, reply
    network.check()


@pytest.mark.parametrize(("depth", "status"), [(500, 200), (501, 400), (957, 400)])
def test_broadcasts_nested_too_deep_to_deliver_are_refused(network: Network, depth: int,
                                                           status: int) -> None:
    """A payload nested deeper than the server can encode is 400, not a lost broadcast."""
    payload = b"[" * depth + b"]" * depth
    if status == 200:
        hostile_broadcast(network, ("deep", payload))
    else:
        body = (b'{"channel":"' + WATCHED.encode() + b'","name":"deep","payload":' + payload
                + b"}")
        reply = raw_request(network.fuzzed.port, b"POST", b"/api/networks/current/broadcasts",
                            [(b"Host", b"127.0.0.1"), (b"Content-Type", b"application/json"),
                             (b"Authorization",
                              b"Bearer " + network.fuzzed.tokens["user"].encode())], body)
        assert reply.status == 400 and is_error_body(reply), reply
    network.check()
