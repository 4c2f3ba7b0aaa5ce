"""
C{exp.api}: the resources of the blocking face, their classes and calls.

The calls act on the most recently started instance (L{exp.start})::

    devices = exp.api.find_devices(name="lobby")  # query parameters
    device = exp.api.get_device(uuid)             # None if there is none
    device = exp.api.create_device({"field": 1})
    device.document["field"] = 123
    device.save()
    assert isinstance(device, exp.api.Device)

Each class wraps the class of the same name of L{exp.twisted}, whose calls
return Deferreds: here they block and return their results.  Without a
running instance, the calls raise L{exp.RuntimeError}.  Each of them is a
module-level call of C{exp} too (C{exp.get_device} is C{exp.api.get_device}).
"""

from __future__ import annotations

from typing import Any

from exp._blocking import (
    Blocking,
    Broadcast,
    Channel,
    Content,
    Data,
    Device,
    Experience,
    Feed,
    Handle,
    Listener,
    Location,
    Resource,
    Thing,
    Zone,
    current,
    current_family,
    current_readers,
)
from exp.twisted import ResourceList

__all__ = [
    "Blocking",
    "Broadcast",
    "Channel",
    "Content",
    "Data",
    "Device",
    "Experience",
    "Feed",
    "Handle",
    "Listener",
    "Location",
    "Resource",
    "ResourceList",
    "Thing",
    "Zone",
    "create_data",
    "create_device",
    "create_experience",
    "create_feed",
    "create_location",
    "create_thing",
    "delete_data",
    "delete_device",
    "delete_experience",
    "delete_feed",
    "delete_location",
    "delete_thing",
    "find_content",
    "find_data",
    "find_devices",
    "find_experiences",
    "find_feeds",
    "find_locations",
    "find_things",
    "get_content",
    "get_current_device",
    "get_current_experience",
    "get_current_location",
    "get_current_zones",
    "get_data",
    "get_device",
    "get_experience",
    "get_feed",
    "get_location",
    "get_thing",
]


get_device, find_devices, create_device, delete_device = current_family(Device)
"""The device calls of the instance started last (C{exp.get_device(uuid)}, ...)."""


def get_current_device() -> Device | None:
    """This device's document; C{None} for users and consumer apps."""
    return current().get_current_device()


get_thing, find_things, create_thing, delete_thing = current_family(Thing)
"""Module-level calls of things: C{exp.find_things(name='beacon')} and the others."""
get_experience, find_experiences, create_experience, delete_experience = current_family(
    Experience)
"""Experiences, the current instance's: C{exp.api.get_experience(uuid)}, ..."""


def get_current_experience() -> Experience | None:
    """The experience of this device, if any."""
    return current().get_current_experience()


get_location, find_locations, create_location, delete_location = current_family(Location)
"""To get, find, create and delete locations with the instance started last."""


def get_current_location() -> Location | None:
    """The location of this device, if any."""
    return current().get_current_location()


def get_current_zones() -> list[Zone]:
    """The zones of this device's location it is in ([] if none)."""
    return current().get_current_zones()


get_feed, find_feeds, create_feed, delete_feed = current_family(Feed)
"""The feeds of the most recent instance: C{exp.api.create_feed(document)} and more."""
get_content, find_content = current_readers(Content)
"""Content, read-only: only C{exp.api.get_content(uuid)} and C{find_content(...)}."""


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
