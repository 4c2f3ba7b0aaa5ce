"""
A hub spanning server processes through Redis pub/sub.

Every process of a server subscribes to one Redis channel and publishes
there what its clients broadcast and respond; each delivers the broadcasts
it receives to its own subscribers and collects the responses to its own
broadcasts.  Its own broadcasts it delivers at once, without the round
trip.  One publisher per process sends in order, over one connection, so
the other processes see a process's messages in the order it sent them.
Redis pub/sub keeps nothing: while a process is cut off from Redis, it
misses what the others publish, as a client misses what is broadcast while
it reconnects.

The driver is redis-py's asyncio API, on the loop thread of
L{exp.server._asyncio}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from typing import Any

from twisted.internet.defer import Deferred, fail
from zope.interface import implementer

from exp.server._asyncio import LoopThread, loop_thread
from exp.server._hub import IHub, LocalHub, new_id
from exp.server._storage import Unavailable, dumps

#: Seconds between attempts to subscribe again after Redis went away.
RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0)

#: How many message ids each process remembers, to drop a message that a
#: retried PUBLISH sent twice.
SEEN = 10_000


@implementer(IHub)
class RedisHub(LocalHub):
    """
    L{IHub} for one process of several, joined by the Redis at C{url}.
    C{timeout} bounds a publish and a connection attempt; a subscription
    silent for three times as long is renewed.
    """

    def __init__(self, reactor: Any, url: str, timeout: float = 5.0) -> None:
        super().__init__(reactor)
        self._reactor = reactor
        #: The Redis server's URL.
        self.url = url
        #: The Redis channel of this deployment's messages (named at L{open}).
        self.channel = ""
        self._timeout = timeout
        self._origin = new_id()
        self._seen: OrderedDict[str, None] = OrderedDict()
        # Made in open(): a process that daemonizes forks after building
        # its services, and threads do not survive a fork.
        self._thread: LoopThread | None = None
        # On the loop thread:
        self._client: Any = None
        self._outbox: asyncio.Queue[tuple[str, asyncio.Future[None]]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed: asyncio.Event | None = None
        self._unpublished: set[asyncio.Future[None]] = set()

    def open(self, deployment: str) -> Deferred[None]:
        # Servers sharing a Redis keep to their own channel.
        self.channel = f"exp:{deployment}:network"
        try:
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:
            return fail(Unavailable("the Redis hub needs redis-py: pip install 'txexp[redis]'"))
        self._thread = loop_thread(self._reactor)

        async def connect() -> None:
            # One retry, for a connection that went stale; a message it
            # sends twice is dropped by its receivers (L{_received}).
            self._client = redis.asyncio.from_url(
                self.url, socket_connect_timeout=self._timeout, socket_timeout=self._timeout,
                socket_keepalive=True, retry=Retry(NoBackoff(), 1))
            self._outbox = asyncio.Queue()
            self._subscribed = asyncio.Event()
            self._tasks = [asyncio.ensure_future(self._read()),
                           asyncio.ensure_future(self._publisher())]
            try:
                await asyncio.wait_for(self._subscribed.wait(), self._timeout)
            except asyncio.TimeoutError:
                await self._close()
                raise Unavailable("Redis does not answer") from None

        return self._thread.run(connect())

    def close(self) -> Deferred[None]:
        if self._thread is None:
            return super().close()
        return self._thread.run(self._close())

    async def _close(self) -> None:
        # What was queued before closing (a stopping process's last
        # notifications) is published first, within the timeout.
        unpublished = [done for done in self._unpublished if not done.done()]
        if unpublished and self._tasks:
            await asyncio.wait(unpublished, timeout=self._timeout)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        client, self._client = self._client, None
        # Bounded: closing must not hang on a connection in a bad state.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True),
                                   self._timeout)
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), self._timeout)

    async def _read(self) -> None:
        """Receive what the other processes publish, subscribing again when cut off."""
        failures = 0
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                await self._confirmed(pubsub)
                assert self._subscribed is not None
                self._subscribed.set()
                if failures:
                    self._reactor.callFromThread(self._log.info, "subscribed to Redis again")
                failures = 0
                await self._receive(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not failures:
                    self._reactor.callFromThread(
                        self._log.warn, "lost the Redis subscription: {error}", error=e)
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), self._timeout)

    async def _confirmed(self, pubsub: Any) -> None:
        """Wait until Redis confirms the subscription: from then on nothing is missed."""
        deadline = time.monotonic() + self._timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Redis did not confirm the subscription")
            message = await pubsub.get_message(timeout=left)
            if message is not None and message["type"] == "subscribe":
                return

    async def _receive(self, pubsub: Any) -> None:
        """
        Hand every message to the reactor.  A subscription quiet for
        C{timeout} is pinged; one silent for three times as long is dead
        (a connection can vanish without a FIN).
        """
        heard = time.monotonic()
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=self._timeout)
            now = time.monotonic()
            if message is not None:
                heard, pinged = now, False
                if message["type"] == "message":
                    self._reactor.callFromThread(self._received, message["data"])
            elif now - heard > 3 * self._timeout:
                raise ConnectionError("the Redis subscription went silent")
            elif not pinged:
                await pubsub.ping()
                pinged = True

    async def _publisher(self) -> None:
        """
        Publish the outbox in order, one message or a pipelined batch at a
        time, so that this task's one connection is all it uses.
        """
        assert self._outbox is not None
        while True:
            batch = [await self._outbox.get()]
            while not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            try:
                if len(batch) == 1:
                    await asyncio.wait_for(self._client.publish(self.channel, batch[0][0]),
                                           self._timeout)
                else:
                    async with self._client.pipeline(transaction=False) as pipe:
                        for text, _ in batch:
                            pipe.publish(self.channel, text)
                        await asyncio.wait_for(pipe.execute(), self._timeout)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                error = Unavailable("Redis is unavailable")
                error.__cause__ = e
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    def _received(self, data: bytes) -> None:
        try:
            message = json.loads(data)
            if message["o"] == self._origin or message["m"] in self._seen:
                return
            self._seen[message["m"]] = None
            if len(self._seen) > SEEN:
                self._seen.popitem(last=False)
            if message["k"] == "b":
                self._deliver(message["id"], message["c"], message["n"], message["p"])
            elif message["k"] == "r":
                self._collect(message["id"], message["c"], message["p"])
        except Exception:
            self._log.failure("a message from Redis could not be handled")

    def _publish(self, message: dict[str, Any]) -> Deferred[None] | None:
        message["o"] = self._origin
        message["m"] = new_id()
        text = dumps(message)

        async def publish() -> None:
            if self._outbox is None or self._client is None:
                raise Unavailable("the Redis hub is closed")
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._unpublished.add(done)
            done.add_done_callback(self._unpublished.discard)
            self._outbox.put_nowait((text, done))
            await done

        if self._thread is None:
            return fail(Unavailable("the Redis hub is not open"))
        return self._thread.run(publish())
