"""
The real-time network of PROTOCOL.md A5: Socket.IO over Engine.IO 3, with
long-polling and WebSocket (through Autobahn) served at C{/socket.io/} in
the same twisted.web site as the REST API.

A L{Session} is one Engine.IO connection of one identity; it subscribes to
channels through the hub and receives their broadcasts.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web import resource, server
from zope.interface import implementer

from exp.protocol import ChannelId, InvalidChannelId, InvalidToken
from exp.protocol import engineio as eio
from exp.server._auth import Identity, channel_allowed
from exp.server._hub import IHub, ISubscriber, Message

#: Engine.IO error codes of engine.io 3, sent as C{{code, message}}.
UNKNOWN_TRANSPORT, UNKNOWN_SID, BAD_HANDSHAKE_METHOD, BAD_REQUEST, FORBIDDEN = range(5)
UNSUPPORTED_PROTOCOL = 5


class Network:
    """The sessions of one server and what they share."""

    _log = Logger()

    def __init__(self, hub: IHub, identify: Callable[[str], Identity],
                 clock: IReactorTime, ping_interval: float = 25.0,
                 ping_timeout: float = 20.0, max_message: int = 1 << 20) -> None:
        self.hub = hub
        self.identify = identify
        self.clock = clock
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_message = max_message
        self.sessions: dict[str, Session] = {}
        #: Told of every session that opens and closes (which devices are online).
        self.presence: Any = None
        self._prepared: tuple[Message, PreparedMessage] | None = None

    def prepared(self, message: Message) -> PreparedMessage:
        """
        The WebSocket frame of C{message}, framed once for all the sessions it
        goes to (the hub hands one message to each subscriber in turn).
        """
        cached = self._prepared
        if cached is None or cached[0] is not message:
            frame = message.frame().encode("utf-8")
            cached = self._prepared = (message, PreparedMessage(frame, False, False, False))
        return cached[1]

    def authenticate(self, params: dict[str, list[str]]) -> Identity:
        """
        The identity of a handshake's C{token}.

        @raise InvalidToken: if it has none or a bad one.
        """
        token = (params.get("token") or [""])[-1]
        if not token:
            raise InvalidToken("the handshake needs a token parameter")
        identity = self.identify(token)
        if identity.restricted:
            raise InvalidToken("a restricted token cannot join the network")
        return identity

    def open_session(self, identity: Identity) -> Session:
        session = Session(self, secrets.token_urlsafe(15), identity)
        self.sessions[session.sid] = session
        if self.presence is not None:
            self.presence.opened(identity)
        return session

    def close_all(self) -> None:
        for session in list(self.sessions.values()):
            session.close()


@implementer(ISubscriber)
class Session:
    """One Engine.IO connection: polling, then perhaps upgraded to WebSocket."""

    _log = Logger()

    def __init__(self, network: Network, sid: str, identity: Identity) -> None:
        self.network = network
        self.sid = sid
        self.identity = identity
        self.closed = False
        #: Polls are answered in binary framing (the client did not ask b64).
        self.binary = False
        self._queue: list[str] = []
        self._poll: server.Request | None = None
        self.websocket: _WebSocket | None = None
        self._upgrading: _WebSocket | None = None
        self._probed: _WebSocket | None = None
        self._timeout: IDelayedCall | None = None
        self.channels: set[str] = set()
        self._touch()

    def open_packets(self, upgrades: list[str]) -> list[str]:
        """The open packet and Socket.IO's connect to C{/}."""
        return [
            eio.open_packet(self.sid, int(self.network.ping_interval * 1000),
                            int(self.network.ping_timeout * 1000), upgrades),
            eio.Packet(eio.MESSAGE, eio.SocketIOPacket(eio.CONNECT).encode()).encode(),
        ]

    # -- liveness -------------------------------------------------------------

    def _touch(self) -> None:
        """The client is alive: it has until an interval and a timeout from now."""
        if self._timeout is not None and self._timeout.active():
            self._timeout.reset(self.network.ping_interval + self.network.ping_timeout)
            return
        self._timeout = self.network.clock.callLater(
            self.network.ping_interval + self.network.ping_timeout, self._timed_out
        )

    def _timed_out(self) -> None:
        self._log.info("session {sid} sent no ping in time; closing", sid=self.sid)
        self.close()

    # -- sending --------------------------------------------------------------

    def send(self, text: str) -> None:
        """Send one Engine.IO packet over whichever transport is current."""
        if self.closed:
            return
        if self.websocket is not None:
            self.websocket.sendMessage(text.encode("utf-8"))
            return
        self._queue.append(text)
        self._flush_poll()

    def deliver(self, message: Message) -> None:
        if self.websocket is not None and not self.closed:
            self.websocket.send_prepared(self.network.prepared(message))
            return
        self.send(message.frame())

    def _flush_poll(self) -> None:
        request, queue = self._poll, self._queue
        if request is None or not queue:
            return
        self._poll, self._queue = None, []
        _answer_payload(request, queue, self.binary)

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

    def _end_poll(self) -> None:
        """Answer the pending poll, if any, with a noop."""
        if self._poll is not None:
            request, self._poll = self._poll, None
            _answer_payload(request, [eio.Packet(eio.NOOP).encode()], self.binary)

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
            self._receive_message(packet.data)
        elif packet.type == eio.CLOSE:
            self.close()

    def _receive_probe(self, packet: eio.Packet, websocket: _WebSocket) -> None:
        if packet.type == eio.PING and packet.data == "probe":
            websocket.sendMessage(eio.Packet(eio.PONG, "probe").encode().encode("utf-8"))
            # As engine.io: end the pending poll, as engine.io-client waits for
            # it to complete before it sends 5.
            self._probed = websocket
            self._end_poll()
        elif packet.type == eio.UPGRADE:
            self._upgrading = None
            self.websocket = websocket
            queued, self._queue = self._queue, []
            self._end_poll()
            for text in queued:
                websocket.sendMessage(text.encode("utf-8"))
        else:
            self._log.debug("ignored {type} during upgrade of {sid}",
                            type=packet.type, sid=self.sid)

    def _receive_message(self, data: str) -> None:
        try:
            packet = eio.SocketIOPacket.decode(data)
        except eio.ProtocolError as e:
            self._error(f"malformed Socket.IO packet: {e}")
            return
        if packet.namespace != "/":
            self._error("Invalid namespace", packet.namespace)
        elif packet.type == eio.EVENT:
            self._receive_event(packet.data)
        elif packet.type == eio.DISCONNECT:
            self.close()
        # CONNECT to "/" (already connected) and ACKs need nothing.

    def _receive_event(self, data: Any) -> None:
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            self._error("an event is an array whose first element is its name")
            return
        name, args = data[0], data[1:]
        if name != "subscribe":
            self._log.debug("ignored event {name!r} from {sid}", name=name, sid=self.sid)
            return
        if not args or not isinstance(args[0], list):
            self._error("subscribe takes an array of channel ids")
            return
        accepted = []
        for channel_id in args[0]:
            if self._may_listen(channel_id):
                self.network.hub.subscribe(channel_id, self)
                self.channels.add(channel_id)
                accepted.append(channel_id)
        self.send(eio.event("subscribed", accepted))

    def _may_listen(self, channel_id: object) -> bool:
        try:
            channel = ChannelId.decode(channel_id)
        except InvalidChannelId:
            return False
        return channel.encode() == channel_id and channel_allowed(
            self.identity, channel, send=False
        )

    def _error(self, message: str, namespace: str = "/") -> None:
        """Tell the client, in a Socket.IO error packet, what it got wrong."""
        packet = eio.SocketIOPacket(eio.ERROR, message, namespace)
        self.send(eio.Packet(eio.MESSAGE, packet.encode()).encode())

    # -- WebSocket ------------------------------------------------------------

    def websocket_opened(self, websocket: _WebSocket, new: bool) -> None:
        if new:
            self.websocket = websocket
            for text in self.open_packets([]):
                websocket.sendMessage(text.encode("utf-8"))
        else:
            if self._upgrading is not None:
                self._upgrading.dropConnection(abort=True)
            self._upgrading = websocket

    def websocket_closed(self, websocket: _WebSocket) -> None:
        if websocket is self._upgrading:
            self._upgrading = None
        elif websocket is self.websocket:
            self.websocket = None
            self.close()

    # -- closing --------------------------------------------------------------

    def close(self) -> None:
        """End the session: unsubscribe, stop timers, close its transports."""
        if self.closed:
            return
        self.closed = True
        self.network.sessions.pop(self.sid, None)
        if self.network.presence is not None:
            self.network.presence.closed(self.identity)
        self.network.hub.unsubscribe_all(self)
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        if self._poll is not None:
            request, self._poll = self._poll, None
            _answer_payload(request, [eio.Packet(eio.CLOSE).encode()], self.binary)
        for websocket in (self.websocket, self._upgrading):
            if websocket is not None:
                websocket.sendClose()
        self.websocket = self._upgrading = None


def _answer_payload(request: server.Request, packets: list[str], binary: bool) -> None:
    if request.finished or request._disconnected:
        return
    if binary:
        body = eio.encode_binary_payload(packets)
        request.setHeader(b"content-type", b"application/octet-stream")
    else:
        body = "".join(f"{eio.utf16_length(p)}:{p}" for p in packets).encode("utf-8")
        request.setHeader(b"content-type", b"text/plain; charset=UTF-8")
    request.setHeader(b"content-length", str(len(body)).encode("ascii"))
    request.write(body)
    request.finish()


def _engineio_error(request: server.Request, status: int, code: int, message: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps({"code": code, "message": message}).encode("utf-8")


class _WebSocket(WebSocketServerProtocol):
    """The WebSocket transport of one session."""

    _log = Logger()
    factory: _WebSocketFactory
    session: Session | None = None

    @property
    def network(self) -> Network:
        return self.factory.network

    def send_prepared(self, prepared: PreparedMessage) -> None:
        """C{sendMessage} of a message framed once for many connections."""
        if (self.state != self.STATE_OPEN
                or 0 < getattr(self, "maxMessagePayloadSize", 0) < len(prepared.payload)):
            self.sendMessage(prepared.payload)  # which refuses it
            return
        self.sendPreparedMessage(prepared)

    def onConnect(self, request: ConnectionRequest) -> None:
        params = request.params
        if (params.get("EIO") or [""])[-1] != "3":
            raise ConnectionDeny(400, "only Engine.IO protocol 3 (EIO=3) is served")
        try:
            identity = self.network.authenticate(params)
        except InvalidToken as e:
            raise ConnectionDeny(401, f"invalid token: {e}") from None
        sid = (params.get("sid") or [""])[-1]
        if sid:
            session = self.network.sessions.get(sid)
            if session is None or session.closed:
                raise ConnectionDeny(400, "Session ID unknown")
            if session.identity.uuid != identity.uuid:
                raise ConnectionDeny(403, "the token is not the session's")
            self._new = False
        else:
            session = self.network.open_session(identity)
            self._new = True
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
            self._log.info("closing session {sid}: {error}", sid=session.sid, error=e)
            session.close()
            self.dropConnection(abort=False)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.session is not None:
            self.session.websocket_closed(self)


class _WebSocketFactory(WebSocketServerFactory):
    protocol = _WebSocket  # type: ignore[assignment]

    def __init__(self, network: Network) -> None:
        super().__init__()
        self.network = network


class EngineIOResource(resource.Resource):
    """C{/socket.io/}: the polling transport, and the door to WebSocket."""

    isLeaf = True
    _log = Logger()

    def __init__(self, network: Network) -> None:
        super().__init__()
        self.network = network
        factory = _WebSocketFactory(network)
        factory.setProtocolOptions(
            maxMessagePayloadSize=network.max_message,
            maxFramePayloadSize=network.max_message,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=5,
        )
        self._websocket = WebSocketResource(factory)

    def render(self, request: server.Request) -> bytes | int:
        params = {k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs]
                  for k, vs in (request.args or {}).items()}
        if (params.get("EIO") or [""])[-1] != "3":
            return _engineio_error(request, 400, UNSUPPORTED_PROTOCOL,
                                   "Unsupported protocol version: this server speaks EIO=3")
        transport = (params.get("transport") or [""])[-1]
        if transport == "websocket":
            if request.method == b"OPTIONS":
                return b""
            return self._websocket.render(request)
        if transport != "polling":
            return _engineio_error(request, 400, UNKNOWN_TRANSPORT, "Transport unknown")
        if request.method == b"OPTIONS":
            return b""
        sid = (params.get("sid") or [""])[-1]
        if not sid:
            return self._handshake(request, params)
        session = self.network.sessions.get(sid)
        if session is None:
            return _engineio_error(request, 400, UNKNOWN_SID, "Session ID unknown")
        if session.websocket is not None:
            # As engine.io: a session on WebSocket no longer polls.
            return _engineio_error(request, 400, BAD_REQUEST, "Bad request")
        if request.method == b"GET":
            session.attach_poll(request)
            return server.NOT_DONE_YET
        if request.method == b"POST":
            return self._post(request, session)
        return _engineio_error(request, 400, BAD_REQUEST, "Bad request")

    def _handshake(self, request: server.Request, params: dict[str, list[str]]) -> bytes | int:
        if request.method != b"GET":
            return _engineio_error(request, 400, BAD_HANDSHAKE_METHOD, "Bad handshake method")
        try:
            identity = self.network.authenticate(params)
        except InvalidToken as e:
            request.setResponseCode(401)
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"code": "auth.invalid", "message": f"invalid token: {e}"}
                              ).encode("utf-8")
        session = self.network.open_session(identity)
        # As engine.io 1.x, which socket.io-client 1.x in browsers needs: an
        # XHR2 client that does not ask b64 at the handshake gets binary polls.
        session.binary = not (params.get("b64") or [""])[-1]
        _answer_payload(request, session.open_packets(["websocket"]), session.binary)
        return server.NOT_DONE_YET

    def _post(self, request: server.Request, session: Session) -> bytes:
        if getattr(request, "body_too_large", False):
            session.close()
            return _engineio_error(request, 413, BAD_REQUEST, "payload too large")
        raw = request.content.read() if request.content is not None else b""
        try:
            packets = eio.decode_payload(raw.decode("utf-8"))
        except (eio.ProtocolError, UnicodeDecodeError) as e:
            self._log.info("closing session {sid}: {error}", sid=session.sid, error=e)
            session.close()
            return _engineio_error(request, 400, BAD_REQUEST, f"Bad request: {e}")
        for packet in packets:
            session.handle(packet)
        request.setHeader(b"content-type", b"text/html")
        return b"ok"
