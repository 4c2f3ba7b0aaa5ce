"""
A hub spanning server processes through Redis pub/sub.

Every process of a server subscribes to one Redis channel and publishes there what its
clients broadcast and respond; each delivers the broadcasts it receives to
its own subscribers and collects the responses to its own broadcasts.  Its
own broadcasts it delivers at once, without the round trip.  Redis pub/sub
keeps nothing: while a process is cut off from Redis, it misses what the
others publish, as a client misses what is broadcast while it reconnects.

The driver is redis-py's asyncio API, on the loop thread of
L{exp.server._asyncio}.
"""

from __future__ import annotations

import asyncio
import json
import uuid as uuidlib
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from exp.server._asyncio import LoopThread, loop_thread
from exp.server._hub import IHub, LocalHub
from exp.server._storage import Unavailable, dumps

#: Seconds between attempts to subscribe again after Redis went away.
RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0)


@implementer(IHub)
class RedisHub(LocalHub):
    """L{IHub} for one process of several, joined by the Redis at C{url}."""

    def __init__(self, reactor: Any, url: str, timeout: float = 5.0) -> None:
        super().__init__(reactor)
        self._loop_thread: LoopThread = loop_thread(reactor)
        self.url = url
        self.channel = ""
        self._timeout = timeout
        self._origin = uuidlib.uuid4().hex
        self._client: Any = None
        self._reader: asyncio.Task[None] | None = None
        #: Fires each time the subscription is (again) in place.
        self._subscribed: asyncio.Event | None = None

    def open(self, deployment: str) -> Deferred[None]:
        # Servers sharing a Redis keep to their own channel.
        self.channel = f"exp:{deployment}:network"
        try:
            import redis.asyncio
        except ImportError:
            raise Unavailable("the Redis hub needs redis-py: pip install 'exp[redis]'") from None

        async def connect() -> None:
            self._client = redis.asyncio.from_url(
                self.url, socket_connect_timeout=self._timeout, socket_timeout=self._timeout)
            self._subscribed = asyncio.Event()
            self._reader = asyncio.ensure_future(self._read())
            try:
                await asyncio.wait_for(self._subscribed.wait(), self._timeout)
            except asyncio.TimeoutError:
                await self._close()
                raise Unavailable("Redis does not answer") from None

        return self._loop_thread.run(connect())

    def close(self) -> Deferred[None]:
        return self._loop_thread.run(self._close())

    async def _close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _read(self) -> None:
        """Receive what the other processes publish, subscribing again when cut off."""
        failures = 0
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                assert self._subscribed is not None
                self._subscribed.set()
                if failures:
                    self._loop_thread.call_in_reactor(self._log.info, "subscribed to Redis again")
                failures = 0
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message["type"] == "message":
                        self._loop_thread.call_in_reactor(self._received, message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not failures:
                    self._loop_thread.call_in_reactor(
                        self._log.warn, "lost the Redis subscription: {error}", error=e)
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                await asyncio.sleep(delay)
            finally:
                await asyncio.shield(pubsub.aclose())

    def _received(self, data: bytes) -> None:
        try:
            message = json.loads(data)
            if message["o"] == self._origin:
                return
            if message["k"] == "b":
                self._deliver(message["id"], message["c"], message["n"], message["p"])
            elif message["k"] == "r":
                self._collect(message["id"], message["c"], message["p"])
        except Exception:
            self._log.failure("a message from Redis could not be handled")

    def _publish(self, message: dict[str, Any]) -> Deferred[None] | None:
        message["o"] = self._origin
        text = dumps(message)

        async def publish() -> None:
            if self._client is None:
                raise Unavailable("the Redis hub is closed")
            try:
                await self._client.publish(self.channel, text)
            except Exception as e:
                raise Unavailable("Redis is unavailable") from e

        return self._loop_thread.run(publish())
