"""
exp: the Python SDK for EXP, and a local EXP server.

The blocking interface documented for EXP's Python SDK::

    import exp

    exp.start(uuid='[uuid]', secret='[secret]', host='http://127.0.0.1:9000')
    channel = exp.get_channel('my_channel')
    listener = channel.listen('my_event')
    responses = channel.broadcast(name='my_event', timeout=5, payload='hello')
    devices = exp.api.find_devices(name='lobby')
    exp.stop()

A reactor runs in a background thread; Twisted programs use
L{exp.twisted.ExpService} instead, whose calls return Deferreds.
Module-level calls go to the most recently started instance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exp._blocking import Blocking, Exp, current, start, stop
from exp.errors import (
    ApiError,
    AuthenticationError,
    ExpError,
    NetworkError,
    RuntimeError,
    UnexpectedError,
)

#: The one place of the version: the package metadata (pyproject.toml) reads it here.
__version__ = "0.1.0"

#: Calls of the REST resources, under C{exp.api} and at module level.
RESOURCE_CALLS = (
    "get_device", "find_devices", "create_device", "delete_device", "get_current_device",
    "get_thing", "find_things", "create_thing", "delete_thing",
    "get_experience", "find_experiences", "create_experience", "delete_experience",
    "get_current_experience",
    "get_location", "find_locations", "create_location", "delete_location",
    "get_current_location", "get_current_zones",
    "get_feed", "find_feeds", "create_feed", "delete_feed",
    "get_data", "find_data", "create_data", "delete_data",
    "get_content", "find_content",
)
#: Module-level calls that act on the most recently started instance.
INSTANCE_CALLS = (
    "get_channel", "get_auth", "on", "get", "post", "patch", "put", "delete",
    *RESOURCE_CALLS,
)


def _delegate(name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(current(), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"C{{{name}}} of the most recently started instance."
    return call


class _Api:
    """C{exp.api}: the resource calls of the most recently started instance."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in RESOURCE_CALLS:
            raise AttributeError(f"exp.api has no {name!r}")
        return _delegate(name)

    def __dir__(self) -> list[str]:
        return list(RESOURCE_CALLS)


api = _Api()

for _name in INSTANCE_CALLS:
    globals()[_name] = _delegate(_name)
del _name


def __getattr__(name: str) -> Any:  # for type checkers: the delegated calls
    raise AttributeError(f"module 'exp' has no attribute {name!r}")


__all__ = [
    "ApiError",
    "AuthenticationError",
    "Blocking",
    "Exp",
    "ExpError",
    "NetworkError",
    "RuntimeError",
    "UnexpectedError",
    "api",
    "start",
    "stop",
]
__all__ += INSTANCE_CALLS
