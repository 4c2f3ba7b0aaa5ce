"""
The real-time network of PROTOCOL.md A5: Socket.IO and EXP's channels above
the Engine.IO sessions of L{exp.server._engineio}, served at C{/socket.io/}
in the same twisted.web site as the REST API.

Each Engine.IO session gets a L{Subscriber}, which speaks Socket.IO on it:
it subscribes to channels through the hub and receives their broadcasts.  A
session belongs to the identity whose token opened it: every later request
of the session (a poll, a post, the WebSocket of an upgrade) must carry a
token of that identity, which the L{RealTimeNetwork} checks as the
sessions' L{Gate<exp.server._engineio.Gate>}.

Every session has a budget (L{Limits}): the packets queued for a client
that does not poll, or written to a WebSocket whose client does not read
(the Engine.IO sessions keep to it); its subscriptions (its L{Subscriber}
does); and the sessions of its identity (the L{RealTimeNetwork} does).  A
session that falls behind is closed, and its client connects again.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from exp.protocol import ChannelId, InvalidChannelId, InvalidToken
from exp.protocol import engineio as eio
from exp.server._auth import Identity, channel_allowed
from exp.server._engineio import EngineIO, EngineIOSession, Params, Refused, param
from exp.server._hub import IHub, ISubscriber, Message

#: The defaults of L{Limits}, high enough that a real fleet never meets them:
#: bytes queued for a session,
MAX_SESSION_QUEUE = 4 << 20
#: messages queued for a session,
MAX_SESSION_MESSAGES = 1000
#: channels one session may subscribe,
MAX_SUBSCRIPTIONS = 1000
#: sessions one identity may hold at once in a process.
MAX_SESSIONS_PER_IDENTITY = 20


@attrs.frozen
class Limits:
    """
    The budget of one session (README, the local server's options).

    @ivar queue_bytes: bytes of packets a session may have waiting: queued
        for a client that has not polled, or written to a WebSocket whose
        transport has not drained.  Past it the session is closed.
    @ivar queue_messages: the same, counted in packets.
    @ivar subscriptions: channels one session may listen to; a C{subscribe}
        past it accepts the channels up to it and refuses the others.
    @ivar sessions_per_identity: sessions one identity may hold; its
        oldest is closed when it opens one more.  An unpaired device holds
        one.
    """

    queue_bytes: int = MAX_SESSION_QUEUE
    queue_messages: int = MAX_SESSION_MESSAGES
    subscriptions: int = MAX_SUBSCRIPTIONS
    sessions_per_identity: int = MAX_SESSIONS_PER_IDENTITY


def _owner(identity: Identity) -> tuple[str, str, str]:
    """What a session belongs to: the type, organization and uuid of an identity."""
    return (identity.type, identity.organization, identity.uuid)


def _digest(token: str) -> bytes:
    """What a session keeps of the token that opened it."""
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


class RealTimeNetwork:
    """
    The network sessions of one server: its L{EngineIO} sessions, each with
    its L{Subscriber}, and the rules of who may open and use them.

    @ivar engine: the Engine.IO sessions, served by an
        L{EngineIOResource<exp.server._engineio.EngineIOResource>} of it.
    @ivar sessions: the L{Subscriber} of each open session, by sid.
    """

    _log = Logger()

    def __init__(self, hub: IHub, identify: Callable[[str], Identity],
                 clock: IReactorTime, ping_interval: float = 25.0,
                 ping_timeout: float = 20.0, max_message: int = 1 << 20,
                 limits: Limits = Limits()) -> None:
        #: Where sessions subscribe and broadcasts come from.
        self.hub = hub
        #: The identity of a token (raises L{InvalidToken} for a bad one).
        self.identify = identify
        #: The budgets of every session.
        self.limits = limits
        self.engine = EngineIO(self, clock, ping_interval, ping_timeout, max_message,
                               limits.queue_bytes, limits.queue_messages)
        self.sessions: dict[str, Subscriber] = {}
        #: The open sessions of each identity, oldest first.
        self._owned: dict[tuple[str, str, str], dict[Subscriber, None]] = {}
        #: Told of every session that opens and closes (which devices are online).
        self.presence: Any = None

    def authenticate(self, params: Params) -> Identity:
        """
        The identity of a handshake's C{token}.

        @raise InvalidToken: if it has none or a bad one.
        """
        token = param(params, "token")
        if not token:
            raise InvalidToken("the handshake needs a token parameter")
        identity = self.identify(token)
        if identity.restricted:
            raise InvalidToken("a restricted token cannot join the network")
        return identity

    def owns(self, subscriber: Subscriber, params: Params) -> bool:
        """
        Whether the C{token} of a request names the identity of
        C{subscriber}'s session: it is the token that opened the session
        (which may have expired since), or any valid token of the same
        identity.
        """
        token = param(params, "token")
        if token and hmac.compare_digest(_digest(token), subscriber.token_digest):
            return True
        try:
            identity = self.authenticate(params)
        except InvalidToken:
            return False
        return _owner(identity) == _owner(subscriber.identity)

    # -- the gate of the Engine.IO sessions ---------------------------------------

    def admit(self, params: Params) -> Identity:
        """
        The identity of a handshake or an upgrade: see
        L{Gate.admit<exp.server._engineio.Gate.admit>}.
        """
        try:
            return self.authenticate(params)
        except InvalidToken as e:
            raise Refused(401, "auth.invalid", f"invalid token: {e}") from None

    def opened(self, session: EngineIOSession, owner: Identity, params: Params) -> None:
        """
        A new session of C{owner}: one past the identity's cap closes its
        oldest.  See
        L{Gate.opened<exp.server._engineio.Gate.opened>}.
        """
        key = _owner(owner)
        cap = 1 if owner.is_pairing else self.limits.sessions_per_identity
        while True:
            owned = self._owned.get(key)
            if not owned or len(owned) < cap:
                break
            oldest = next(iter(owned))
            del owned[oldest]
            self._log.info(
                "{type} {uuid} opened more than {cap} sessions; closing its oldest, "
                "session #{number}", type=owner.type, uuid=owner.uuid, cap=cap,
                number=oldest.session.number)
            oldest.close()
        subscriber = Subscriber(self, session, owner, param(params, "token"))
        self.sessions[session.sid] = subscriber
        self._owned.setdefault(key, {})[subscriber] = None
        if self.presence is not None:
            self.presence.opened(owner)

    def check(self, session: EngineIOSession, params: Params,
              owner: Identity | None = None) -> None:
        """
        A poll or post carries a token of the session's identity, and so
        does (as C{owner}) the WebSocket of an upgrade.  See
        L{Gate.check<exp.server._engineio.Gate.check>}.
        """
        subscriber = self.sessions[session.sid]
        if owner is not None:
            if _owner(owner) != _owner(subscriber.identity):
                raise Refused(403, eio.ErrorCode.FORBIDDEN, "the token is not the session's")
        elif not param(params, "token"):
            raise Refused(400, eio.ErrorCode.BAD_REQUEST,
                          "Bad request: the session's token is missing")
        elif not self.owns(subscriber, params):
            raise Refused(403, eio.ErrorCode.FORBIDDEN,
                          "Forbidden: the token is not the session's")

    # -------------------------------------------------------------------------

    def forget(self, subscriber: Subscriber) -> None:
        """C{subscriber}'s session is closed."""
        if self.sessions.pop(subscriber.session.sid, None) is not None and (
                self.presence is not None):
            self.presence.closed(subscriber.identity)
        key = _owner(subscriber.identity)
        owned = self._owned.get(key)
        if owned is not None:
            owned.pop(subscriber, None)
            if not owned:
                del self._owned[key]

    def close_all(self) -> None:
        """Close every session."""
        self.engine.close_all()


@implementer(ISubscriber)
class Subscriber:
    """
    The Socket.IO side of one Engine.IO session: the namespace C{/}, the
    C{subscribe} event, and the broadcasts of the channels it subscribed.

    @ivar session: the Engine.IO session it speaks on.
    @ivar identity: whose session it is.
    @ivar token_digest: the digest of the token that opened the session
        (see L{RealTimeNetwork.owns}).
    @ivar channels: the channels it subscribed.
    """

    __slots__ = ("channels", "deliver", "identity", "network", "session", "token_digest")
    _log = Logger()

    def __init__(self, network: RealTimeNetwork, session: EngineIOSession,
                 identity: Identity, token: str) -> None:
        #: The network that admitted the session.
        self.network = network
        self.session = session
        self.identity = identity
        self.token_digest = _digest(token)
        self.channels: set[str] = set()
        #: What the hub calls with a broadcast of a subscribed channel: the
        #: session sends it, framed once for all its subscribers.  (The
        #: session's own method: nothing is added per session to a fan-out.)
        self.deliver: Callable[[Message], None] = session.send_shared
        session.on_message = self.receive
        session.on_close = self._closed
        # Socket.IO's connect to "/": the client is in the namespace at once.
        self._send(eio.SocketIOPacket(eio.CONNECT))

    def close(self) -> None:
        """End its session."""
        self.session.close()

    def _closed(self) -> None:
        """Its session has ended: unsubscribe."""
        self.network.forget(self)
        self.network.hub.unsubscribe_all(self)

    def _send(self, packet: eio.SocketIOPacket) -> None:
        self.session.send(eio.Packet(eio.MESSAGE, packet.encode()).encode())

    # -- receiving ------------------------------------------------------------

    def receive(self, data: str) -> None:
        """Handle the data of an Engine.IO message: a Socket.IO packet."""
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
            self._log.debug("ignored event {name!r} from session #{number}",
                            name=name, number=self.session.number)
            return
        if not args or not isinstance(args[0], list):
            self._error("subscribe takes an array of channel ids")
            return
        accepted = []
        cap = self.network.limits.subscriptions
        refused = 0
        for channel_id in args[0]:
            if isinstance(channel_id, str) and channel_id in self.channels:
                accepted.append(channel_id)
            elif len(self.channels) >= cap:
                refused += 1
            elif self._may_listen(channel_id):
                self.network.hub.subscribe(channel_id, self)
                self.channels.add(channel_id)
                accepted.append(channel_id)
        if refused:
            self._log.info("session #{number} asked for more than {cap} channels; "
                           "{refused} refused", number=self.session.number, cap=cap,
                           refused=refused)
        self.session.send(eio.event("subscribed", accepted))

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
        self._send(eio.SocketIOPacket(eio.ERROR, message, namespace))
