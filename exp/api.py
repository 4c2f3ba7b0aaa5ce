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
return Deferreds: here they block and return their results.
"""

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
)
from exp._calls import (
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
