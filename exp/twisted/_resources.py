"""
The REST resources of PROTOCOL.md A6 as objects (API.md "Resources").

Every method that talks to the server returns a Deferred.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlencode

from twisted.internet.defer import Deferred, ensureDeferred, succeed

from exp.errors import RuntimeError
from exp.twisted._channels import Channel

if TYPE_CHECKING:
    from exp.twisted._service import ExpService


class ResourceList(list[Any]):
    """A list of resources that also carries the answer's C{total}."""

    total: int

    def __init__(self, items: list[Any], answer: dict[str, Any]) -> None:
        super().__init__(items)
        self.total = int(answer.get("total", len(items)))
        for key, value in answer.items():
            if key not in ("results", "total"):
                setattr(self, key, value)


class _Document:
    """
    The C{document} attribute: always a dict (assigning anything else raises
    L{exp.RuntimeError}, rather than breaking every later call).
    """

    def __get__(self, instance: Any, owner: Any = None) -> dict[str, Any]:
        return instance.__dict__["_document"]

    def __set__(self, instance: Any, value: dict[str, Any]) -> None:
        if not isinstance(value, dict):
            raise RuntimeError(f"a document is a dict, not {type(value).__name__}")
        instance.__dict__["_document"] = value


class _Stored:
    """A document stored at a path of the API: C{refresh}, C{delete}, C{get_channel}."""

    document = _Document()

    def __init__(self, service: ExpService, document: dict[str, Any]) -> None:
        self._service = service
        self.document = document

    def _path(self) -> str:
        raise NotImplementedError

    def _channel_name(self) -> str:
        raise NotImplementedError

    def refresh(self) -> Deferred[Any]:
        """GET the document again."""
        return ensureDeferred(self._refresh())

    async def _refresh(self) -> Any:
        self.document = await self._service.get(self._path())
        return self

    def delete(self) -> Deferred[None]:
        return ensureDeferred(self._delete())

    async def _delete(self) -> None:
        await self._service.delete(self._path())

    def get_channel(self, system: bool = False, consumer: bool = False) -> Channel:
        """The channel of this document (system notifications: C{system=True})."""
        return self._service.get_channel(self._channel_name(), system, consumer)


class Resource(_Stored):
    """A document of the API with C{document}, C{save}, C{refresh}, C{delete}."""

    collection: ClassVar[str] = ""

    @property
    def uuid(self) -> str | None:
        return self.document.get("uuid")

    @property
    def name(self) -> str | None:
        return self.document.get("name")

    @name.setter
    def name(self, value: str) -> None:
        self.document["name"] = value

    @property
    def subtype(self) -> str | None:
        return self.document.get("subtype")

    def _path(self) -> str:
        if not self.uuid or not isinstance(self.uuid, str):
            raise RuntimeError(f"this {type(self).__name__.lower()} has no uuid")
        return f"{self.collection}/{segment(self.uuid)}"

    def save(self) -> Deferred[Resource]:
        """PATCH the document, then take the server's."""
        return ensureDeferred(self._save())

    async def _save(self) -> Resource:
        self.document = await self._service.patch(self._path(), self.document)
        return self

    def _channel_name(self) -> str:
        if not self.uuid:
            raise RuntimeError(f"this {type(self).__name__.lower()} has no uuid")
        return self.uuid

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.uuid} {self.name!r}>"


class _Located(Resource):
    """Devices and things: they have a location and zones in it."""

    def get_location(self) -> Deferred[Location | None]:
        location = self.document.get("location")
        uuid = location.get("uuid") if isinstance(location, dict) else None
        return self._service.get_location(uuid)

    def get_zones(self) -> Deferred[list[Zone]]:
        return ensureDeferred(self._get_zones())

    async def _get_zones(self) -> list[Zone]:
        location_field = self.document.get("location")
        keys = []
        if isinstance(location_field, dict) and isinstance(location_field.get("zones"), list):
            keys = [z.get("key") for z in location_field["zones"] if isinstance(z, dict)]
        location = await self.get_location()
        if location is None:
            return []
        return [zone for zone in location.get_zones() if zone.key in keys]


class Device(_Located):
    collection = "/api/devices"

    def get_experience(self) -> Deferred[Experience | None]:
        experience = self.document.get("experience")
        uuid = experience.get("uuid") if isinstance(experience, dict) else None
        return self._service.get_experience(uuid)


class Thing(_Located):
    collection = "/api/things"


class Experience(Resource):
    collection = "/api/experiences"

    def get_devices(self, params: dict[str, Any] | None = None,
                    **kwargs: Any) -> Deferred[ResourceList]:
        return self._service.find_devices(query_params(params, kwargs,
                                                       {"experience.uuid": self.uuid}))


class Location(Resource):
    collection = "/api/locations"

    def get_devices(self, params: dict[str, Any] | None = None,
                    **kwargs: Any) -> Deferred[ResourceList]:
        return self._service.find_devices(query_params(params, kwargs,
                                                       {"location.uuid": self.uuid}))

    def get_things(self, params: dict[str, Any] | None = None,
                   **kwargs: Any) -> Deferred[ResourceList]:
        return self._service.find_things(query_params(params, kwargs, {"location.uuid": self.uuid}))

    def get_zones(self) -> list[Zone]:
        """The zones of this location (from its document; no I/O)."""
        zones = self.document.get("zones")
        if not isinstance(zones, list):
            return []
        return [Zone(self, zone) for zone in zones if isinstance(zone, dict)]

    def get_layout_url(self) -> str:
        """The URL of the layout image, with the restricted token."""
        auth = self._service.auth
        return (f"{auth['api']['host']}{self._path()}/layout?"
                + urlencode({"_rt": auth.get("restrictedToken", "")}))


class Zone:
    """A zone of a location; it is saved and refreshed through its location."""

    document = _Document()

    def __init__(self, location: Location, document: dict[str, Any]) -> None:
        self.location = location
        self.document = document

    @property
    def key(self) -> str | None:
        return self.document.get("key")

    @property
    def name(self) -> str | None:
        return self.document.get("name")

    @name.setter
    def name(self, value: str) -> None:
        self.document["name"] = value

    def get_location(self) -> Deferred[Location]:
        return succeed(self.location)

    def get_devices(self) -> Deferred[ResourceList]:
        return self.location._service.find_devices(
            {"location.uuid": self.location.uuid, "location.zones.key": self.key})

    def get_things(self) -> Deferred[ResourceList]:
        return self.location._service.find_things(
            {"location.uuid": self.location.uuid, "location.zones.key": self.key})

    def save(self) -> Deferred[Zone]:
        return ensureDeferred(self._save())

    async def _save(self) -> Zone:
        await self.location.save()
        self._rebind()
        return self

    def refresh(self) -> Deferred[Zone]:
        return ensureDeferred(self._refresh())

    async def _refresh(self) -> Zone:
        await self.location.refresh()
        self._rebind()
        return self

    def _rebind(self) -> None:
        zones = self.location.document.get("zones")
        for zone in zones if isinstance(zones, list) else []:
            if isinstance(zone, dict) and zone.get("key") == self.key:
                self.document = zone

    def get_channel(self, system: bool = False, consumer: bool = False) -> Channel:
        return self.location._service.get_channel(
            f"{self.location.uuid}:zone:{self.key}", system, consumer)

    def __repr__(self) -> str:
        return f"<Zone {self.key!r} of {self.location.uuid}>"


class Feed(Resource):
    collection = "/api/connectors/feeds"

    def get_data(self, **params: Any) -> Deferred[Any]:
        """The feed's decoded data (dynamic feeds: C{searchValue=...})."""
        return self._service.get(f"{self._path()}/data", params or None)


class Content(Resource):
    """An item of the content tree (read-only)."""

    collection = "/api/content"

    def get_children(self, params: dict[str, Any] | None = None,
                     **kwargs: Any) -> Deferred[ResourceList]:
        return self._service.find_content(query_params(params, kwargs, {"parent": self.uuid}))

    def _delivery(self, variant: str | None = None) -> str | None:
        if self.subtype == "scala:content:url":
            url = self.document.get("url")
            return url if isinstance(url, str) else None
        path = self.document.get("path")
        if self.subtype == "scala:content:folder" or not isinstance(path, str):
            return None
        if self.subtype == "scala:content:app":
            path = path.rstrip("/") + "/index.html"
        auth = self._service.auth
        query = {"_rt": auth.get("restrictedToken", "")}
        if variant is not None:
            query["variant"] = variant
        try:
            return (f"{auth['api']['host']}/api/delivery/{quote(path.lstrip('/'))}?"
                    + urlencode(query))
        except UnicodeEncodeError:  # a lone surrogate
            raise RuntimeError(f"this content's path or variant is not valid text: {path!r:.40}"
                               ) from None

    def get_url(self) -> str | None:
        """
        The delivery URL of a file, or of an app's C{index.html}; a URL
        item's own URL; C{None} for folders.
        """
        return self._delivery()

    def has_variant(self, name: str) -> bool:
        variants = self.document.get("variants")
        return isinstance(name, str) and isinstance(variants, list) and any(
            isinstance(v, dict) and v.get("name") == name for v in variants)

    def get_variant_url(self, name: str) -> str | None:
        """The delivery URL of the variant C{name}, or C{None} if there is none."""
        return self._delivery(name) if self.has_variant(name) else None

    def save(self) -> Deferred[Resource]:
        raise RuntimeError("content is read-only")

    def delete(self) -> Deferred[None]:
        raise RuntimeError("content is read-only")


class Data(_Stored):
    """A data item: C{key}, C{group} and a settable C{value}."""

    @property
    def key(self) -> str:
        return str(self.document.get("key"))

    @property
    def group(self) -> str:
        return str(self.document.get("group"))

    @property
    def value(self) -> Any:
        return self.document.get("value")

    @value.setter
    def value(self, value: Any) -> None:
        self.document["value"] = value

    def _path(self) -> str:
        return data_path(self.group, self.key)

    def save(self) -> Deferred[Data]:
        return ensureDeferred(self._save())

    async def _save(self) -> Data:
        self.document = await self._service.put(self._path(), self.value)
        return self

    def _channel_name(self) -> str:
        return f"data:{self.group}:{self.key}"

    def __repr__(self) -> str:
        return f"<Data {self.group}/{self.key}>"


def data_path(group: str, key: str) -> str:
    return f"/api/data/{segment(group, 'group')}/{segment(key, 'key')}"


def segment(value: str, what: str = "uuid") -> str:
    """C{value} escaped as one segment of a URL path."""
    try:
        return quote(value, safe="")
    except UnicodeEncodeError:  # a lone surrogate: no document can be named so
        raise RuntimeError(f"the {what} {value!r:.40} is not valid text") from None


def query_params(params: Any, kwargs: dict[str, Any],
          fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """The query parameters of a C{find_*}: C{params}, then C{kwargs}, then C{fixed}."""
    if params is not None and not isinstance(params, Mapping):
        raise RuntimeError("params is a dict of query parameters")
    return {**(params or {}), **kwargs, **(fixed or {})}
