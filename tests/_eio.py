"""
A small Engine.IO 3 / Socket.IO client for the network tests, written from
PROTOCOL.md A5 and independent of C{exp.protocol}: long-polling over treq
(through the conftest L{Http}) and WebSocket over Autobahn, both on real
sockets.  Both transports offer C{send(*packets)} and C{next()}, so a test
can drive either the same way; so does a raw WebSocket client that stops
reading (L{Unreading}).
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, DeferredQueue, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint

from .conftest import Answer, Http

#: Seconds before a wait is given up: a guard against hangs, not a timing check.
HANG_GUARD = 10.0

_T = TypeVar("_T")


async def pause(seconds: float = 0.01) -> None:
    """Let the reactor run for C{seconds}."""
    await task.deferLater(reactor, seconds, lambda: None)


async def guard(awaitable: Awaitable[_T]) -> _T:
    """Await C{awaitable}, failing with a timeout error instead of hanging."""
    d: Deferred[_T] = ensureDeferred(awaitable)  # type: ignore[arg-type]
    d.addTimeout(HANG_GUARD, reactor)
    return await d


# -- packets -------------------------------------------------------------------


def utf16_length(text: str) -> int:
    """The length of C{text} in UTF-16 code units (a lone surrogate is one)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def frame(packets: Iterable[str]) -> str:
    """A polling payload of C{packets}: C{<length>:<packet>} each."""
    return "".join(f"{utf16_length(p)}:{p}" for p in packets)


def unframe(payload: str) -> list[str]:
    """The packets of a polling payload (lengths in UTF-16 code units)."""
    packets, i = [], 0
    while i < len(payload):
        colon = payload.index(":", i)
        units, end = int(payload[i:colon]), colon + 1
        while units > 0:
            units -= 2 if ord(payload[end]) > 0xFFFF else 1
            end += 1
        assert units == 0, f"a length ends inside a character: {payload!r}"
        packets.append(payload[colon + 1:end])
        i = end
    return packets


def unframe_binary(payload: bytes) -> list[str]:
    """
    The packets of a binary polling payload: each a 0 byte (text), its UTF-8
    length in decimal digits of one byte each, 255, and its UTF-8 bytes.
    """
    packets, i = [], 0
    while i < len(payload):
        assert payload[i] == 0, f"not a text packet: {payload[i:]!r}"
        end = payload.index(255, i)
        digits = payload[i + 1:end]
        assert digits and all(d < 10 for d in digits), payload
        length = int("".join(str(d) for d in digits))
        packets.append(payload[end + 1:end + 1 + length].decode("utf-8"))
        i = end + 1 + length
    assert i == len(payload), f"a length runs past the end: {payload!r}"
    return packets


def unframe_answer(answer: Answer) -> list[str]:
    """The packets of a poll's answer, in the framing its content type names."""
    content_type = answer.headers.getRawHeaders(b"content-type", [b""])[0]
    if content_type == b"application/octet-stream":
        return unframe_binary(answer.body)
    assert content_type.startswith(b"text/plain"), answer
    return unframe(answer.body.decode("utf-8"))


def event(name: str, *args: Any) -> str:
    """The Engine.IO message of the Socket.IO event C{name}."""
    return "42" + json.dumps([name, *args], ensure_ascii=False)


def parse_event(packet: str) -> tuple[str, list[Any]]:
    """The name and arguments of a Socket.IO event packet."""
    assert packet.startswith("42"), packet
    data = json.loads(packet[2:])
    return data[0], data[1:]


def parse_open(packet: str) -> dict[str, Any]:
    """The handshake data of an Engine.IO open packet."""
    assert packet.startswith("0"), packet
    return dict(json.loads(packet[1:]))


# -- long-polling --------------------------------------------------------------


class Polling:
    """
    A long-polling Engine.IO session.  With C{b64} (the default) it asks for
    text payloads at the handshake, as socket.io-client does in node; without,
    it gets binary ones, as XHR2 browsers do.
    """

    def __init__(self, http: Http, token: str | None, b64: bool = True) -> None:
        self.http = http
        self.token = token
        self.b64 = b64
        self.sid: str | None = None
        self.handshake: dict[str, Any] = {}
        self._buffer: list[str] = []

    def params(self, **extra: str) -> dict[str, str]:
        """The query of a request of this session, with C{extra}."""
        params = {"EIO": "3", "transport": "polling"}
        if self.token is not None:
            params["token"] = self.token
        if self.sid is not None:
            params["sid"] = self.sid
        elif self.b64:
            params["b64"] = "1"
        params.update(extra)
        return params

    async def request(self, method: str, body: str | None = None, **params: str) -> Answer:
        """One polling request, answered whatever its status."""
        raw = None if body is None else body.encode("utf-8")
        return await guard(self.http.call(
            method, "/socket.io/", params=self.params(**params), raw=raw,
            headers={"Content-Type": "text/plain;charset=UTF-8"},
        ))

    async def open(self) -> list[str]:
        """The handshake: the packets of its answer (open packet, C{40})."""
        answer = await self.request("GET")
        assert answer.code == 200, answer
        packets = unframe_answer(answer)
        self.handshake = parse_open(packets[0])
        self.sid = self.handshake["sid"]
        return packets

    async def get(self) -> list[str]:
        """One GET poll: the packets it brought."""
        answer = await self.request("GET")
        assert answer.code == 200, answer
        return unframe_answer(answer)

    async def send(self, *packets: str) -> None:
        """POST C{packets} in one payload."""
        answer = await self.request("POST", frame(packets))
        assert (answer.code, answer.body) == (200, b"ok"), answer

    async def next(self) -> str:
        """The next packet from the server, polling when none is buffered."""
        while not self._buffer:
            self._buffer.extend(await self.get())
        return self._buffer.pop(0)


# -- WebSocket -----------------------------------------------------------------


class Refused(Exception):
    """The server refused the WebSocket handshake."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        found = re.search(r"\[(\d{3})\]", reason)
        self.status = int(found.group(1)) if found else None


class Closed(Exception):
    """The WebSocket closed while a packet was awaited."""


_CLOSED = object()


class WebSocket(WebSocketClientProtocol):
    """An Engine.IO session over WebSocket; text frames are packets."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[WebSocket] = Deferred()
        self.closed: Deferred[tuple[int | None, str | None]] = Deferred()
        self._received: DeferredQueue[Any] = DeferredQueue()
        self.binary_frames: list[bytes] = []

    def onOpen(self) -> None:
        """The handshake succeeded."""
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """Keep a text frame as a packet, and a binary one apart."""
        if isBinary:
            self.binary_frames.append(payload)
        else:
            self._received.put(payload.decode("utf-8"))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        """The handshake failed, or the connection is closed."""
        if not self.opened.called:
            self.opened.errback(Refused(reason or ""))
        self._received.put(_CLOSED)
        if not self.closed.called:
            self.closed.callback((code, reason))

    async def send(self, *packets: str) -> None:
        """Send C{packets}, each in a text frame."""
        for packet in packets:
            self.sendMessage(packet.encode("utf-8"))

    async def next(self) -> str:
        """The next packet from the server."""
        packet = await guard(self._received.get())
        if packet is _CLOSED:
            self._received.put(_CLOSED)
            raise Closed("the WebSocket is closed")
        return str(packet)

    async def wait_closed(self) -> tuple[int | None, str | None]:
        """Wait until the connection is closed (by either side)."""
        return await guard(self.closed)


# -- a set of clients for one test -----------------------------------------------


class Clients:
    """Opens clients against one server and closes the WebSockets afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = Http(url)
        self._websockets: list[WebSocket] = []

    def polling(self, token: str | None) -> Polling:
        """A polling client that has not shaken hands yet."""
        return Polling(self.http, token)

    async def websocket(self, token: str | None, **params: str) -> WebSocket:
        """
        A WebSocket to C{/socket.io/}, once its handshake succeeded.

        @raise Refused: if the server refused the handshake.
        """
        query = {"EIO": "3", "transport": "websocket"}
        if token is not None:
            query["token"] = token
        query.update(params)
        parts = urlsplit(self.url)
        factory = WebSocketClientFactory(f"ws://{parts.netloc}/socket.io/?{urlencode(query)}")
        factory.protocol = WebSocket
        endpoint = TCP4ClientEndpoint(reactor, parts.hostname, parts.port)
        client = await guard(endpoint.connect(factory))
        self._websockets.append(client)
        return await guard(client.opened)

    async def connect(self, transport: str, token: str) -> Polling | WebSocket:
        """A client over C{transport} past the open packet and C{40}."""
        client: Polling | WebSocket
        if transport == "polling":
            client = self.polling(token)
            packets = await client.open()
        else:
            client = await self.websocket(token)
            packets = [await client.next(), await client.next()]
        assert packets[0].startswith("0") and packets[1:] == ["40"], packets
        return client

    async def close(self) -> None:
        """Drop the WebSockets still open, and wait until they are closed."""
        for client in self._websockets:
            if not client.closed.called:
                client.dropConnection(abort=True)
                await guard(client.closed)


async def subscribe(client: Polling | WebSocket | Unreading, channels: list[Any]) -> list[str]:
    """Send C{subscribe} and return the channels C{subscribed} names."""
    await client.send(event("subscribe", channels))
    name, args = parse_event(await client.next())
    assert name == "subscribed", (name, args)
    return list(args[0])


async def assert_served(client: Polling | WebSocket) -> None:
    """C{client}'s next packet after a ping is the pong: nothing else was pending."""
    await client.send("2")
    assert await client.next() == "3"


# -- a WebSocket client that stops reading ---------------------------------------


def _client_frame(text: str) -> bytes:
    """A masked WebSocket text frame, as a client sends it."""
    payload = text.encode("utf-8")
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x81, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Unreading:
    """
    A raw TCP WebSocket client with a small receive buffer, which reads only
    when asked: it shakes hands, reads the first packets, then writes (pings)
    but reads nothing more, or only later.  The socket is non-blocking, so
    the reactor serves the server meanwhile.
    """

    def __init__(self, url: str, token: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, int(port)))  # loopback: the kernel completes it
        self.sock.setblocking(False)
        self.sock.sendall(
            f"GET /socket.io/?EIO=3&transport=websocket&token={token} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            "\r\n".encode("ascii"))
        self._buffer = b""
        self._opened = False

    async def _fill(self) -> None:
        """Wait for more bytes from the server."""
        for _ in range(int(HANG_GUARD / 0.01)):
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                await pause()
                continue
            assert data, "the server closed the connection"
            self._buffer += data
            return
        raise AssertionError("the server sent nothing")

    def read_available(self) -> None:
        """Take what the kernel has received, without waiting."""
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            assert data, "the server closed the connection"
            self._buffer += data

    async def next(self) -> str:
        """The next text frame from the server (reading, for now)."""
        while not self._opened:
            head, found, rest = self._buffer.partition(b"\r\n\r\n")
            if found:
                assert head.startswith(b"HTTP/1.1 101"), head
                self._buffer, self._opened = rest, True
            else:
                await self._fill()
        while True:
            if len(self._buffer) >= 2:
                length, start = self._buffer[1] & 0x7F, 2
                if length == 126:
                    start = 4
                elif length == 127:
                    start = 10
                if start > 2 and len(self._buffer) >= start:
                    length = int.from_bytes(self._buffer[2:start], "big")
                if len(self._buffer) >= start + length:
                    assert self._buffer[0] == 0x81, self._buffer[:1]
                    text = self._buffer[start:start + length].decode("utf-8")
                    self._buffer = self._buffer[start + length:]
                    return text
            await self._fill()

    async def send(self, *packets: str) -> None:
        """Send C{packets}, each in a frame (the kernel takes them: they are small)."""
        for packet in packets:
            self.sock.send(_client_frame(packet))

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()
