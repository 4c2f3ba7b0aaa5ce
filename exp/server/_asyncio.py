"""
The engines' maintained Python drivers (psycopg 3, redis-py) speak asyncio.
They run on one asyncio event loop in a thread of its own, beside whatever
reactor serves the network: Twisted's asyncio reactor would host them too,
but measured, it doubles the CPU cost of a broadcast's fan-out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from twisted.internet.defer import Deferred

#: What a coroutine gives.
T = TypeVar("T")


class LoopThread:
    """
    An asyncio event loop running in a daemon thread; L{run} gives a
    coroutine's outcome to the reactor as a Deferred.  Stopped when the
    reactor shuts down.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        #: The asyncio loop, run by the thread.
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="exp-asyncio",
                                        daemon=True)
        self._thread.start()
        reactor.addSystemEventTrigger("after", "shutdown", self.stop)

    def run(self, coroutine: Coroutine[Any, Any, T], cancellable: bool = True) -> Deferred[T]:
        """
        Run C{coroutine} on the loop.  Cancelling the result cancels it, or
        when not C{cancellable} only stops waiting for it (a write then
        still completes, as it would on SQLite).
        """
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)

        def cancel(_: Deferred[T]) -> None:
            if cancellable:
                future.cancel()

        d: Deferred[T] = Deferred(cancel)

        def done(_: Future[T]) -> None:
            self._reactor.callFromThread(_settle, d, future)

        future.add_done_callback(done)
        return d

    @property
    def alive(self) -> bool:
        """Whether the loop's thread runs."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop the loop and wait (10 s at most) for its thread to end."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


def _settle(d: Deferred[T], future: Future[T]) -> None:
    if d.called:  # cancelled
        return
    if future.cancelled():
        d.cancel()
    elif (error := future.exception()) is not None:
        d.errback(error)
    else:
        d.callback(future.result())


_threads: dict[int, LoopThread] = {}


def loop_thread(reactor: Any) -> LoopThread:
    """The loop thread of C{reactor}'s process (started on first use)."""
    thread = _threads.get(id(reactor))
    if thread is None or not thread.alive:
        thread = _threads[id(reactor)] = LoopThread(reactor)
    return thread
