"""
The Engine.IO 3 side of the real-time network (PROTOCOL.md A5): sessions
over long-polling and WebSocket (through Autobahn) served at C{/socket.io/},
the upgrade from one to the other, liveness, and the packets waiting for a
client, within their caps.

An L{EngineIOSession} carries text packets both ways and knows nothing of
what is in them: the messages it receives go to its C{on_message}, and its
end to its C{on_close}.  What a session is for, who may open one and who may
use it afterwards is decided by the layer above, a L{Gate} (the server's
L{RealTimeNetwork<exp.server._network.RealTimeNetwork>}).
"""

from __future__ import annotations

import itertools
import json
import secrets
import socket
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import attrs
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.interfaces import IDelayedCall, IPullProducer, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.web import resource, server
from zope.interface import implementer

from exp.protocol import engineio as eio
from exp.server._web import socket_of, write_at_once

#: The query parameters of a request, each name with its values.
Params = dict[str, list[str]]


def param(params: Params, name: str) -> str:
    """The last value of the query parameter C{name}, or C{""}."""
    return (params.get(name) or [""])[-1]


class Refused(Exception):
    """
    A request that the layer above does not let through.

    @ivar status: the HTTP status of the answer.
    @ivar code: the C{code} of a polling answer's C{{code, message}}.
    @ivar message: what is wrong, for the client.
    """

    def __init__(self, status: int, code: int | str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Gate(Protocol):
    """What the layer above the Engine.IO sessions decides about them."""

    def admit(self, params: Params) -> Any:
        """
        Whom a handshake, or the WebSocket of an upgrade, comes from: an
        owner, which L{opened} and L{check} get back.

        @raise Refused: if the request may not open or join a session.
        """

    def opened(self, session: EngineIOSession, owner: Any, params: Params) -> None:
        """
        C{session} is new, opened by C{owner} with C{params}: give it its
        C{on_message} and C{on_close}.
        """

    def check(self, session: EngineIOSession, params: Params, owner: Any = None) -> None:
        """
        Whether a request with C{params} may use C{session}: a poll or a
        post, or (with the C{owner} L{admit} found) the WebSocket of an
        upgrade.

        @raise Refused: if it may not.
        """


class SharedPacket(Protocol):
    """An Engine.IO packet sent to many sessions, encoded once for all."""

    def frame(self) -> str:
        """The text of the packet."""

    def size(self) -> int:
        """The bytes of L{frame} in UTF-8."""


@attrs.define(slots=True, eq=False)
class EngineIO:
    """
    The Engine.IO sessions of one server, and the options and caps they
    share.

    @ivar gate: what decides who opens and uses a session.
    @ivar clock: what times the sessions out.
    @ivar ping_interval: seconds between the pings of a client.
    @ivar ping_timeout: seconds a client has past an interval before its
        session is closed.
    @ivar max_message: the largest WebSocket message or frame taken.
    @ivar queue_bytes: bytes of packets a session may have waiting: queued
        for a client that has not polled, or written to a WebSocket whose
        transport has not drained.  Past it the session is closed.
    @ivar queue_messages: the same, counted in packets.
    @ivar sessions: the open sessions by sid.
    """

    gate: Gate
    clock: IReactorTime
    ping_interval: float
    ping_timeout: float
    max_message: int
    queue_bytes: int
    queue_messages: int
    sessions: dict[str, EngineIOSession] = attrs.field(factory=dict, init=False)
    #: Session numbers: what log lines name a session by (its sid is a secret).
    _numbers: Iterator[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _prepared: tuple[SharedPacket, PreparedMessage] | None = attrs.field(default=None,
                                                                          init=False)

    def open(self, owner: Any, params: Params) -> EngineIOSession:
        """A new session, which the L{Gate} has admitted as C{owner}'s."""
        session = EngineIOSession(self, secrets.token_urlsafe(15), next(self._numbers))
        self.sessions[session.sid] = session
        self.gate.opened(session, owner, params)
        return session

    def forget(self, session: EngineIOSession) -> None:
        """C{session} is closed."""
        self.sessions.pop(session.sid, None)

    def prepared(self, packet: SharedPacket) -> PreparedMessage:
        """
        The WebSocket frame of C{packet}, framed once for all the sessions
        it goes to (they are sent one shared packet after the other).
        """
        cached = self._prepared
        if cached is None or cached[0] is not packet:
            frame = packet.frame().encode("utf-8")
            cached = self._prepared = (packet, PreparedMessage(frame, False, False, False))
        return cached[1]

    def open_packet(self, session: EngineIOSession, upgrades: list[str]) -> str:
        """The open packet of C{session}, offering C{upgrades}."""
        return eio.open_packet(session.sid, int(self.ping_interval * 1000),
                               int(self.ping_timeout * 1000), upgrades)

    def close_all(self) -> None:
        """Close every session."""
        for session in list(self.sessions.values()):
            session.close()


def _nothing(*args: object) -> None:
    """What a session does with a message or its end until it is told otherwise."""


class EngineIOSession:
    """
    One Engine.IO connection: polling, then perhaps upgraded to WebSocket.

    @ivar sid: the session's id, a secret of its client.
    @ivar number: what log lines call the session.
    @ivar on_message: called with the data of each message from the client.
    @ivar on_close: called once, when the session ends.
    @ivar binary: whether polls are answered in binary framing (the client
        did not ask for C{b64}).
    @ivar websocket: the WebSocket that carries the session, once it has
        one.
    """

    _log = Logger()

    def __init__(self, engine: EngineIO, sid: str, number: int) -> None:
        #: What the session belongs to: options, caps and the other sessions.
        self.engine = engine
        self.sid = sid
        self.number = number
        self.on_message: Callable[[str], None] = _nothing
        self.on_close: Callable[[], None] = _nothing
        #: Whether the session has ended (nothing more is sent or received).
        self.closed = False
        self.binary = False
        self._queue: list[str] = []
        self._queued = 0  # bytes
        self._poll: server.Request | None = None
        self.websocket: _WebSocket | None = None
        self._upgrading: _WebSocket | None = None
        self._probed: _WebSocket | None = None
        self._timeout: IDelayedCall | None = None
        self._touch()

    # -- liveness -------------------------------------------------------------

    def _touch(self) -> None:
        """The client is alive: it has until an interval and a timeout from now."""
        delay = self.engine.ping_interval + self.engine.ping_timeout
        if self._timeout is not None and self._timeout.active():
            self._timeout.reset(delay)
            return
        self._timeout = self.engine.clock.callLater(delay, self._timed_out)

    def _timed_out(self) -> None:
        self._log.info("session #{number} sent no ping in time; closing", number=self.number)
        self.close()

    # -- sending --------------------------------------------------------------

    def send(self, text: str) -> None:
        """Send one Engine.IO packet over whichever transport is current."""
        if self.closed:
            return
        if self.websocket is not None:
            self.websocket.send_text(text)
            return
        self._enqueue(text, eio.utf8_size(text))

    def send_shared(self, packet: SharedPacket) -> None:
        """Send one packet that goes to many sessions: it is framed once for all."""
        if self.closed:
            return
        if self.websocket is not None:
            self.websocket.send_prepared(self.engine.prepared(packet))
            return
        self._enqueue(packet.frame(), packet.size())

    def _enqueue(self, text: str, size: int) -> None:
        """Queue a packet for the next poll; past the caps, close the session."""
        self._queue.append(text)
        self._queued += size
        if self._poll is not None:
            self._flush_poll()
            return
        engine = self.engine
        if self._queued > engine.queue_bytes or len(self._queue) > engine.queue_messages:
            self.fell_behind(self._queued, len(self._queue))

    def _take_queue(self) -> list[str]:
        """The packets waiting for the client, which no longer wait."""
        queued, self._queue, self._queued = self._queue, [], 0
        return queued

    def fell_behind(self, size: int, count: int) -> None:
        """Its client has not taken C{count} packets of C{size} bytes: close the session."""
        engine = self.engine
        self._log.warn(
            "session #{number} fell behind: {count} packets of {size} bytes not taken "
            "by its client (caps: {max_count} packets, {max_size} bytes); closing",
            number=self.number, count=count, size=size, max_count=engine.queue_messages,
            max_size=engine.queue_bytes)
        self.close(abort=True)

    # -- polling --------------------------------------------------------------

    def handshake(self, request: server.Request) -> None:
        """Answer the polling handshake that opened the session."""
        _answer_payload(request, [self.engine.open_packet(self, ["websocket"]),
                                  *self._take_queue()], self.binary)

    def _flush_poll(self) -> None:
        request = self._poll
        if request is None or not self._queue:
            return
        self._poll = None
        _answer_payload(request, self._take_queue(), self.binary)

    def attach_poll(self, request: server.Request) -> None:
        """A GET of the polling transport: answer now or when there is something."""
        if self._poll is not None:
            # A client never has two polls open; answer the older one empty.
            _answer_payload(self._poll, [eio.Packet(eio.NOOP).encode()], self.binary)
        self._poll = request
        request.notifyFinish().addBoth(lambda _: self._forget_poll(request))
        self._flush_poll()
        if self._probed is not None and self._probed is self._upgrading:
            self._end_poll()  # a probed client only polls until it can pause

    def _end_poll(self, packet: eio.PacketType = eio.NOOP) -> None:
        """Answer the pending poll, if any, with C{packet}."""
        if self._poll is not None:
            request, self._poll = self._poll, None
            _answer_payload(request, [eio.Packet(packet).encode()], self.binary)

    def _forget_poll(self, request: server.Request) -> None:
        if self._poll is request:
            self._poll = None

    # -- receiving ------------------------------------------------------------

    def receive(self, text: str, websocket: _WebSocket | None = None) -> None:
        """
        Handle one Engine.IO packet from the client.

        @raise eio.ProtocolError: if it is not an Engine.IO packet.
        """
        self.handle(eio.Packet.decode(text), websocket)

    def handle(self, packet: eio.Packet, websocket: _WebSocket | None = None) -> None:
        """Handle one decoded Engine.IO packet from the client."""
        self._touch()
        if websocket is not None and websocket is self._upgrading:
            self._receive_probe(packet, websocket)
        elif packet.type == eio.PING:
            self.send(eio.Packet(eio.PONG, packet.data).encode())
        elif packet.type == eio.MESSAGE:
            self.on_message(packet.data)
        elif packet.type == eio.CLOSE:
            self.close()

    def _receive_probe(self, packet: eio.Packet, websocket: _WebSocket) -> None:
        if packet.type == eio.PING and packet.data == "probe":
            websocket.send_text(eio.Packet(eio.PONG, "probe").encode())
            # As engine.io: end the pending poll, as engine.io-client waits for
            # it to complete before it sends 5.
            self._probed = websocket
            self._end_poll()
        elif packet.type == eio.UPGRADE:
            self._upgrading = None
            self._carry_on(websocket)
            self._end_poll()
        else:
            self._log.debug("ignored {type} during upgrade of session #{number}",
                            type=packet.type, number=self.number)

    # -- WebSocket ------------------------------------------------------------

    def _carry_on(self, websocket: _WebSocket) -> None:
        """From now on C{websocket} carries the session, first what was waiting."""
        self.websocket = websocket
        for text in self._take_queue():
            websocket.send_text(text)

    def websocket_opened(self, websocket: _WebSocket, new: bool) -> None:
        """
        C{websocket} is open: it opened the session (C{new}), or it is to
        take over a polling one once the client has probed it.
        """
        if new:
            websocket.send_text(self.engine.open_packet(self, []))
            self._carry_on(websocket)
        else:
            if self._upgrading is not None:
                self._upgrading.dropConnection(abort=True)
            self._upgrading = websocket

    def websocket_closed(self, websocket: _WebSocket) -> None:
        """C{websocket} is closed: if it carried the session, the session ends."""
        if websocket is self._upgrading:
            self._upgrading = None
        elif websocket is self.websocket:
            self.websocket = None
            self.close()

    # -- closing --------------------------------------------------------------

    def close(self, abort: bool = False) -> None:
        """
        End the session: tell L{on_close}, stop timers, close its transports
        (C{abort}: drop their connections, and what they still had to write).
        """
        if self.closed:
            return
        self.closed = True
        self.engine.forget(self)
        self.on_close()
        self._take_queue()
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._end_poll(eio.CLOSE)
        for websocket in (self.websocket, self._upgrading):
            if websocket is None:
                continue
            if abort:
                websocket.dropConnection(abort=True)
            else:
                websocket.sendClose()
        self.websocket = self._upgrading = None


def _answer_payload(request: server.Request, packets: list[str], binary: bool) -> None:
    """
    Answer a poll with C{packets}.  (A poll whose client went away is
    forgotten when it goes: see L{EngineIOSession.attach_poll}.)
    """
    if request.finished:
        return
    if binary:
        body = eio.encode_binary_payload(packets)
        request.setHeader(b"content-type", b"application/octet-stream")
    else:
        body = eio.encode_text_payload(packets).encode("utf-8")
        request.setHeader(b"content-type", b"text/plain; charset=UTF-8")
    request.setHeader(b"content-length", str(len(body)).encode("ascii"))
    request.write(body)
    request.finish()


def _engineio_error(request: server.Request, status: int, code: int | str,
                    message: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps({"code": code, "message": message}).encode("utf-8")


@implementer(IPushProducer)
class _Drain:
    """
    Registered on a WebSocket's transport, which pauses it when what is
    written backs up (its buffer is full) and resumes it once all of it is
    sent: the WebSocket counts what it writes in between.  (On a socket's
    transport, L{_Flushed} takes its place.)
    """

    __slots__ = ("websocket",)

    def __init__(self, websocket: _WebSocket) -> None:
        self.websocket = websocket

    def pauseProducing(self) -> None:
        self.websocket.backed_up = True

    def resumeProducing(self) -> None:
        self.websocket.drained()

    def stopProducing(self) -> None:
        pass


@implementer(IPullProducer)
class _Flushed:
    """
    Registered on a socket's transport while it holds bytes it has not
    sent, which resumes it once all of them are: from then on its WebSocket
    writes to the socket at once again.
    """

    __slots__ = ("registering", "websocket")

    def __init__(self, websocket: _WebSocket) -> None:
        self.websocket = websocket
        #: Twisted resumes a pull producer as it registers it, sent or not.
        self.registering = False

    def resumeProducing(self) -> None:
        if not self.registering:
            websocket = self.websocket
            websocket.unregisterProducer()
            websocket.drained()

    def stopProducing(self) -> None:
        pass


class _WebSocket(WebSocketServerProtocol):
    """
    The WebSocket transport of one session.

    Over a plain socket, what it sends is written to the socket at once
    (a fan-out's first frame leaves before its last is framed) while the
    transport has nothing waiting to be sent; else it goes after what
    waits, into the transport's buffer, which Twisted sends on the reactor's
    next turn.  Bytes of one connection thus keep their order.
    """

    _log = Logger()
    factory: _WebSocketFactory
    session: EngineIOSession | None = None
    #: Whether the transport holds bytes not sent yet (over a socket), or
    #: more than its buffer (otherwise), and what was written since then.
    backed_up = False
    backlog_bytes = 0
    backlog_messages = 0
    #: The socket written to at once, when the transport is one's.
    _socket: socket.socket | None = None
    _flushed: _Flushed

    @property
    def engine(self) -> EngineIO:
        return self.factory.engine

    def connectionMade(self) -> None:
        super().connectionMade()
        # In place of the HTTP channel, whose request this connection was
        # (every Twisted stream transport and protocol wrapper takes one).
        self.unregisterProducer()
        self._socket = socket_of(self.transport)
        if self._socket is None:
            self.registerProducer(_Drain(self), True)
        else:
            # The transport may still hold an answer of the HTTP channel:
            # nothing is written to the socket until it says it has sent all.
            self._flushed = _Flushed(self)
            self._await_flush()

    def _await_flush(self) -> None:
        """The transport holds bytes not sent yet: write after them until it has sent all."""
        self.backed_up = True
        flushed = self._flushed
        flushed.registering = True
        self.registerProducer(flushed, False)
        flushed.registering = False

    def drained(self) -> None:
        """The transport has sent all that it held."""
        self.backed_up = False
        self.backlog_bytes = self.backlog_messages = 0

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """
        Write C{data} (what Autobahn sends goes through here): at once to
        the socket if nothing waits in the transport, else after what
        waits.  (C{sync} and C{chopsize}, ways of trickling bytes that
        Autobahn offers for tests, are not used: the data is written as
        it is.)
        """
        sock, transport = self._socket, self.transport
        assert transport is not None
        if sock is None or self.backed_up:
            transport.write(data)
        elif not write_at_once(sock, transport, data):
            self._await_flush()

    def _backlog(self, size: int) -> bool:
        """
        Count a message written while the transport is backed up: whether
        it is within the session's caps.  Past them, the session is closed.
        """
        self.backlog_bytes += size
        self.backlog_messages += 1
        engine = self.engine
        if (self.backlog_bytes <= engine.queue_bytes
                and self.backlog_messages <= engine.queue_messages):
            return True
        if self.session is not None and not self.session.closed:
            self.session.fell_behind(self.backlog_bytes, self.backlog_messages)
        if self.state != self.STATE_CLOSED:
            self.dropConnection(abort=True)
        return False

    def send_text(self, text: str) -> None:
        """Send one Engine.IO packet."""
        data = text.encode("utf-8")
        if self.backed_up and not self._backlog(len(data)):
            return
        self.sendMessage(data)

    def send_prepared(self, prepared: PreparedMessage) -> None:
        """C{sendMessage} of a message framed once for many connections."""
        if self.backed_up and not self._backlog(len(prepared.payload)):
            return
        if (self.state != self.STATE_OPEN
                or 0 < getattr(self, "maxMessagePayloadSize", 0) < len(prepared.payload)):
            self.sendMessage(prepared.payload)  # which refuses it
            return
        self.sendPreparedMessage(prepared)

    def onConnect(self, request: ConnectionRequest) -> None:
        params = request.params
        if param(params, "EIO") != "3":
            raise ConnectionDeny(400, "only Engine.IO protocol 3 (EIO=3) is served")
        engine = self.engine
        try:
            owner = engine.gate.admit(params)
            sid = param(params, "sid")
            if sid:
                session = engine.sessions.get(sid)
                if session is None or session.closed:
                    raise ConnectionDeny(400, "Session ID unknown")
                engine.gate.check(session, params, owner)
                self._new = False
            else:
                session = engine.open(owner, params)
                self._new = True
        except Refused as e:
            raise ConnectionDeny(e.status, e.message) from None
        self.session = session

    def onOpen(self) -> None:
        assert self.session is not None
        self.session.websocket_opened(self, self._new)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        session = self.session
        if session is None or session.closed:
            return
        try:
            if isBinary:
                raise eio.ProtocolError("binary frames are not served")
            session.receive(payload.decode("utf-8"), self)
        except (eio.ProtocolError, UnicodeDecodeError) as e:
            self._log.info("closing session #{number}: {error}", number=session.number,
                           error=e)
            session.close()
            self.dropConnection(abort=False)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.session is not None:
            self.session.websocket_closed(self)


class _WebSocketFactory(WebSocketServerFactory):
    protocol = _WebSocket  # type: ignore[assignment]

    def __init__(self, engine: EngineIO) -> None:
        super().__init__()
        self.engine = engine


class EngineIOResource(resource.Resource):
    """C{/socket.io/}: the polling transport, and the door to WebSocket."""

    #: It answers every path below it itself.
    isLeaf = True
    _log = Logger()

    def __init__(self, engine: EngineIO) -> None:
        super().__init__()
        #: The sessions this resource serves.
        self.engine = engine
        factory = _WebSocketFactory(engine)
        factory.setProtocolOptions(
            maxMessagePayloadSize=engine.max_message,
            maxFramePayloadSize=engine.max_message,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=5,
        )
        self._websocket = WebSocketResource(factory)

    def render(self, request: server.Request) -> bytes | int:
        """Serve a poll, a post, a handshake, or the start of a WebSocket."""
        params = {k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs]
                  for k, vs in (request.args or {}).items()}
        if param(params, "EIO") != "3":
            return _engineio_error(request, 400, eio.ErrorCode.UNSUPPORTED_PROTOCOL,
                                   "Unsupported protocol version: this server speaks EIO=3")
        transport = param(params, "transport")
        if transport == "websocket":
            if request.method == b"OPTIONS":
                return b""
            return self._websocket.render(request)
        if transport != "polling":
            return _engineio_error(request, 400, eio.ErrorCode.UNKNOWN_TRANSPORT,
                                   "Transport unknown")
        if request.method == b"OPTIONS":
            return b""
        sid = param(params, "sid")
        if not sid:
            return self._handshake(request, params)
        session = self.engine.sessions.get(sid)
        if session is None:
            return _engineio_error(request, 400, eio.ErrorCode.UNKNOWN_SID, "Session ID unknown")
        try:
            self.engine.gate.check(session, params)
        except Refused as e:
            return _engineio_error(request, e.status, e.code, e.message)
        if session.websocket is not None:
            # As engine.io: a session on WebSocket no longer polls.
            return _engineio_error(request, 400, eio.ErrorCode.BAD_REQUEST, "Bad request")
        if request.method == b"GET":
            session.attach_poll(request)
            return server.NOT_DONE_YET
        if request.method == b"POST":
            return self._post(request, session)
        return _engineio_error(request, 400, eio.ErrorCode.BAD_REQUEST, "Bad request")

    def _handshake(self, request: server.Request, params: Params) -> bytes | int:
        if request.method != b"GET":
            return _engineio_error(request, 400, eio.ErrorCode.BAD_HANDSHAKE_METHOD,
                                   "Bad handshake method")
        try:
            owner = self.engine.gate.admit(params)
        except Refused as e:
            return _engineio_error(request, e.status, e.code, e.message)
        session = self.engine.open(owner, params)
        # As engine.io 1.x, which socket.io-client 1.x in browsers needs: an
        # XHR2 client that does not ask b64 at the handshake gets binary polls.
        session.binary = not param(params, "b64")
        session.handshake(request)
        return server.NOT_DONE_YET

    def _post(self, request: server.Request, session: EngineIOSession) -> bytes:
        if getattr(request, "body_too_large", False):
            session.close()
            return _engineio_error(request, 413, eio.ErrorCode.BAD_REQUEST, "payload too large")
        raw = request.content.read() if request.content is not None else b""
        try:
            packets = eio.decode_payload(raw.decode("utf-8"))
        except (eio.ProtocolError, UnicodeDecodeError) as e:
            self._log.info("closing session #{number}: {error}", number=session.number,
                           error=e)
            session.close()
            return _engineio_error(request, 400, eio.ErrorCode.BAD_REQUEST, f"Bad request: {e}")
        for packet in packets:
            if session.closed:
                break
            session.handle(packet)
        request.setHeader(b"content-type", b"text/html")
        return b"ok"
