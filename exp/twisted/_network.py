"""
The real-time network (PROTOCOL.md A5) from the client's side: an Autobahn
WebSocket speaking Engine.IO 3 / Socket.IO, kept connected by a
C{ClientService} with backoff, resubscribing after every connection.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from automat import NoTransition
from twisted.application.internet import ClientService
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from exp.errors import NetworkError
from exp.protocol import engineio as eio
from exp.twisted._events import Events
from exp.twisted._session import Subscriber
from exp.twisted._wrapping import WrappingEndpoint

#: The largest message (and frame) taken from the network by default, in
#: bytes (4 MiB): a broadcast as large as the server's largest request body
#: (1 MiB by default) with room to spare.
MAX_MESSAGE_SIZE = 4 << 20

#: The largest answer to the WebSocket opening handshake, in bytes.
MAX_HANDSHAKE_SIZE = 64 << 10


class Heartbeat:
    """
    The client's side of Engine.IO 3 liveness: a ping every C{interval}; a
    connection that answers no pong within C{timeout} is dead.
    """

    def __init__(self, clock: IReactorTime, interval: float, timeout: float,
                 send_ping: Callable[[], None], dead: Callable[[], None]) -> None:
        self._clock = clock
        self._interval = interval
        self._timeout = timeout
        self._send_ping = send_ping
        self._dead = dead
        self._next: IDelayedCall | None = self._clock.callLater(interval, self._ping)
        self._deadline: IDelayedCall | None = None

    def _ping(self) -> None:
        self._next = None
        self._send_ping()
        self._deadline = self._clock.callLater(self._timeout, self._expired)

    def _expired(self) -> None:
        self._deadline = None
        self.stop()
        self._dead()

    def pong(self) -> None:
        """The server answered: ping again one interval after the last ping."""
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
            self._deadline = None
            self._next = self._clock.callLater(self._interval, self._ping)

    def stop(self) -> None:
        for call in (self._next, self._deadline):
            if call is not None and call.active():
                call.cancel()
        self._next = self._deadline = None


class _Socket(WebSocketClientProtocol):
    """One WebSocket connection to the network."""

    _log = Logger()
    factory: _SocketFactory

    def __init__(self) -> None:
        super().__init__()
        # cancelled by ClientService when it stops during the handshake
        self.ready: Deferred[_Socket] = Deferred(lambda d: self.dropConnection(abort=True))
        #: fires once the connection is closed
        self.gone: Deferred[None] = Deferred()
        self._heartbeat: Heartbeat | None = None

    def send_text(self, text: str) -> None:
        """Send one Engine.IO packet; nothing once the socket is closing."""
        if self.state == self.STATE_OPEN:
            self.sendMessage(text.encode("utf-8"))

    def emit(self, name: str, data: Any) -> None:
        self.send_text(eio.event(name, data))

    def dataReceived(self, data: bytes) -> None:
        # Autobahn buffers the handshake's answer until a blank line, however long
        if self.state == self.STATE_CONNECTING and (
                len(self.data) + len(data) > MAX_HANDSHAKE_SIZE):
            self._log.warn("the network's handshake answer is over {limit} bytes; dropping"
                           " the connection", limit=MAX_HANDSHAKE_SIZE)
            self.dropConnection(abort=True)
            return
        super().dataReceived(data)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            packet = eio.Packet.decode(payload.decode("utf-8"))
            self._receive(packet)
        except (eio.ProtocolError, UnicodeDecodeError, ValueError) as e:
            self._log.warn("dropping a malformed frame from the server: {error}", error=e)

    def _receive(self, packet: eio.Packet) -> None:
        if packet.type == eio.OPEN:
            handshake = json.loads(packet.data)
            interval = float(handshake.get("pingInterval", 25000)) / 1000.0
            timeout = float(handshake.get("pingTimeout", 20000)) / 1000.0
            self._heartbeat = Heartbeat(
                self.factory.network.clock, interval, timeout,
                lambda: self.send_text(eio.Packet(eio.PING).encode()),
                self._dead,
            )
        elif packet.type == eio.PONG:
            if self._heartbeat is not None:
                self._heartbeat.pong()
        elif packet.type == eio.MESSAGE:
            self._receive_socketio(eio.SocketIOPacket.decode(packet.data))
        elif packet.type == eio.CLOSE:
            self.dropConnection(abort=False)

    def _receive_socketio(self, packet: eio.SocketIOPacket) -> None:
        if packet.type == eio.CONNECT:
            if not self.ready.called:
                self.ready.callback(self)
        elif packet.type == eio.EVENT:
            if isinstance(packet.data, list) and packet.data and isinstance(packet.data[0], str):
                self.factory.network.received(self, packet.data[0], packet.data[1:])
        elif packet.type == eio.ERROR:
            self._log.warn("the network reported an error: {error}", error=packet.data)
            if not self.ready.called:
                self.ready.errback(NetworkError(f"the network refused: {packet.data}"))
                self.dropConnection(abort=False)
        elif packet.type == eio.DISCONNECT:
            self.dropConnection(abort=False)

    def _dead(self) -> None:
        self._log.info("no pong from the network in time; reconnecting")
        self.dropConnection(abort=True)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if not self.ready.called:
            if reason and "[401]" in reason:
                self.factory.network.token_refused()
            self.ready.errback(NetworkError(f"could not join the network: {reason}"))
        self.factory.network.closed(self)
        if not self.gone.called:
            self.gone.callback(None)


class _SocketFactory(WebSocketClientFactory):
    protocol = _Socket  # type: ignore[assignment]

    def __init__(self, network: Network, url: str, reactor: Any) -> None:
        super().__init__(url, reactor=reactor)
        self.network = network
        # a larger message fails the connection (1009), which is then made again
        self.setProtocolOptions(openHandshakeTimeout=10, closeHandshakeTimeout=2,
                                maxFramePayloadSize=network.max_message_size,
                                maxMessagePayloadSize=network.max_message_size)


def socket_url(network_host: str, token: str) -> str:
    """The WebSocket URL of the network for C{token}."""
    parts = urlsplit(network_host)
    scheme = "wss" if parts.scheme == "https" else "ws"
    query = urlencode({"EIO": "3", "transport": "websocket", "token": token})
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/socket.io/?{query}"


@implementer(IProtocol)
class _LossGuard:
    """
    The protocol ClientService made for one connection, minus one error.

    ClientService's state machine has no transition for losing a connection
    that C{prepareConnection} never accepted (refused by the network, a failed
    handshake, or cancelled by C{stopService}): it raises C{NoTransition} into
    the reactor as an unhandled error.  By then the service has already
    counted the attempt as failed and scheduled the next one (or stopped), so
    that error is dropped here.
    """

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def connectionLost(self, reason: Failure) -> None:
        try:
            self.wrapped.connectionLost(reason)
        except NoTransition:
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


def _reconnect_policy(backoff: Callable[[int], float]) -> Callable[[int], float]:
    """Reconnect at once after losing a connection, then back off."""
    return lambda attempt: 0.0 if attempt <= 1 else backoff(attempt - 1)


class Network(Service):
    """
    The connection to the network and the subscriptions of the listeners.

    Every listener's channel is subscribed once per connection; a listener
    is established once C{subscribed} names its channel.
    """

    _log = Logger()

    def __init__(self, reactor: Any, events: Events, retry_policy: Callable[[int], float],
                 token_refused: Callable[[], None],
                 max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self.reactor = reactor
        self.max_message_size = max_message_size
        self.clock: IReactorTime = reactor
        self._events = events
        self._retry_policy = retry_policy
        self.token_refused = token_refused
        self._factory: _SocketFactory | None = None
        self._client: ClientService | None = None
        self.socket: _Socket | None = None
        self._listeners: dict[str, list[Subscriber]] = {}
        self._channel_of: dict[Subscriber, str] = {}  # each listener's, as it was added
        self._confirmed: set[str] = set()
        self._requests: deque[list[str]] = deque()
        self._waiting: dict[str, list[Deferred[None]]] = {}
        self._connected_waiters: list[Deferred[None]] = []
        self._open: dict[Deferred[None], _Socket] = {}  # each socket still open, by its gone
        self._identity: Any = None  # of the auth payload the factory's URL is for

    @property
    def is_connected(self) -> bool:
        return self.socket is not None

    def connect(self, auth: dict[str, Any]) -> None:
        """
        Join the network with C{auth}.  A refreshed token of the same identity
        is kept for the next connection (the session stays: rejoining would
        lose the broadcasts sent meanwhile); another identity rejoins at once.
        """
        url = socket_url(auth["network"]["host"], auth["token"])
        if self._factory is not None:
            if self._factory.url != url:
                self._factory.setSessionParameters(url=url)
                if self.socket is not None and auth["identity"] != self._identity:
                    self.socket.sendClose()
            self._identity = auth["identity"]
            return
        if not self.running:
            return
        self._factory = _SocketFactory(self, url, self.reactor)
        self._identity = auth["identity"]
        parts = urlsplit(auth["network"]["host"])
        host = parts.hostname or "localhost"
        endpoint: Any = HostnameEndpoint(
            self.reactor, host, parts.port or (443 if parts.scheme == "https" else 80)
        )
        if parts.scheme == "https":
            from twisted.internet.ssl import optionsForClientTLS

            endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
        self._client = ClientService(
            WrappingEndpoint(endpoint, _LossGuard), self._factory,
            retryPolicy=_reconnect_policy(self._retry_policy), clock=self.clock,
            prepareConnection=self._prepare,
        )
        self._client.startService()

    def _prepare(self, socket: Any) -> Deferred[None]:
        gone: Deferred[None] = socket.gone
        self._open[gone] = socket
        gone.addCallback(lambda _: self._open.pop(gone, None))
        return socket.ready.addCallback(self._opened)

    def _opened(self, socket: _Socket) -> None:
        self.socket = socket
        self._confirmed.clear()
        self._requests.clear()
        channels = sorted(set(self._listeners) | set(self._waiting))
        if channels:
            self._subscribe(channels)
        # "online" first: code resumed by whenConnected must not see this connection's event
        self._events.emit("online")
        waiters, self._connected_waiters = self._connected_waiters, []
        for d in waiters:
            d.callback(None)

    def closed(self, socket: _Socket) -> None:
        if socket is self.socket:
            self.socket = None
            self._confirmed.clear()
            self._requests.clear()
            self._events.emit("offline")

    def when_connected(self) -> Deferred[None]:
        if self.socket is not None:
            return succeed(None)
        d: Deferred[None] = Deferred(lambda d: self._connected_waiters.remove(d))
        self._connected_waiters.append(d)
        return d

    # -- subscriptions ---------------------------------------------------------

    def _subscribe(self, channels: list[str]) -> None:
        assert self.socket is not None
        self._requests.append(channels)
        self.socket.emit("subscribe", channels)

    def add_listener(self, listener: Subscriber) -> Deferred[None]:
        """Register C{listener}; the result fires once its channel is subscribed."""
        channel = listener.channel_id
        self._listeners.setdefault(channel, []).append(listener)
        self._channel_of[listener] = channel
        if channel in self._confirmed:
            return succeed(None)
        in_flight = channel in self._waiting

        def cancel(d: Deferred[None]) -> None:
            waiting = self._waiting.get(channel, [])
            if d in waiting:
                waiting.remove(d)
            if not waiting:
                self._waiting.pop(channel, None)

        d: Deferred[None] = Deferred(cancel)
        self._waiting.setdefault(channel, []).append(d)
        if self.socket is not None and not in_flight:
            self._subscribe([channel])
        return d

    def remove_listener(self, listener: Subscriber) -> None:
        """Unregister C{listener} (nothing if it was not registered)."""
        channel = self._channel_of.pop(listener, None)
        if channel is None:
            return
        listeners = self._listeners.get(channel, [])
        if listener in listeners:
            listeners.remove(listener)
        if not listeners:
            self._listeners.pop(channel, None)

    def received(self, socket: _Socket, name: str, args: list[Any]) -> None:
        if socket is not self.socket:
            return
        if name == "subscribed":
            self._subscribed(args[0] if args and isinstance(args[0], list) else [])
        elif name == "broadcast" and args and isinstance(args[0], dict):
            body = args[0]
            for listener in list(self._listeners.get(str(body.get("channel")), ())):
                listener.receive(body)

    def _subscribed(self, accepted: list[Any]) -> None:
        asked = self._requests.popleft() if self._requests else []
        for channel in accepted:
            if isinstance(channel, str):
                self._confirmed.add(channel)
                for d in self._waiting.pop(channel, []):
                    d.callback(None)
        for channel in asked:
            if channel not in self._confirmed:
                for d in self._waiting.pop(channel, []):
                    d.errback(NetworkError(
                        "the network refused to subscribe to this channel (another"
                        " organization's, or not allowed for this identity)"
                    ))

    # -- stopping ----------------------------------------------------------------

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        for listeners in list(self._listeners.values()):
            for listener in list(listeners):
                listener.cancel()
        error = NetworkError("this EXP instance has been stopped")
        for waiting in list(self._waiting.values()):
            for d in list(waiting):
                d.errback(error)
        self._waiting.clear()
        for d in self._connected_waiters:
            d.errback(error)
        self._connected_waiters = []
        if self._client is not None:
            # also wait for a socket dropped in the middle of its handshake
            stopped = self._client.stopService()
            # ClientService forgets a connection whose preparation completes while
            # it stops (stopService called back from whenConnected or "online")
            for socket in list(self._open.values()):
                if socket.transport is not None:
                    socket.transport.loseConnection()
            return gatherResults([stopped, *self._open]).addCallback(lambda _: None)
        return None
