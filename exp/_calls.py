"""
The module-level calls of C{exp} and C{exp.api}: each is the call of the
same name of the most recently started instance that is still running
(L{exp.start}), as the EXP SDK documents them.

@raise exp.RuntimeError: from every call, when no instance is running.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exp._blocking import (
    Channel,
    Content,
    Data,
    Device,
    Experience,
    Feed,
    Handle,
    Location,
    Thing,
    Zone,
    current,
)
from exp.twisted import ResourceList


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


def get_device(uuid: str | None = None) -> Device | None:
    """The device C{uuid}; C{None} if there is none (or no uuid)."""
    return current().get_device(uuid)


def find_devices(params: dict[str, Any] | None = None,
                 **kwargs: Any) -> ResourceList[Device]:
    """The devices that match the query parameters C{params} and C{kwargs}."""
    return current().find_devices(params, **kwargs)


def create_device(document: dict[str, Any] | None = None) -> Device:
    """A new device with C{document} (C{{}} by default)."""
    return current().create_device(document)


def delete_device(uuid: str) -> None:
    """Delete the device C{uuid}."""
    current().delete_device(uuid)


def get_current_device() -> Device | None:
    """This device's document; C{None} for users and consumer apps."""
    return current().get_current_device()


def get_thing(uuid: str | None = None) -> Thing | None:
    """The thing C{uuid}; C{None} if there is none (or no uuid)."""
    return current().get_thing(uuid)


def find_things(params: dict[str, Any] | None = None,
                **kwargs: Any) -> ResourceList[Thing]:
    """The things that match the query parameters C{params} and C{kwargs}."""
    return current().find_things(params, **kwargs)


def create_thing(document: dict[str, Any] | None = None) -> Thing:
    """A new thing with C{document} (C{{}} by default)."""
    return current().create_thing(document)


def delete_thing(uuid: str) -> None:
    """Delete the thing C{uuid}."""
    current().delete_thing(uuid)


def get_experience(uuid: str | None = None) -> Experience | None:
    """The experience C{uuid}; C{None} if there is none (or no uuid)."""
    return current().get_experience(uuid)


def find_experiences(params: dict[str, Any] | None = None,
                     **kwargs: Any) -> ResourceList[Experience]:
    """The experiences that match the query parameters C{params} and C{kwargs}."""
    return current().find_experiences(params, **kwargs)


def create_experience(document: dict[str, Any] | None = None) -> Experience:
    """A new experience with C{document} (C{{}} by default)."""
    return current().create_experience(document)


def delete_experience(uuid: str) -> None:
    """Delete the experience C{uuid}."""
    current().delete_experience(uuid)


def get_current_experience() -> Experience | None:
    """The experience of this device, if any."""
    return current().get_current_experience()


def get_location(uuid: str | None = None) -> Location | None:
    """The location C{uuid}; C{None} if there is none (or no uuid)."""
    return current().get_location(uuid)


def find_locations(params: dict[str, Any] | None = None,
                   **kwargs: Any) -> ResourceList[Location]:
    """The locations that match the query parameters C{params} and C{kwargs}."""
    return current().find_locations(params, **kwargs)


def create_location(document: dict[str, Any] | None = None) -> Location:
    """A new location with C{document} (C{{}} by default)."""
    return current().create_location(document)


def delete_location(uuid: str) -> None:
    """Delete the location C{uuid}."""
    current().delete_location(uuid)


def get_current_location() -> Location | None:
    """The location of this device, if any."""
    return current().get_current_location()


def get_current_zones() -> list[Zone]:
    """The zones of this device's location it is in ([] if none)."""
    return current().get_current_zones()


def get_feed(uuid: str | None = None) -> Feed | None:
    """The feed C{uuid}; C{None} if there is none (or no uuid)."""
    return current().get_feed(uuid)


def find_feeds(params: dict[str, Any] | None = None,
               **kwargs: Any) -> ResourceList[Feed]:
    """The feeds that match the query parameters C{params} and C{kwargs}."""
    return current().find_feeds(params, **kwargs)


def create_feed(document: dict[str, Any] | None = None) -> Feed:
    """A new feed with C{document} (C{{}} by default)."""
    return current().create_feed(document)


def delete_feed(uuid: str) -> None:
    """Delete the feed C{uuid}."""
    current().delete_feed(uuid)


def get_data(key: str | None = None, group: str = "default") -> Data | None:
    """The data item C{group}/C{key}; C{None} if there is none (or no key or group)."""
    return current().get_data(key, group)


def find_data(params: dict[str, Any] | None = None,
              **kwargs: Any) -> ResourceList[Data]:
    """The data items that match the query parameters C{params} and C{kwargs}."""
    return current().find_data(params, **kwargs)


def create_data(key: str, group: str = "default", value: Any = None) -> Data:
    """Store C{value} (any JSON) at C{group}/C{key}, overwriting what was there."""
    return current().create_data(key, group, value)


def delete_data(key: str, group: str = "default") -> None:
    """Delete the data item C{group}/C{key}."""
    current().delete_data(key, group)


def get_content(uuid: str | None = None) -> Content | None:
    """The content item C{uuid}; C{None} if there is none (or no uuid)."""
    return current().get_content(uuid)


def find_content(params: dict[str, Any] | None = None,
                 **kwargs: Any) -> ResourceList[Content]:
    """The content items that match the query parameters C{params} and C{kwargs}."""
    return current().find_content(params, **kwargs)
