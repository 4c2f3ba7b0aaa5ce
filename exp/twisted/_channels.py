"""
Channels, listeners and broadcasts (PROTOCOL.md A3 to A5).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError,
    ensureDeferred,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from exp._options import MAX_SECONDS, check_count, check_seconds
from exp.errors import NetworkError, RuntimeError
from exp.protocol import encode_channel
from exp.twisted._http import encode_json
from exp.twisted._session import HasSession, Session, session_of


class Broadcast:
    """
    One broadcast received by a listener.

    @ivar name: the broadcast's name.
    @ivar payload: the broadcast's payload: this listener's own copy.
    @ivar channel: the L{Channel} it came on.
    @ivar id: the id the server gave it (what a response names).
    """

    def __init__(self, session: Session | HasSession, channel: Channel,
                 body: dict[str, Any]) -> None:
        self._session = session_of(session)
        self.channel = channel
        self.id: str | None = body.get("id")
        self.name: str | None = body.get("name")
        self.payload: Any = copy.deepcopy(body.get("payload"))

    def respond(self, payload: Any = None) -> Deferred[None]:
        """Send a response to the broadcaster (C{TypeError} if not JSON)."""
        encode_json(payload)
        return ensureDeferred(self._respond(payload))

    async def _respond(self, payload: Any) -> None:
        await self._session.respond(self.channel.id, self.id, payload)

    def __repr__(self) -> str:
        return f"<Broadcast {self.name!r} on {self.channel.name!r} id={self.id}>"


#: The most broadcasts a listener holds by default: queued for L{Listener.wait},
#: or handed to a callback that has not finished.
MAX_QUEUE = 1000


class Listener:
    """
    Receives the broadcasts named C{name} on a channel: queued for L{wait}
    (dropped after C{max_age} seconds, and the oldest dropped past
    C{max_queue} broadcasts), handed to a callback (a new one dropped while
    C{max_queue} callbacks have not finished), or iterated with
    C{async for}.  Drops are logged, once when they start and once, with
    their count, when the listener has caught up.

    L{Channel.listen} makes listeners; one made directly receives once its
    session subscribes it (L{Session.subscribe}).

    @ivar channel: the L{Channel} listened on.
    @ivar name: the name of the broadcasts received.
    @ivar max_age: seconds a broadcast stays queued for L{wait}.
    @ivar max_queue: the most broadcasts queued, or callbacks not finished.
    @ivar cancelled: whether L{cancel} was called (or the instance stopped).
    """

    _log = Logger()

    def __init__(self, session: Session | HasSession, channel: Channel, name: str,
                 max_age: float, callback: Callable[[Broadcast], Any] | None = None,
                 max_queue: int = MAX_QUEUE) -> None:
        self._session = session_of(session)
        self.channel = channel
        self._channel_id: str | None = None
        self.name = name
        self.max_age = max_age
        self.max_queue = max_queue
        self._callback = callback
        self._running = 0  # callbacks not finished
        self._dropped = 0  # broadcasts dropped since the listener last caught up
        self._queue: deque[tuple[float, Broadcast]] = deque()
        self._waiters: deque[tuple[Deferred[Broadcast | None], IDelayedCall | None]] = deque()
        self.cancelled = False

    @property
    def channel_id(self) -> str:
        """The channel's id on the wire, fixed when first read (once logged in)."""
        if self._channel_id is None:
            self._channel_id = self.channel.id
        return self._channel_id

    def receive(self, body: dict[str, Any]) -> None:
        """Take a broadcast of this listener's channel (ignored if not its name)."""
        if self.cancelled or body.get("name") != self.name:
            return
        if self._callback is not None:
            if self._running >= self.max_queue:
                self._drop("callbacks have not finished; dropping new broadcasts")
                return
            self._running += 1
            d = maybeDeferred(self._callback, Broadcast(self._session, self.channel, body))
            d.addErrback(lambda f: self._log.failure(
                "a listener callback for {name!r} failed", f, name=self.name))
            d.addBoth(self._finished)
            return
        broadcast = Broadcast(self._session, self.channel, body)
        while self._waiters:
            d, timer = self._waiters.popleft()
            if timer is not None and timer.active():
                timer.cancel()
            if not d.called:
                d.callback(broadcast)
                return
        self._queue.append((self._session.clock.seconds(), broadcast))
        self._expire()
        if len(self._queue) > self.max_queue:
            self._queue.popleft()
            self._drop("broadcasts are queued; dropping the oldest")

    def _finished(self, _: object) -> None:
        self._running -= 1
        if not self._running:
            self._caught_up()

    def _drop(self, why: str) -> None:
        self._dropped += 1
        if self._dropped == 1:
            self._log.warn("listener {name!r} on channel {channel!r}: {max_queue} {why}",
                           name=self.name, channel=self.channel.name,
                           max_queue=self.max_queue, why=why)

    def _caught_up(self) -> None:
        if self._dropped:
            self._log.warn("listener {name!r} on channel {channel!r} has caught up after"
                           " dropping {count} broadcasts (max_queue={max_queue})",
                           name=self.name, channel=self.channel.name, count=self._dropped,
                           max_queue=self.max_queue)
            self._dropped = 0

    def _expire(self) -> None:
        oldest = self._session.clock.seconds() - self.max_age
        while self._queue and self._queue[0][0] < oldest:
            self._queue.popleft()
        if not self._queue:
            self._caught_up()

    def wait(self, timeout: float | None = 0) -> Deferred[Broadcast | None]:
        """
        The oldest queued broadcast, or the next one to arrive within
        C{timeout} seconds (C{None} waits for ever); C{None} on timeout.

        @raise exp.RuntimeError: if C{timeout} is not a number of seconds up
            to L{MAX_SECONDS} (NaN, infinity or a string would break the timer).
        """
        if timeout is not None and not (
                isinstance(timeout, (int, float)) and timeout <= MAX_SECONDS):
            raise RuntimeError(f"timeout is a number of seconds up to {MAX_SECONDS:g},"
                               " or None to wait for ever")
        self._expire()
        if self._queue:
            broadcast = self._queue.popleft()[1]
            if not self._queue:
                self._caught_up()
            return succeed(broadcast)
        if self.cancelled or (timeout is not None and timeout <= 0):
            return succeed(None)

        def cancel(d: Deferred[Broadcast | None]) -> None:
            for entry in list(self._waiters):
                if entry[0] is d:
                    self._waiters.remove(entry)
                    if entry[1] is not None and entry[1].active():
                        entry[1].cancel()

        d: Deferred[Broadcast | None] = Deferred(cancel)
        timer = None
        if timeout is not None:
            timer = self._session.clock.callLater(timeout, self._time_out, d)
        self._waiters.append((d, timer))
        return d

    def _time_out(self, d: Deferred[Broadcast | None]) -> None:
        for entry in list(self._waiters):
            if entry[0] is d:
                self._waiters.remove(entry)
        if not d.called:
            d.callback(None)

    def cancel(self) -> None:
        """Receive nothing more; pending waits answer C{None}. Cannot be undone."""
        if self.cancelled:
            return
        self.cancelled = True
        self._queue.clear()
        self._caught_up()
        self._session.unsubscribe(self)
        waiters, self._waiters = self._waiters, deque()
        for d, timer in waiters:
            if timer is not None and timer.active():
                timer.cancel()
            if not d.called:
                d.callback(None)

    def __aiter__(self) -> Listener:
        """The listener itself: C{async for broadcast in listener} waits for each."""
        return self

    async def __anext__(self) -> Broadcast:
        """The next broadcast, waiting for ever; the iteration ends once cancelled."""
        broadcast = await self.wait(None)
        if broadcast is None:
            raise StopAsyncIteration
        return broadcast


class Channel:
    """
    A named channel of the organization; cheap, no I/O until used.

    @ivar name: the channel's name.
    @ivar system: carries server notifications; nobody may broadcast on it.
    @ivar consumer: the only kind of channel consumer apps may use.
    @raise exp.RuntimeError: if the name is not a non-empty string, or the
        session has been stopped.
    """

    def __init__(self, session: Session | HasSession, name: str, system: bool = False,
                 consumer: bool = False) -> None:
        self._session = session_of(session)
        if self._session.stopped:
            raise RuntimeError("this EXP instance has been stopped")
        if not isinstance(name, str) or not name:
            raise RuntimeError("a channel's name must be a non-empty string")
        self.name = name
        self.system = bool(system)
        self.consumer = bool(consumer)

    @property
    def id(self) -> str:
        """The channel's id on the wire (needs the organization: authenticated)."""
        return encode_channel(self._session.organization, self.name, self.system,
                              self.consumer)

    def broadcast(self, name: str, payload: Any = None,
                  timeout: float = 0.1) -> Deferred[list[Any]]:
        """
        Send a broadcast; after C{timeout} seconds, the list of responses.

        @raise TypeError: if C{payload} is not JSON-serializable.
        """
        if not isinstance(name, str) or not name:
            raise RuntimeError("a broadcast's name must be a non-empty string")
        encode_json(payload)
        return ensureDeferred(self._broadcast(name, payload, timeout))

    async def _broadcast(self, name: str, payload: Any, timeout: float) -> list[Any]:
        seconds = check_seconds(timeout)
        await self._session.authenticated()  # the channel's id needs the organization
        return await self._session.broadcast(self.id, name, payload, seconds)

    def fling(self, payload: Any = None, timeout: float = 0.1) -> Deferred[list[Any]]:
        """A broadcast named C{fling}."""
        return self.broadcast("fling", payload, timeout)

    def identify(self, timeout: float = 0.1) -> Deferred[list[Any]]:
        """A broadcast named C{identify}."""
        return self.broadcast("identify", None, timeout)

    def listen(self, name: str, callback: Callable[[Broadcast], Any] | None = None,
               timeout: float = 10, max_age: float = 60,
               max_queue: int = MAX_QUEUE) -> Deferred[Listener]:
        """
        A listener for broadcasts named C{name}, once the server confirms the
        subscription (L{NetworkError} after C{timeout} seconds).

        @param callback: called with each L{Broadcast} (it may return a
            Deferred); without one, broadcasts are queued for
            L{Listener.wait}.
        @param max_age: seconds a broadcast stays queued for L{Listener.wait}.
        @param max_queue: the most broadcasts queued for L{Listener.wait}
            (the oldest is dropped past it), or handed to C{callback} and not
            finished (a new one is dropped past it); drops are logged.
        """
        if not isinstance(name, str) or not name:
            raise RuntimeError("a listener's name must be a non-empty string")
        if callback is not None and not callable(callback):
            raise RuntimeError("callback must be callable")
        return ensureDeferred(self._listen(name, callback, timeout, max_age, max_queue))

    async def _listen(self, name: str, callback: Callable[[Broadcast], Any] | None,
                      timeout: float, max_age: float, max_queue: int) -> Listener:
        check_seconds(timeout)
        check_seconds(max_age, "max_age")
        check_count(max_queue, "max_queue", "broadcasts")
        listener = Listener(self._session, self, name, max_age, callback, max_queue)
        try:
            await self._session.subscribe(listener, timeout)
        except (CancelledError, TimeoutError):
            listener.cancel()
            raise NetworkError(
                f"the network did not confirm listening on {self.name!r}"
                f" within {timeout:g} s"
            ) from None
        except Exception:
            listener.cancel()
            raise
        return listener

    def __repr__(self) -> str:
        return f"<Channel {self.name!r} system={self.system} consumer={self.consumer}>"
