"""
exp.twisted: the Deferred-native EXP SDK.

L{ExpService} is a C{twisted.application.service.MultiService}; every call
returns a Deferred (so C{await} works inside C{async def}).  Channels,
listeners, resources and log shippers reach the server through its
C{session}, a L{Session}; L{exp.twisted.testing} gives tests a spy of one.
"""

# ruff: noqa: F405 - the errors in __all__ are those of exp.errors, imported with *

from exp.errors import *  # noqa: F403
from exp.twisted._channels import Broadcast, Channel, Listener
from exp.twisted._events import Handle
from exp.twisted._resources import (
    Content,
    Data,
    Device,
    Experience,
    Feed,
    Location,
    Resource,
    ResourceList,
    Thing,
    Zone,
)
from exp.twisted._service import ExpService
from exp.twisted._session import Session, Subscriber

__all__ = [
    "ApiError",
    "AuthenticationError",
    "Broadcast",
    "Channel",
    "Content",
    "Data",
    "Device",
    "ExpError",
    "ExpService",
    "Experience",
    "Feed",
    "Handle",
    "Listener",
    "Location",
    "NetworkError",
    "Resource",
    "ResourceList",
    "RuntimeError",
    "Session",
    "Subscriber",
    "Thing",
    "UnexpectedError",
    "Zone",
]
