"""
The engines' maintained Python drivers (psycopg 3, redis-py) speak asyncio:
they run on Twisted's asyncio reactor, whose event loop is theirs too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred

T = TypeVar("T")


class WrongReactor(RuntimeError):
    """An asyncio driver was asked for without Twisted's asyncio reactor."""


def require_asyncio_reactor(reactor: Any, what: str) -> None:
    """
    @raise WrongReactor: unless C{reactor} is Twisted's asyncio reactor.
    """
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if not isinstance(reactor, AsyncioSelectorReactor):
        raise WrongReactor(
            f"{what} needs Twisted's asyncio reactor: run twistd --reactor=asyncio, "
            "or install twisted.internet.asyncioreactor before the reactor is imported")


def deferred(coroutine: Coroutine[Any, Any, T]) -> Deferred[T]:
    """Run an asyncio coroutine on the reactor's loop; its result as a Deferred."""
    return Deferred.fromFuture(asyncio.ensure_future(coroutine))
