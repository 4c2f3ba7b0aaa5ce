"""
The REST resources of PROTOCOL.md A6 as objects (API.md "Resources").

Each kind of resource reaches the server through a L{Session}: its
classmethods get, find, create and remove documents (C{Device.get(session,
uuid)}), and its objects save, refresh and delete themselves.  Every method
that talks to the server returns a Deferred.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import quote, urlencode

from twisted.internet.defer import Deferred, ensureDeferred, succeed

from exp.errors import ApiError, RuntimeError
from exp.twisted._channels import Channel
from exp.twisted._http import encode_params
from exp.twisted._session import HasSession, Session, session_of

T = TypeVar("T")
S = TypeVar("S", bound="_Stored")
R = TypeVar("R", bound="Resource")
N = TypeVar("N", bound="_NamedByDevices")


class ResourceList(list[T], Generic[T]):
    """
    A list of resources that also carries the answer's C{total} (and any
    other top-level field of the answer, as an attribute).

    @ivar total: how many documents match, of which this list holds a page.
    """

    total: int

    def __init__(self, items: list[T], answer: dict[str, Any]) -> None:
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


def _auth(session: Session) -> dict[str, Any]:
    """The session's auth payload, for a URL that carries the restricted token."""
    auth = session.auth
    if auth is None:
        raise RuntimeError("not authenticated yet: wait for whenAuthenticated()")
    return auth


class _Stored:
    """
    A document stored at a path of the API: C{refresh}, C{delete},
    C{get_channel}, and the classmethod C{find}.

    @ivar document: the raw document, a dict (assigning anything else raises
        L{exp.RuntimeError}).
    """

    #: The path of the API the documents of this kind are under.
    collection: ClassVar[str] = ""

    document = _Document()

    def __init__(self, session: Session | HasSession, document: dict[str, Any]) -> None:
        self._session = session_of(session)
        self.document = document

    @classmethod
    def find(cls: type[S], session: Session, params: dict[str, Any] | None = None, /,
             **kwargs: Any) -> Deferred[ResourceList[S]]:
        """
        The documents of this kind that match the query parameters C{params}
        and keyword arguments (e.g. C{name='lobby'}, C{limit=10}).
        """
        return ensureDeferred(cls._find(session, params, kwargs))

    @classmethod
    async def _find(cls: type[S], session: Session, params: dict[str, Any] | None,
                    kwargs: dict[str, Any]) -> ResourceList[S]:
        answer = await session.request("GET", cls.collection,
                                       encode_params(query_params(params, kwargs)))
        if not isinstance(answer, dict):
            answer = {"results": [], "total": 0}
        return ResourceList([cls(session, d) for d in answer.get("results", [])], answer)

    def _path(self) -> str:
        raise NotImplementedError

    def _channel_name(self) -> str:
        raise NotImplementedError

    def refresh(self) -> Deferred[Any]:
        """GET the document again; this object, once it has the server's document."""
        return ensureDeferred(self._refresh())

    async def _refresh(self) -> Any:
        self.document = await self._session.request("GET", self._path())
        return self

    def delete(self) -> Deferred[None]:
        """DELETE the document."""
        return ensureDeferred(self._delete())

    async def _delete(self) -> None:
        await self._session.request("DELETE", self._path())

    def get_channel(self, system: bool = False, consumer: bool = False) -> Channel:
        """The channel of this document (system notifications: C{system=True})."""
        return Channel(self._session, self._channel_name(), system, consumer)


class _Named:
    """A settable C{name}, a field of the document."""

    document: dict[str, Any]

    @property
    def name(self) -> str | None:
        """The C{name} field of the document (settable)."""
        return self.document.get("name")

    @name.setter
    def name(self, value: str) -> None:
        self.document["name"] = value


class Resource(_Stored, _Named):
    """
    A document of the API named by its uuid: C{document}, C{save},
    C{refresh}, C{delete}, C{get_channel}; and the classmethods C{get},
    C{find}, C{create} and C{remove} of its kind.
    """

    @classmethod
    def get(cls: type[R], session: Session, uuid: str | None = None, /
            ) -> Deferred[R | None]:
        """The document C{uuid}; C{None} if there is none (or no uuid is given)."""
        return ensureDeferred(cls._get(session, uuid))

    @classmethod
    async def _get(cls: type[R], session: Session, uuid: str | None) -> R | None:
        if not uuid or not isinstance(uuid, str):
            return None
        try:
            path = f"{cls.collection}/{segment(uuid)}"
        except RuntimeError:  # not valid text: no document has it
            return None
        try:
            document = await session.request("GET", path)
        except ApiError as e:
            if e.status_code == 404:
                return None
            raise
        return cls(session, document)

    @classmethod
    def create(cls: type[R], session: Session, document: dict[str, Any] | None = None, /
               ) -> Deferred[R]:
        """
        POST a new document (C{{}} if C{None}); the server's document, with
        its uuid.
        """
        return ensureDeferred(cls._create(session, document))

    @classmethod
    async def _create(cls: type[R], session: Session, document: dict[str, Any] | None) -> R:
        if document is None:
            document = {}
        if not isinstance(document, dict):
            raise RuntimeError("a document is a dict")
        return cls(session, await session.request("POST", cls.collection, None, document))

    @classmethod
    def remove(cls, session: Session, uuid: str, /) -> Deferred[None]:
        """DELETE the document C{uuid} (L{exp.RuntimeError} without a uuid)."""
        return ensureDeferred(cls._remove(session, uuid))

    @classmethod
    async def _remove(cls, session: Session, uuid: str) -> None:
        if not uuid or not isinstance(uuid, str):
            raise RuntimeError("delete needs a uuid")
        await session.request("DELETE", f"{cls.collection}/{segment(uuid)}")

    @property
    def uuid(self) -> str | None:
        """The document's uuid, which the server gave it."""
        return self.document.get("uuid")

    @property
    def subtype(self) -> str | None:
        """The C{subtype} field of the document (e.g. C{scala:content:file})."""
        return self.document.get("subtype")

    def _path(self) -> str:
        if not self.uuid or not isinstance(self.uuid, str):
            raise RuntimeError(f"this {type(self).__name__.lower()} has no uuid")
        return f"{self.collection}/{segment(self.uuid)}"

    def save(self) -> Deferred[Resource]:
        """PATCH the document, then take the server's; this object."""
        return ensureDeferred(self._save())

    async def _save(self) -> Resource:
        self.document = await self._session.request("PATCH", self._path(), None,
                                                     self.document)
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
        """The location named by the document; C{None} if there is none."""
        return Location.get(self._session, _uuid_in(self.document, Location.field))

    def get_zones(self) -> Deferred[list[Zone]]:
        """The zones of the location that the document names ([] if none)."""
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
    """A device: a player, a kiosk, a screen."""

    collection = "/api/devices"

    @classmethod
    def current(cls, session: Session, /) -> Deferred[Device | None]:
        """The device logged in; C{None} for users, consumer apps and unpaired devices."""
        return ensureDeferred(cls._current(session))

    @classmethod
    async def _current(cls, session: Session) -> Device | None:
        if session.stopped:
            raise RuntimeError("this EXP instance has been stopped")
        identity = (await session.authenticated())["identity"]
        if identity.get("type") != "device" or identity.get("paired") is False:
            return None
        return await cls.get(session, identity.get("uuid"))

    def get_experience(self) -> Deferred[Experience | None]:
        """The experience named by the document; C{None} if there is none."""
        return Experience.get(self._session, _uuid_in(self.document, Experience.field))


class Thing(_Located):
    """A thing: something with a location that is not a device (e.g. a beacon)."""

    collection = "/api/things"


def _uuid_in(document: dict[str, Any], field: str) -> Any:
    """The uuid that a field of a document names (C{{field: {"uuid": ...}}}), if any."""
    named = document.get(field)
    return named.get("uuid") if isinstance(named, dict) else None


class _NamedByDevices(Resource):
    """
    A kind of document that devices name in a field of theirs (their
    experience, their location): the device logged in may name one, and the
    devices that name one can be found.
    """

    #: The field of a device's document that names a document of this kind.
    field: ClassVar[str] = ""

    @classmethod
    def current(cls: type[N], session: Session, /) -> Deferred[N | None]:
        """The document of this kind that the device logged in names, if any."""
        return ensureDeferred(cls._current(session))

    @classmethod
    async def _current(cls: type[N], session: Session) -> N | None:
        device = await Device.current(session)
        if device is None:
            return None
        return await cls.get(session, _uuid_in(device.document, cls.field))

    def get_devices(self, params: dict[str, Any] | None = None,
                    **kwargs: Any) -> Deferred[ResourceList[Device]]:
        """The devices that name this document (further query parameters as C{find})."""
        return Device.find(self._session, query_params(params, kwargs,
                                                       {f"{self.field}.uuid": self.uuid}))


class Experience(_NamedByDevices):
    """An experience: what devices show."""

    collection = "/api/experiences"
    field = "experience"


class Location(_NamedByDevices):
    """A location: a place with devices, things, zones and a layout image."""

    collection = "/api/locations"
    field = "location"

    def get_things(self, params: dict[str, Any] | None = None,
                   **kwargs: Any) -> Deferred[ResourceList[Thing]]:
        """The things at this location (further query parameters as C{find})."""
        return Thing.find(self._session, query_params(params, kwargs,
                                                      {"location.uuid": self.uuid}))

    def get_zones(self) -> list[Zone]:
        """The zones of this location (from its document; no I/O)."""
        zones = self.document.get("zones")
        if not isinstance(zones, list):
            return []
        return [Zone(self, zone) for zone in zones if isinstance(zone, dict)]

    def get_layout_url(self) -> str:
        """The URL of the layout image, with the restricted token."""
        auth = _auth(self._session)
        return (f"{auth['api']['host']}{self._path()}/layout?"
                + urlencode({"_rt": auth.get("restrictedToken", "")}))


class Zone(_Named):
    """
    A zone of a location; it is saved and refreshed through its location.

    @ivar location: the L{Location} whose document holds this zone.
    @ivar document: the zone's part of the location's document, a dict.
    """

    document = _Document()

    def __init__(self, location: Location, document: dict[str, Any]) -> None:
        self.location = location
        self._session = location._session
        self.document = document

    @classmethod
    def current(cls, session: Session, /) -> Deferred[list[Zone]]:
        """The zones of its location that the device logged in is in ([] if none)."""
        return ensureDeferred(cls._current(session))

    @classmethod
    async def _current(cls, session: Session) -> list[Zone]:
        device = await Device.current(session)
        return [] if device is None else await device.get_zones()

    @property
    def key(self) -> str | None:
        """The zone's key, unique in its location."""
        return self.document.get("key")

    def get_location(self) -> Deferred[Location]:
        """The zone's location (no I/O)."""
        return succeed(self.location)

    def get_devices(self) -> Deferred[ResourceList[Device]]:
        """The devices in this zone."""
        return Device.find(self._session, {"location.uuid": self.location.uuid,
                                           "location.zones.key": self.key})

    def get_things(self) -> Deferred[ResourceList[Thing]]:
        """The things in this zone."""
        return Thing.find(self._session, {"location.uuid": self.location.uuid,
                                          "location.zones.key": self.key})

    def save(self) -> Deferred[Zone]:
        """Save the location; this zone, with the server's document."""
        return ensureDeferred(self._through_location(self.location.save))

    def refresh(self) -> Deferred[Zone]:
        """Refresh the location; this zone, with the server's document."""
        return ensureDeferred(self._through_location(self.location.refresh))

    async def _through_location(self, call: Callable[[], Deferred[Any]]) -> Zone:
        await call()
        self._rebind()
        return self

    def _rebind(self) -> None:
        zones = self.location.document.get("zones")
        for zone in zones if isinstance(zones, list) else []:
            if isinstance(zone, dict) and zone.get("key") == self.key:
                self.document = zone

    def get_channel(self, system: bool = False, consumer: bool = False) -> Channel:
        """The channel of this zone (system notifications: C{system=True})."""
        return Channel(self._session, f"{self.location.uuid}:zone:{self.key}", system,
                       consumer)

    def __repr__(self) -> str:
        return f"<Zone {self.key!r} of {self.location.uuid}>"


class Feed(Resource):
    """A data feed: a weather, RSS, JSON or other source the server reads."""

    collection = "/api/connectors/feeds"

    def get_data(self, **params: Any) -> Deferred[Any]:
        """The feed's decoded data (dynamic feeds: C{searchValue=...})."""
        return self._session.request("GET", f"{self._path()}/data",
                                     encode_params(params or None))


class Content(Resource):
    """An item of the content tree: a folder, a file, an app or a URL (read-only)."""

    collection = "/api/content"

    @classmethod
    def create(cls, session: Session, document: dict[str, Any] | None = None, /
               ) -> Deferred[Content]:
        """Nothing: content is read-only (L{exp.RuntimeError})."""
        raise RuntimeError("content is read-only")

    @classmethod
    def remove(cls, session: Session, uuid: str, /) -> Deferred[None]:
        """Nothing: content is read-only (L{exp.RuntimeError})."""
        raise RuntimeError("content is read-only")

    def get_children(self, params: dict[str, Any] | None = None,
                     **kwargs: Any) -> Deferred[ResourceList[Content]]:
        """The items of this folder (further query parameters as C{find})."""
        return Content.find(self._session, query_params(params, kwargs,
                                                        {"parent": self.uuid}))

    def _delivery(self, variant: str | None = None) -> str | None:
        if self.subtype == "scala:content:url":
            url = self.document.get("url")
            return url if isinstance(url, str) else None
        path = self.document.get("path")
        if self.subtype == "scala:content:folder" or not isinstance(path, str):
            return None
        if self.subtype == "scala:content:app":
            path = path.rstrip("/") + "/index.html"
        auth = _auth(self._session)
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
        """Whether the item has a variant C{name} (e.g. C{small}, of an image)."""
        variants = self.document.get("variants")
        return isinstance(name, str) and isinstance(variants, list) and any(
            isinstance(v, dict) and v.get("name") == name for v in variants)

    def get_variant_url(self, name: str) -> str | None:
        """The delivery URL of the variant C{name}, or C{None} if there is none."""
        return self._delivery(name) if self.has_variant(name) else None

    def save(self) -> Deferred[Resource]:
        """Nothing: content is read-only (L{exp.RuntimeError})."""
        raise RuntimeError("content is read-only")

    def delete(self) -> Deferred[None]:
        """Nothing: content is read-only (L{exp.RuntimeError})."""
        raise RuntimeError("content is read-only")


class Data(_Stored):
    """A data item of the key/value store: C{key}, C{group} and a settable C{value}."""

    collection = "/api/data"

    @classmethod
    def get(cls, session: Session, key: str | None = None, group: str = "default", /
            ) -> Deferred[Data | None]:
        """The data item C{group}/C{key}; C{None} if there is none (or no key or group)."""
        return ensureDeferred(cls._get(session, key, group))

    @classmethod
    async def _get(cls, session: Session, key: str | None, group: str) -> Data | None:
        if key is None or key == "" or group == "":
            return None
        _check_data_key(key, group)
        try:
            return cls(session, await session.request("GET", data_path(group, key)))
        except ApiError as e:
            if e.status_code == 404:
                return None
            raise

    @classmethod
    def create(cls, session: Session, key: str, group: str = "default", value: Any = None, /
               ) -> Deferred[Data]:
        """Store C{value} at C{group}/C{key} (overwriting what was there)."""
        _check_data_key(key, group)
        return ensureDeferred(cls._create(session, key, group, value))

    @classmethod
    async def _create(cls, session: Session, key: str, group: str, value: Any) -> Data:
        return cls(session, await session.request("PUT", data_path(group, key), None, value))

    @classmethod
    def remove(cls, session: Session, key: str, group: str = "default", /) -> Deferred[None]:
        """DELETE the data item C{group}/C{key}."""
        _check_data_key(key, group)
        return ensureDeferred(cls._remove(session, key, group))

    @classmethod
    async def _remove(cls, session: Session, key: str, group: str) -> None:
        await session.request("DELETE", data_path(group, key))

    @property
    def key(self) -> str:
        """The item's key, unique in its group."""
        return str(self.document.get("key"))

    @property
    def group(self) -> str:
        """The item's group."""
        return str(self.document.get("group"))

    @property
    def value(self) -> Any:
        """The item's value, any JSON (settable; L{save} stores it)."""
        return self.document.get("value")

    @value.setter
    def value(self, value: Any) -> None:
        self.document["value"] = value

    def _path(self) -> str:
        return data_path(self.group, self.key)

    def save(self) -> Deferred[Data]:
        """PUT the value, then take the server's document; this object."""
        return ensureDeferred(self._save())

    async def _save(self) -> Data:
        self.document = await self._session.request("PUT", self._path(), None, self.value)
        return self

    def _channel_name(self) -> str:
        return f"data:{self.group}:{self.key}"

    def __repr__(self) -> str:
        return f"<Data {self.group}/{self.key}>"


def _check_data_key(key: Any, group: Any) -> None:
    if not isinstance(key, str) or not key:
        raise RuntimeError("a data item's key is a non-empty string")
    if not isinstance(group, str) or not group:
        raise RuntimeError("a data item's group is a non-empty string")


def data_path(group: str, key: str) -> str:
    """The path of the API of the data item C{group}/C{key}."""
    return f"/api/data/{segment(group, 'group')}/{segment(key, 'key')}"


def segment(value: str, what: str = "uuid") -> str:
    """C{value} escaped as one segment of a URL path."""
    try:
        return quote(value, safe="")
    except UnicodeEncodeError:  # a lone surrogate: no document can be named so
        raise RuntimeError(f"the {what} {value!r:.40} is not valid text") from None


def query_params(params: Any, kwargs: dict[str, Any],
                 fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """The query parameters of a C{find}: C{params}, then C{kwargs}, then C{fixed}."""
    if params is not None and not isinstance(params, Mapping):
        raise RuntimeError("params is a dict of query parameters")
    return {**(params or {}), **kwargs, **(fixed or {})}
