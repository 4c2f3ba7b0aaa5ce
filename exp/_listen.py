"""
C{exp listen}: every broadcast of a channel, whatever its name, as JSON lines.

The SDK's listeners take the broadcasts of one name; the command line may
want all of a channel's.  This is a small Socket.IO client of its own over
Engine.IO 3 on a WebSocket (PROTOCOL.md A5), with the codecs of
L{exp.protocol}; the token comes from the SDK's L{ExpService}, which keeps
it fresh.  It reconnects with backoff and subscribes again after a loss.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    connectWS,
)
from twisted.internet import task
from twisted.internet.defer import Deferred

from exp.errors import ExpError, NetworkError
from exp.protocol import ChannelId, engineio


def _backoff(attempt: int) -> float:
    """Seconds before attempt C{attempt} of a connection: 0.5, 1, 2, then 4 at most."""
    return float(min(0.5 * 2 ** attempt, 4.0))


class _Refused(ExpError):
    """The server would not subscribe this identity to the channel."""


class _Protocol(WebSocketClientProtocol):
    session: _Session

    def onOpen(self) -> None:
        self.session.protocol = self

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not isBinary:
            self.session.received(self, payload.decode("utf-8", "replace"))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.session.closed(self, reason or "")


class _Session:
    """One WebSocket connection: handshake, pings, subscription, broadcasts."""

    def __init__(self, listening: _Listening, url: str) -> None:
        self.listening = listening
        self.reactor = listening.reactor
        self.done: Deferred[str] = Deferred()
        self.protocol: _Protocol | None = None
        self.pinger: task.LoopingCall | None = None
        self.deadline: Any = None
        factory = WebSocketClientFactory(url)
        factory.setProtocolOptions(openHandshakeTimeout=listening.timeout,
                                   maxMessagePayloadSize=4 * 2**20)
        session = self

        class Protocol(_Protocol):
            def __init__(self) -> None:
                super().__init__()
                self.session = session

        factory.protocol = Protocol
        self.connector = connectWS(factory, timeout=listening.timeout)

    def send(self, packet: str) -> None:
        if self.protocol is not None:
            self.protocol.sendMessage(packet.encode("utf-8"))

    def alive(self) -> None:
        """Heard from the server: it has another interval and timeout."""
        if self.deadline is not None and self.deadline.active():
            self.deadline.reset(self.limit)

    def received(self, protocol: _Protocol, text: str) -> None:
        self.protocol = protocol
        try:
            packet = engineio.Packet.decode(text)
        except engineio.ProtocolError:
            return
        self.alive()
        if packet.type == engineio.OPEN:
            handshake = json.loads(packet.data)
            interval = handshake["pingInterval"] / 1000.0
            self.limit = interval + handshake["pingTimeout"] / 1000.0
            self.pinger = task.LoopingCall(self.send, engineio.Packet(engineio.PING).encode())
            self.pinger.clock = self.reactor
            self.pinger.start(interval, now=False)
            self.deadline = self.reactor.callLater(self.limit, self.drop, "no pong in time")
        elif packet.type == engineio.MESSAGE:
            self.socketio(packet.data)
        elif packet.type == engineio.CLOSE:
            self.drop("the server closed the session")

    def socketio(self, data: str) -> None:
        try:
            packet = engineio.SocketIOPacket.decode(data)
        except engineio.ProtocolError:
            return
        if packet.type == engineio.CONNECT:
            self.send(engineio.event("subscribe", [self.listening.channel_id]))
        elif packet.type == engineio.ERROR:
            self.drop(f"the server refused the session: {packet.data}")
        elif packet.type == engineio.EVENT and isinstance(packet.data, list) and packet.data:
            name, args = packet.data[0], packet.data[1:]
            if name == "subscribed":
                self.listening.subscribed(bool(args) and isinstance(args[0], list)
                                          and self.listening.channel_id in args[0])
            elif name == "broadcast" and args and isinstance(args[0], dict):
                self.listening.broadcast(args[0])

    def drop(self, why: str) -> None:
        if self.protocol is not None:
            self.protocol.dropConnection(abort=True)
        else:
            self.connector.disconnect()
        self.closed(self.protocol, why)

    def closed(self, protocol: Any, reason: str) -> None:
        if self.pinger is not None and self.pinger.running:
            self.pinger.stop()
        if self.deadline is not None and self.deadline.active():
            self.deadline.cancel()
        if not self.done.called:
            self.done.callback(reason)

    def stop(self) -> None:
        self.drop("stopped")


class _Listening:
    def __init__(self, reactor: Any, channel_id: str, name: str | None, out: Any,
                 timeout: float) -> None:
        self.reactor = reactor
        self.channel_id = channel_id
        self.name = name
        self.out = out
        self.timeout = timeout
        self.announced = False
        self.failure: ExpError | None = None
        self.session: _Session | None = None

    def subscribed(self, accepted: bool) -> None:
        if not accepted:
            self.failure = _Refused("the server refused to subscribe to that channel: this "
                                    "identity may not listen on it")
            if self.session is not None:
                self.session.drop("refused")
            return
        if not self.announced:
            self.announced = True
            self.out.note("listening; Ctrl-C to stop")
        else:
            self.out.note("listening again")

    def broadcast(self, body: dict[str, Any]) -> None:
        if body.get("channel") != self.channel_id:
            return
        if self.name is not None and body.get("name") != self.name:
            return
        self.out.line({"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds")
                       .replace("+00:00", "Z"), "name": body.get("name"),
                       "payload": body.get("payload"), "id": body.get("id")})


async def listen(service: Any, channel: str, name: str | None, system: bool, consumer: bool,
                 out: Any, reactor: Any, timeout: float) -> None:
    """
    Print the broadcasts of a channel until the reactor stops (Ctrl-C).

    @raise ExpError: if the credentials are refused, or the channel is not
        this identity's to listen on.
    """
    auth = await _authenticated(service, reactor, timeout, out)
    organization = str(auth["identity"].get("organization", ""))
    listening = _Listening(reactor, ChannelId(organization, channel, system, consumer).encode(),
                           name, out, timeout)
    stopping: list[None] = []

    def stop() -> None:
        stopping.append(None)
        if listening.session is not None:
            listening.session.stop()

    trigger = reactor.addSystemEventTrigger("before", "shutdown", stop)
    attempt = 0
    try:
        while not stopping:
            auth = await _authenticated(service, reactor, timeout, out)
            host = auth["network"]["host"]
            url = ("ws" + host[4:] if host.startswith("http") else host).rstrip("/")
            url += f"/socket.io/?EIO=3&transport=websocket&token={quote(auth['token'])}"
            if not listening.announced:
                out.start_spinner("connecting")
            session = listening.session = _Session(listening, url)
            reason = await session.done
            listening.session = None
            if listening.failure is not None:
                raise listening.failure
            if stopping:
                break
            if listening.announced:
                attempt = 0
            delay = _backoff(attempt)
            attempt += 1
            out.note(f"connection lost ({reason or 'closed'}); connecting again in {delay:g} s")
            await task.deferLater(reactor, delay, lambda: None)
    finally:
        out.stop_spinner()
        reactor.removeSystemEventTrigger(trigger)


async def _authenticated(service: Any, reactor: Any, timeout: float, out: Any) -> Any:
    d = service.get_auth()

    def timed_out(result: Any, seconds: float) -> Any:
        raise NetworkError(f"not logged in within {seconds:g} s")

    d.addTimeout(timeout, reactor, onTimeoutCancel=timed_out)
    return await out.waiting("logging in", d)
