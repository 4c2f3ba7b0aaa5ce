"""Events of an SDK instance, with handles that cancel a subscription."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from exp.errors import RuntimeError

EVENTS = ("online", "offline", "update", "error")


class Handle:
    """What L{Events.on} returns: C{cancel()} stops the callbacks."""

    def __init__(self, events: Events, name: str, callback: Callable[..., Any]) -> None:
        self._events = events
        self._name = name
        self._callback = callback

    def cancel(self) -> None:
        """Call the callback no more (calling twice is harmless)."""
        callbacks = self._events._callbacks[self._name]
        if self._callback in callbacks:
            callbacks.remove(self._callback)


class Events:
    """
    C{online} (the network is up), C{offline} (it went down), C{update} (a
    new auth payload, as argument) and C{error} (a fatal error, as argument).
    """

    _log = Logger()

    def __init__(self) -> None:
        self._callbacks: dict[str, list[Callable[..., Any]]] = {name: [] for name in EVENTS}

    def on(self, name: str, callback: Callable[..., Any]) -> Handle:
        """
        Call C{callback} on every event C{name}.

        @raise exp.RuntimeError: if there is no such event.
        """
        if not isinstance(name, str) or name not in self._callbacks:
            raise RuntimeError(f"no event {name!r:.40}; the events are {', '.join(EVENTS)}")
        if not callable(callback):
            raise RuntimeError("the callback of an event must be callable")
        self._callbacks[name].append(callback)
        return Handle(self, name, callback)

    def emit(self, name: str, *args: Any) -> None:
        for callback in list(self._callbacks[name]):
            try:
                callback(*args)
            except Exception:
                self._log.failure("a callback of the {name} event failed", name=name)
