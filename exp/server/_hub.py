"""
The hub: fan-out of broadcasts to the subscribers of a channel and
collection of the responses to a broadcast.

L{IHub} is what the REST and network code use; L{LocalHub} serves the
subscribers of one process.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from exp.protocol import compact_json
from exp.protocol import engineio as eio

#: What one broadcast collects at most by default: responses, and their
#: bytes (as JSON).  Past either, further responses are dropped.
MAX_RESPONSES = 1000
#: See L{MAX_RESPONSES}.
MAX_RESPONSE_BYTES = 8 << 20


def new_id() -> str:
    """
    A new id of a broadcast or a hub message: 128 random bits in hex (as
    a UUID's hex, at a quarter of its cost).
    """
    return secrets.token_hex(16)


def json_size(value: Any) -> int:
    """The bytes of C{value} as compact JSON."""
    return eio.utf8_size(compact_json(value))


class Message:
    """
    One broadcast as delivered: C{body} is C{{"id", "channel", "name",
    "payload"}}; its Engine.IO frame is encoded once for all subscribers.
    """

    __slots__ = ("_frame", "_size", "body")

    def __init__(self, body: dict[str, Any]) -> None:
        #: C{{"id", "channel", "name", "payload"}}.
        self.body = body
        self._frame: str | None = None
        self._size = -1

    def frame(self) -> str:
        """The Engine.IO text of the Socket.IO C{broadcast} event."""
        if self._frame is None:
            self._frame = eio.event("broadcast", self.body)
        return self._frame

    def size(self) -> int:
        """The bytes of L{frame} in UTF-8."""
        if self._size < 0:
            self._size = eio.utf8_size(self.frame())
        return self._size


class ISubscriber(Interface):
    """Something that receives the broadcasts of the channels it subscribed."""

    def deliver(message: Message) -> None:
        """Take one broadcast.  Must not raise and must not block."""


class IHub(Interface):
    """Routes broadcasts between subscribers and collects responses."""

    def open(deployment: str) -> Deferred[None]:
        """
        Make the hub ready (connect what it spans).  C{deployment} is the
        same for the processes of one server and differs between servers.
        """

    def close() -> Deferred[None]:
        """Stop routing; no call may follow."""

    def subscribe(channel: str, subscriber: ISubscriber) -> None:
        """Deliver the broadcasts of C{channel} to C{subscriber}."""

    def unsubscribe_all(subscriber: ISubscriber) -> None:
        """Deliver nothing more to C{subscriber}."""

    def broadcast(channel: str, name: str, payload: Any, timeout: float,
                  max_responses: int = MAX_RESPONSES,
                  max_bytes: int = MAX_RESPONSE_BYTES) -> Deferred[list[Any]]:
        """
        Deliver a message to every subscriber of C{channel} and collect the
        responses for C{timeout} seconds: at most C{max_responses} of them,
        of at most C{max_bytes} together (as JSON); the others are dropped.
        Cancelling the result stops the collection.
        """

    def notify(channel: str, name: str, payload: Any) -> None:
        """Deliver a message for which no response is awaited."""

    def respond(broadcast_id: str, channel: str, payload: Any) -> bool:
        """
        Add a response to the broadcast C{broadcast_id} on C{channel};
        whether a broadcast of this process took it (or dropped it past its
        caps).  A hub spanning processes passes it on to the others.
        """


class _Collection:
    """The responses one broadcast is collecting, within its caps."""

    __slots__ = ("channel", "dropped", "max_bytes", "max_responses", "responses", "size")

    def __init__(self, channel: str, max_responses: int, max_bytes: int) -> None:
        self.channel = channel
        self.max_responses = max_responses
        self.max_bytes = max_bytes
        self.responses: list[Any] = []
        self.size = 0
        self.dropped = 0

    def add(self, payload: Any) -> None:
        """Keep C{payload}, unless it would take the collection past a cap."""
        if len(self.responses) >= self.max_responses:
            self.dropped += 1
            return
        size = json_size(payload)
        if self.size + size > self.max_bytes:
            self.dropped += 1
            return
        self.size += size
        self.responses.append(payload)


@implementer(IHub)
class LocalHub:
    """L{IHub} within one process."""

    _log = Logger()

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._subscribers: defaultdict[str, set[ISubscriber]] = defaultdict(set)
        self._channels_of: defaultdict[ISubscriber, set[str]] = defaultdict(set)
        self._collecting: dict[str, _Collection] = {}

    def open(self, deployment: str) -> Deferred[None]:
        return succeed(None)

    def close(self) -> Deferred[None]:
        return succeed(None)

    def _publish(self, message: dict[str, Any]) -> Deferred[None] | None:
        """
        Pass a message (C{k}: C{b} broadcast, C{r} response) on to the
        other processes; a hub within one process has none.
        """
        return None

    def subscribe(self, channel: str, subscriber: ISubscriber) -> None:
        self._subscribers[channel].add(subscriber)
        self._channels_of[subscriber].add(channel)

    def unsubscribe_all(self, subscriber: ISubscriber) -> None:
        for channel in self._channels_of.pop(subscriber, ()):
            subscribers = self._subscribers.get(channel)
            if subscribers is not None:
                subscribers.discard(subscriber)
                if not subscribers:
                    del self._subscribers[channel]

    def subscriber_count(self, channel: str) -> int:
        """How many subscribers C{channel} has."""
        return len(self._subscribers.get(channel, ()))

    def _deliver(self, broadcast_id: str, channel: str, name: str, payload: Any) -> None:
        message = Message(
            {"id": broadcast_id, "channel": channel, "name": name, "payload": payload}
        )
        for subscriber in list(self._subscribers.get(channel, ())):
            try:
                subscriber.deliver(message)
            except Exception:
                self._log.failure("subscriber {subscriber!r} failed", subscriber=subscriber)

    def _send(self, broadcast_id: str, channel: str, name: str,
              payload: Any) -> Deferred[None] | None:
        """
        Publish a broadcast to the other processes, then deliver it here:
        they deliver while this process does.
        """
        published = self._publish(
            {"k": "b", "id": broadcast_id, "c": channel, "n": name, "p": payload})
        self._deliver(broadcast_id, channel, name, payload)
        return published

    def notify(self, channel: str, name: str, payload: Any) -> None:
        published = self._send(new_id(), channel, name, payload)
        if published is not None:
            published.addErrback(self._publish_failed, "notification")

    def broadcast(self, channel: str, name: str, payload: Any, timeout: float,
                  max_responses: int = MAX_RESPONSES,
                  max_bytes: int = MAX_RESPONSE_BYTES) -> Deferred[list[Any]]:
        collection = _Collection(channel, max_responses, max_bytes)
        responses = collection.responses

        def finish() -> None:
            self._collecting.pop(broadcast_id, None)
            if collection.dropped:
                self._log.warn(
                    "a broadcast dropped {dropped} responses past its caps of {count} "
                    "responses and {size} bytes", dropped=collection.dropped,
                    count=max_responses, size=max_bytes)
            if published is None or published.called:
                if not d.called:
                    d.callback(responses)
            else:
                # Answer only once the other processes have it (or fail).
                published.addCallback(lambda _: None if d.called else d.callback(responses))

        def cancel(_: Deferred[list[Any]]) -> None:
            self._collecting.pop(broadcast_id, None)
            if call is not None and call.active():
                call.cancel()

        def unpublished(failure: Failure) -> None:
            if not d.called:
                cancel(d)
                d.errback(failure)

        d: Deferred[list[Any]] = Deferred(cancel)
        broadcast_id = new_id()
        self._collecting[broadcast_id] = collection
        call: IDelayedCall | None = None
        published = self._send(broadcast_id, channel, name, payload)
        if published is not None:
            published.addErrback(unpublished)
        if timeout > 0:
            call = self._clock.callLater(timeout, finish)
        else:
            # Nothing to wait for: what was delivered is all it collects.
            finish()
        return d

    def respond(self, broadcast_id: str, channel: str, payload: Any) -> bool:
        if self._collect(broadcast_id, channel, payload):
            return True
        published = self._publish({"k": "r", "id": broadcast_id, "c": channel, "p": payload})
        if published is not None:
            published.addErrback(self._publish_failed, "response")
        return False

    def _collect(self, broadcast_id: str, channel: str, payload: Any) -> bool:
        collection = self._collecting.get(broadcast_id)
        if collection is None or collection.channel != channel:
            return False
        collection.add(payload)
        return True

    def _publish_failed(self, failure: Failure, what: str) -> None:
        self._log.warn("a {what} did not reach the other processes: {error}",
                       what=what, error=failure.getErrorMessage())
