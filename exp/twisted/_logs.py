"""
Shipping a program's log to EXP (C{POST /api/logs}, PROTOCOL.md A6), in
batches, without ever blocking or failing the program: when the server
cannot take them, entries wait in a bounded queue and the oldest are
dropped first.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, LogLevel, formatEvent
from zope.interface import implementer

from exp.twisted._session import HasSession, Session, session_of

_PRIORITY = {level: i for i, level in enumerate(LogLevel.iterconstants())}

#: What shipping logs itself logs (connection pool chatter): never shipped.
_OWN_NOISE = ("twisted.web.client",)


@implementer(ILogObserver)
class LogShipper(Service):
    """
    A C{twisted.logger} observer (add it with
    C{globalLogPublisher.addObserver}) that sends events of C{level} and
    above to EXP every C{interval} seconds, C{batch_size} at a time, over
    its session (L{Session.post_logs}), once logged in.  Made by
    L{ExpService.log_observer}, it is a child service of that
    L{ExpService}: it starts and stops with it, and sends what is left when
    it stops.

    @ivar level: the lowest level shipped.
    @ivar interval: seconds between batches.
    @ivar batch_size: the most entries sent at a time.
    @ivar dropped: how many entries were dropped, the oldest first, for want
        of room in the queue (C{max_queued} entries).
    """

    def __init__(self, session: Session | HasSession, level: LogLevel = LogLevel.info,
                 interval: float = 5.0, batch_size: int = 100,
                 max_queued: int = 1000) -> None:
        self._session = session_of(session)
        self.level = level
        self.interval = interval
        self.batch_size = batch_size
        self._queue: deque[dict[str, Any]] = deque(maxlen=max_queued)
        self._sending = False
        self.dropped = 0
        self._loop = LoopingCall(self.flush)
        self._loop.clock = self._session.clock

    def __call__(self, event: dict[str, Any]) -> None:
        """Queue a C{twisted.logger} event of C{level} or above."""
        level = event.get("log_level", LogLevel.info)
        if _PRIORITY.get(level, -1) < _PRIORITY[self.level] or str(
                event.get("log_namespace", "")).startswith(_OWN_NOISE):
            return
        try:
            message = formatEvent(event)
        except Exception:
            message = repr(event.get("log_format"))
        self.add(level.name, message, float(event.get("log_time") or self._session.clock.seconds()),
                 namespace=event.get("log_namespace"))

    def add(self, level: str, message: str, when: float, **extra: Any) -> None:
        """Queue one entry (the stdlib logging handler of the blocking face uses this)."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        entry = {"level": level, "message": message, "time": int(when * 1000)}
        entry.update((k, v) for k, v in extra.items() if v is not None)
        self._queue.append(entry)

    @property
    def queued(self) -> int:
        """How many entries wait to be sent."""
        return len(self._queue)

    def startService(self) -> None:
        """Send a batch every C{interval} seconds from now on."""
        super().startService()
        self._loop.start(self.interval, now=False)

    def stopService(self) -> Any:
        """Stop the batches; send one more, of what is left (a Deferred)."""
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        return self.flush()

    def flush(self) -> Any:
        """Send up to C{batch_size} queued entries now (a Deferred, never failing)."""
        if self._sending or not self._queue or self._session.auth is None:
            return None
        batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
        self._sending = True

        def failed(_: Any) -> None:
            # Put them back for the next try, as far as there is room.
            for entry in reversed(batch):
                if len(self._queue) == self._queue.maxlen:
                    self.dropped += 1
                    break
                self._queue.appendleft(entry)

        def done(_: Any) -> None:
            self._sending = False

        d = self._session.post_logs(batch)
        d.addErrback(failed)
        d.addBoth(done)
        return d
