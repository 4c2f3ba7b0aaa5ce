"""
The calls of L{exp.twisted.ExpService} for each kind of resource, made from
one row of a table per kind::

    get_device, find_devices, create_device, delete_device = family(Device)
    get_content, find_content = readers(Content)

Each is the classmethod of its kind on the service's session: C{get_device}
is L{Device.get}, C{find_devices} L{Device.find}, C{create_device}
L{Device.create} and C{delete_device} L{Device.remove}.  The rows make real
methods, with their names, parameters and docstrings; for type checkers,
they have the types of L{GetCall}, L{FindCall}, L{CreateCall} and
L{DeleteCall}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, overload

from twisted.internet.defer import Deferred

from exp.twisted._resources import Resource, ResourceList
from exp.twisted._session import HasSession

R = TypeVar("R", bound=Resource)
C = TypeVar("C")


class GetCall(Protocol[R]):
    """C{get_<kind>(uuid=None)}: the document C{uuid}; C{None} if there is none."""

    def __call__(self, uuid: str | None = None) -> Deferred[R | None]: ...


class FindCall(Protocol[R]):
    """C{find_<kinds>(params=None, **kwargs)}: the documents that match."""

    def __call__(self, params: dict[str, Any] | None = None,
                 **kwargs: Any) -> Deferred[ResourceList[R]]: ...


class CreateCall(Protocol[R]):
    """C{create_<kind>(document=None)}: a new document."""

    def __call__(self, document: dict[str, Any] | None = None) -> Deferred[R]: ...


class DeleteCall(Protocol):
    """C{delete_<kind>(uuid)}: delete the document C{uuid}."""

    def __call__(self, uuid: str) -> Deferred[None]: ...


class Method(Generic[C]):
    """
    A method made by a row of a table: put in the class it is assigned in,
    it replaces itself there by the function it was made with (which must
    have its name).  To type checkers, it is a C{C} once read on an instance.
    """

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function

    def __set_name__(self, owner: type, name: str) -> None:
        if name != self.function.__name__:
            raise TypeError(f"{owner.__name__}.{name} is assigned the call"
                            f" {self.function.__name__}")
        self.function.__qualname__ = f"{owner.__qualname__}.{name}"
        self.function.__module__ = owner.__module__
        setattr(owner, name, self.function)

    @overload
    def __get__(self, instance: None, owner: type) -> Method[C]: ...

    @overload
    def __get__(self, instance: object, owner: type) -> C: ...

    def __get__(self, instance: object | None, owner: type) -> Any:
        """(Only until the class is made, when the function replaces it.)"""
        return self if instance is None else self.function.__get__(instance, owner)


def names(kind: type[Resource]) -> tuple[str, str]:
    """The singular and plural of a kind in its calls' names: C{device}, C{devices}."""
    return kind.__name__.lower(), kind.collection.rsplit("/", 1)[1]


def made(function: Callable[..., Any], name: str, doc: str,
         returns: str) -> Callable[..., Any]:
    """C{function}, named C{name}, documented by C{doc}, returning C{returns} (as written)."""
    function.__name__ = function.__qualname__ = name
    function.__doc__ = doc
    function.__annotations__ = {name: annotation for name, annotation
                                in function.__annotations__.items() if name != "self"}
    function.__annotations__["return"] = returns
    return function


def readers(kind: type[R]) -> tuple[Method[GetCall[R]], Method[FindCall[R]]]:
    """The methods C{get_<kind>} and C{find_<kinds>} of a service."""
    noun, plural = names(kind)
    kind_name = kind.__name__

    def get(self: HasSession, uuid: str | None = None) -> Any:
        return kind.get(self.session, uuid)

    def find(self: HasSession, params: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return kind.find(self.session, params, **kwargs)

    return (
        Method(made(get, f"get_{noun}",
                    f"The {noun} C{{uuid}}; C{{None}} if there is none (or no uuid).",
                    f"Deferred[{kind_name} | None]")),
        Method(made(find, f"find_{plural}",
                    f"The {noun} documents that match the query parameters C{{params}}"
                    " and C{kwargs}.", f"Deferred[ResourceList[{kind_name}]]")),
    )


def family(kind: type[R]) -> tuple[Method[GetCall[R]], Method[FindCall[R]],
                                   Method[CreateCall[R]], Method[DeleteCall]]:
    """The methods C{get_<kind>}, C{find_<kinds>}, C{create_<kind>} and C{delete_<kind>}."""
    noun, _ = names(kind)

    def create(self: HasSession, document: dict[str, Any] | None = None) -> Any:
        return kind.create(self.session, document)

    def delete(self: HasSession, uuid: str) -> Any:
        return kind.remove(self.session, uuid)

    get, find = readers(kind)
    return (
        get, find,
        Method(made(create, f"create_{noun}",
                    f"A new {noun} with C{{document}} (C{{{{}}}} by default).",
                    f"Deferred[{kind.__name__}]")),
        Method(made(delete, f"delete_{noun}", f"Delete the {noun} C{{uuid}}.",
                    "Deferred[None]")),
    )
