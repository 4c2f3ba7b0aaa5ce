"""
The module-level calls of C{exp} that are not those of a resource (which
are in L{exp.api}): each is the call of the same name of the most recently
started instance that is still running (L{exp.start}), as the EXP SDK
documents them; without one, it raises L{exp.RuntimeError}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exp._blocking import Channel, Handle, current


def get_channel(name: str, system: bool = False, consumer: bool = False) -> Channel:
    """A channel object (no I/O); C{system}: server notifications (listen only)."""
    return current().get_channel(name, system, consumer)


def get_auth() -> dict[str, Any]:
    """The current auth payload, refreshed first if it is due."""
    return current().get_auth()


def on(name: str, callback: Callable[..., Any]) -> Handle:
    """
    Call C{callback} (in a worker thread) on every event C{name}:
    C{online}, C{offline}, C{update} (with the new auth payload) or
    C{error} (with the fatal error).
    """
    return current().on(name, callback)


def get(path: str, params: Any = None) -> Any:
    """GET C{path} of the API; the decoded JSON (C{None} when empty)."""
    return current().get(path, params)


def post(path: str, payload: Any = None, params: Any = None) -> Any:
    """POST C{payload} (any JSON) to C{path} of the API; the decoded JSON answer."""
    return current().post(path, payload, params)


def patch(path: str, payload: Any = None, params: Any = None) -> Any:
    """PATCH C{path} of the API with C{payload}; the decoded JSON answer."""
    return current().patch(path, payload, params)


def put(path: str, payload: Any = None, params: Any = None) -> Any:
    """PUT C{payload} at C{path} of the API; the decoded JSON answer."""
    return current().put(path, payload, params)


def delete(path: str, params: Any = None) -> Any:
    """DELETE C{path} of the API; the decoded JSON answer (C{None} when empty)."""
    return current().delete(path, params)
