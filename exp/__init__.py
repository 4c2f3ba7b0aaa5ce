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
Module-level calls go to the most recently started instance; the
resources' classes and calls are in L{exp.api}, and each of those calls
is a module-level call too (C{exp.get_device} is C{exp.api.get_device}).
"""

# ruff: noqa: F405 - the errors in __all__ are those of exp.errors, imported with *

from __future__ import annotations

from exp import api
from exp._blocking import Blocking, CrochetRunner, Exp, Runner, start, stop
from exp._calls import delete, get, get_auth, get_channel, on, patch, post, put
from exp.api import (
    create_data,
    create_device,
    create_experience,
    create_feed,
    create_location,
    create_thing,
    delete_data,
    delete_device,
    delete_experience,
    delete_feed,
    delete_location,
    delete_thing,
    find_content,
    find_data,
    find_devices,
    find_experiences,
    find_feeds,
    find_locations,
    find_things,
    get_content,
    get_current_device,
    get_current_experience,
    get_current_location,
    get_current_zones,
    get_data,
    get_device,
    get_experience,
    get_feed,
    get_location,
    get_thing,
)
from exp.errors import *  # noqa: F403 - ExpError and its subclasses, as exp.errors lists them

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

__all__ = [
    "ApiError", "AuthenticationError", "Blocking", "CrochetRunner", "Exp",
    "ExpError", "NetworkError", "Runner", "RuntimeError", "UnexpectedError", "api",
    "create_data", "create_device", "create_experience", "create_feed",
    "create_location", "create_thing", "delete", "delete_data", "delete_device",
    "delete_experience", "delete_feed", "delete_location", "delete_thing",
    "find_content", "find_data", "find_devices", "find_experiences", "find_feeds",
    "find_locations", "find_things", "get", "get_auth", "get_channel",
    "get_content", "get_current_device", "get_current_experience",
    "get_current_location", "get_current_zones", "get_data", "get_device",
    "get_experience", "get_feed", "get_location", "get_thing", "on", "patch",
    "post", "put", "start", "stop",
]
