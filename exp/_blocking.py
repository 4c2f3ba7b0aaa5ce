"""
The blocking face: the documented synchronous interface on top of
L{exp.twisted}.

Each blocking object wraps one object of L{exp.twisted} (its core) and a
L{Runner}, which runs code in the reactor thread and waits for it.  A call
runs the core's call there and returns its result, wrapped in turn; an
attribute is read and written there too, never in the caller's thread on
state the reactor thread is changing.  The classes are written out, so that
C{isinstance}, C{help()}, C{inspect.signature}, mypy and IDEs see what each
call takes and returns.

By default the reactor runs in a thread of crochet's (L{CrochetRunner});
tests and programs that run a reactor of their own inject another runner.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import crochet
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python import threadable

from exp import twisted as core
from exp._options import Options, check_options
from exp.errors import RuntimeError
from exp.twisted import ResourceList
from exp.twisted._channels import MAX_QUEUE
from exp.twisted._logs import LogShipper

_setup_lock = threading.Lock()
_started = False

B = TypeVar("B", bound="Blocking")


class _ToExpLogger(logging.Handler):
    """
    Hands Twisted's log records (crochet's C{twisted} logger) to C{exp}; the
    C{exp} logger's level decides what is shown, not the C{twisted} one's.
    """

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger("exp")
        if logger.isEnabledFor(record.levelno):
            record.name = "exp"
            logger.handle(record)


def _setup() -> None:
    """Start the reactor thread once; Twisted's log goes to the C{exp} logger."""
    global _started
    with _setup_lock:
        if _started:
            return
        twisted_logger = logging.getLogger("twisted")
        twisted_logger.addHandler(_ToExpLogger())
        twisted_logger.setLevel(logging.DEBUG)  # filtered by the exp logger's level
        twisted_logger.propagate = False
        crochet.setup()
        _started = True


# -- runners -------------------------------------------------------------------------------


class Runner(Protocol):
    """
    How the blocking face reaches the reactor, which runs in another thread
    than its callers.
    """

    def call(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """
        Run C{f(*args, **kwargs)} in the reactor thread; wait for its result
        (once fired, if it is a Deferred) and return it, or raise its
        exception.

        @raise exp.RuntimeError: if called in the reactor thread, where it
            would wait for ever.
        """

    def post(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run C{f(*args, **kwargs)} in the reactor thread soon; do not wait."""

    def in_thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """
        (In the reactor thread.) Run C{f(*args)} in a worker thread, where
        blocking calls work; a Deferred of its result.
        """


class CrochetRunner:
    """
    The default L{Runner}: the reactor runs in crochet's thread, started
    (with Twisted's log going to the C{exp} logger) when the first runner
    is made.  Ctrl-C in a call cancels it.
    """

    def __init__(self) -> None:
        _setup()
        from twisted.internet import reactor

        self._reactor: Any = reactor

    def call(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run C{f} in crochet's reactor thread; wait for its (Deferred) result."""
        if threadable.isInIOThread():
            raise RuntimeError(
                "the blocking exp API was called from the reactor thread; Twisted code"
                " must use exp.twisted (ExpService), whose calls return Deferreds"
            )
        result = crochet.run_in_reactor(lambda: maybeDeferred(f, *args, **kwargs))()
        try:
            return result.wait(threading.TIMEOUT_MAX)
        except KeyboardInterrupt:
            result.cancel()
            try:  # take the cancelled call's outcome, or crochet logs it as unhandled
                result.wait(1)
            except Exception:
                pass
            raise

    def post(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run C{f} in the reactor thread soon (C{callFromThread})."""
        self._reactor.callFromThread(f, *args, **kwargs)

    def in_thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """Run C{f} in the reactor's thread pool (C{deferToThread})."""
        from twisted.internet.threads import deferToThread

        return deferToThread(f, *args)


_default_runner: CrochetRunner | None = None


def default_runner() -> Runner:
    """The L{CrochetRunner} of this process (its reactor thread starts with it)."""
    global _default_runner
    with _setup_lock:
        runner = _default_runner
    if runner is None:
        runner = CrochetRunner()
        with _setup_lock:
            _default_runner = _default_runner or runner
            runner = _default_runner
    return runner


# -- the wrapping --------------------------------------------------------------------------


def _wrap(value: Any, runner: Runner) -> Any:
    """Blocking objects for what the core answered (lists and their items too)."""
    if isinstance(value, ResourceList):
        wrapped = ResourceList([_wrap(v, runner) for v in value], {"total": value.total})
        wrapped.__dict__.update(value.__dict__)
        return wrapped
    if isinstance(value, list):
        return [_wrap(v, runner) for v in value]
    for kind in type(value).__mro__:
        face = _FACES.get(kind)
        if face is not None:
            return face(value, runner)
    return value


class Blocking:
    """
    A blocking view of an object of L{exp.twisted}, its core: calls run in
    the reactor thread and return their results; attributes are read and
    written there too.  Two views of one core are equal.
    """

    __slots__ = ("_core", "_runner")

    _core: Any

    def __init__(self, core: Any, runner: Runner | None = None) -> None:
        """
        @param core: the object of L{exp.twisted}.
        @param runner: runs code in the reactor thread (L{default_runner} by default).
        """
        self._core = core
        self._runner = runner if runner is not None else default_runner()

    def _call(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """C{f(*args, **kwargs)} in the reactor thread; its result, wrapped."""
        return _wrap(self._runner.call(f, *args, **kwargs), self._runner)

    def _get(self, name: str) -> Any:
        """The core's attribute C{name}, read in the reactor thread, wrapped."""
        return self._call(getattr, self._core, name)

    def _set(self, name: str, value: Any) -> None:
        """Set the core's attribute C{name} in the reactor thread."""
        self._runner.call(setattr, self._core, name, value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Blocking) and other._core is self._core

    def __hash__(self) -> int:
        return hash(self._core)

    def __repr__(self) -> str:
        text: str = self._runner.call(repr, self._core)
        return text


# -- the network ---------------------------------------------------------------------------


class Handle(Blocking):
    """What L{Exp.on} returns: C{cancel()} stops the callbacks."""

    __slots__ = ()
    _core: core.Handle

    def cancel(self) -> None:
        """Call the callback no more (calling twice is harmless)."""
        self._call(self._core.cancel)


class Channel(Blocking):
    """A named channel of the organization; cheap, no I/O until used."""

    __slots__ = ()
    _core: core.Channel

    @property
    def name(self) -> str:
        """The channel's name."""
        return str(self._get("name"))

    @property
    def system(self) -> bool:
        """Whether it carries server notifications (nobody may broadcast on it)."""
        return bool(self._get("system"))

    @property
    def consumer(self) -> bool:
        """Whether it is a consumer channel, the only kind consumer apps may use."""
        return bool(self._get("consumer"))

    @property
    def id(self) -> str:
        """The channel's id on the wire."""
        return str(self._get("id"))

    def broadcast(self, name: str, payload: Any = None, timeout: float = 0.1) -> list[Any]:
        """
        Send a broadcast; block about C{timeout} seconds, then return the
        payloads of the responses.

        @raise TypeError: if C{payload} is not JSON-serializable.
        """
        return list(self._call(self._core.broadcast, name, payload, timeout))

    def fling(self, payload: Any = None, timeout: float = 0.1) -> list[Any]:
        """A broadcast named C{fling}."""
        return list(self._call(self._core.fling, payload, timeout))

    def identify(self, timeout: float = 0.1) -> list[Any]:
        """A broadcast named C{identify}."""
        return list(self._call(self._core.identify, timeout))

    def listen(self, name: str, callback: Callable[[Broadcast], Any] | None = None,
               timeout: float = 10, max_age: float = 60,
               max_queue: int = MAX_QUEUE) -> Listener:
        """
        A listener for broadcasts named C{name}, returned once the server
        confirms the subscription (L{exp.NetworkError} after C{timeout}
        seconds).

        @param callback: called with each L{Broadcast} in a worker thread,
            where blocking calls work; without one, broadcasts are queued
            for L{Listener.wait}.
        @param max_age: seconds a broadcast stays queued for L{Listener.wait}.
        @param max_queue: the most broadcasts queued for L{Listener.wait}
            (the oldest is dropped past it), or handed to C{callback} and not
            finished (a new one is dropped past it).
        """
        handler: Any = callback
        if callable(callback):
            handler = _in_worker_thread(callback, self._runner)
        return self._call(self._core.listen, name, handler, timeout, max_age, max_queue)


def _in_worker_thread(callback: Callable[[Broadcast], Any],
                      runner: Runner) -> Callable[[core.Broadcast], Deferred[Any]]:
    """A listener callback that runs C{callback} in a worker thread, on a blocking view."""

    def run(broadcast: core.Broadcast) -> Deferred[Any]:
        return runner.in_thread(callback, Broadcast(broadcast, runner))

    return run


class Listener(Blocking):
    """Receives the broadcasts of one name on a channel (see L{Channel.listen})."""

    __slots__ = ()
    _core: core.Listener

    @property
    def channel(self) -> Channel:
        """The channel listened on."""
        return self._get("channel")

    @property
    def name(self) -> str:
        """The name of the broadcasts received."""
        return str(self._get("name"))

    @property
    def cancelled(self) -> bool:
        """Whether L{cancel} was called (or the instance stopped)."""
        return bool(self._get("cancelled"))

    def wait(self, timeout: float | None = 0) -> Broadcast | None:
        """
        The oldest queued broadcast, or the next one to arrive within
        C{timeout} seconds (C{None} waits for ever); C{None} on timeout.
        """
        return self._call(self._core.wait, timeout)

    def cancel(self) -> None:
        """Receive nothing more; pending waits answer C{None}. Cannot be undone."""
        self._call(self._core.cancel)


class Broadcast(Blocking):
    """One broadcast received by a listener."""

    __slots__ = ()
    _core: core.Broadcast

    @property
    def name(self) -> str | None:
        """The broadcast's name."""
        return self._get("name")

    @property
    def payload(self) -> Any:
        """The broadcast's payload: this listener's own copy."""
        return self._get("payload")

    @property
    def channel(self) -> Channel:
        """The channel it came on."""
        return self._get("channel")

    @property
    def id(self) -> str | None:
        """The id the server gave it."""
        return self._get("id")

    def respond(self, payload: Any = None) -> None:
        """
        Send a response to the broadcaster.

        @raise TypeError: if C{payload} is not JSON-serializable.
        """
        self._call(self._core.respond, payload)


# -- resources -----------------------------------------------------------------------------


class _Stored(Blocking):
    """A document stored at a path of the API."""

    __slots__ = ()
    _core: Any

    @property
    def document(self) -> dict[str, Any]:
        """
        The raw document, a dict (assigning anything else raises
        L{exp.RuntimeError}).  It is the resource's own: change it between
        calls, not while another thread calls L{refresh} or C{save}.
        """
        return self._get("document")

    @document.setter
    def document(self, value: dict[str, Any]) -> None:
        self._set("document", value)

    def refresh(self: B) -> B:
        """GET the document again; this object."""
        self._call(self._core.refresh)
        return self

    def delete(self) -> None:
        """DELETE the document."""
        self._call(self._core.delete)

    def get_channel(self, system: bool = False, consumer: bool = False) -> Channel:
        """The channel of this document (system notifications: C{system=True})."""
        return self._call(self._core.get_channel, system, consumer)


class Resource(_Stored):
    """A document of the API named by its uuid."""

    __slots__ = ()

    @property
    def uuid(self) -> str | None:
        """The document's uuid."""
        return self._get("uuid")

    @property
    def name(self) -> str | None:
        """The C{name} field of the document (settable)."""
        return self._get("name")

    @name.setter
    def name(self, value: str) -> None:
        self._set("name", value)

    @property
    def subtype(self) -> str | None:
        """The C{subtype} field of the document."""
        return self._get("subtype")

    def save(self: B) -> B:
        """PATCH the document, then take the server's; this object."""
        self._call(self._core.save)
        return self


class _Located(Resource):
    """Devices and things: they have a location and zones in it."""

    __slots__ = ()

    def get_location(self) -> Location | None:
        """The location named by the document; C{None} if there is none."""
        return self._call(self._core.get_location)

    def get_zones(self) -> list[Zone]:
        """The zones of the location that the document names ([] if none)."""
        return self._call(self._core.get_zones)


class Device(_Located):
    """A device: a player, a kiosk, a screen."""

    __slots__ = ()
    _core: core.Device

    def get_experience(self) -> Experience | None:
        """The experience named by the document; C{None} if there is none."""
        return self._call(self._core.get_experience)


class Thing(_Located):
    """A thing: something with a location that is not a device."""

    __slots__ = ()
    _core: core.Thing


class Experience(Resource):
    """An experience: what devices show."""

    __slots__ = ()
    _core: core.Experience

    def get_devices(self, params: dict[str, Any] | None = None,
                    **kwargs: Any) -> ResourceList[Device]:
        """The devices of this experience (further query parameters as C{find_devices})."""
        return self._call(self._core.get_devices, params, **kwargs)


class Location(Resource):
    """A location: a place with devices, things, zones and a layout image."""

    __slots__ = ()
    _core: core.Location

    def get_devices(self, params: dict[str, Any] | None = None,
                    **kwargs: Any) -> ResourceList[Device]:
        """The devices at this location (further query parameters as C{find_devices})."""
        return self._call(self._core.get_devices, params, **kwargs)

    def get_things(self, params: dict[str, Any] | None = None,
                   **kwargs: Any) -> ResourceList[Thing]:
        """The things at this location (further query parameters as C{find_things})."""
        return self._call(self._core.get_things, params, **kwargs)

    def get_zones(self) -> list[Zone]:
        """The zones of this location (from its document; no I/O)."""
        return self._call(self._core.get_zones)

    def get_layout_url(self) -> str:
        """The URL of the layout image, with the restricted token."""
        return str(self._call(self._core.get_layout_url))


class Zone(Blocking):
    """A zone of a location; it is saved and refreshed through its location."""

    __slots__ = ()
    _core: core.Zone

    @property
    def location(self) -> Location:
        """The location whose document holds this zone."""
        return self._get("location")

    @property
    def document(self) -> dict[str, Any]:
        """The zone's part of the location's document, a dict."""
        return self._get("document")

    @document.setter
    def document(self, value: dict[str, Any]) -> None:
        self._set("document", value)

    @property
    def key(self) -> str | None:
        """The zone's key, unique in its location."""
        return self._get("key")

    @property
    def name(self) -> str | None:
        """The zone's name (settable)."""
        return self._get("name")

    @name.setter
    def name(self, value: str) -> None:
        self._set("name", value)

    def get_location(self) -> Location:
        """The zone's location."""
        return self._call(self._core.get_location)

    def get_devices(self) -> ResourceList[Device]:
        """The devices in this zone."""
        return self._call(self._core.get_devices)

    def get_things(self) -> ResourceList[Thing]:
        """The things in this zone."""
        return self._call(self._core.get_things)

    def save(self) -> Zone:
        """Save the location; this zone, with the server's document."""
        self._call(self._core.save)
        return self

    def refresh(self) -> Zone:
        """Refresh the location; this zone, with the server's document."""
        self._call(self._core.refresh)
        return self

    def get_channel(self, system: bool = False, consumer: bool = False) -> Channel:
        """The channel of this zone (system notifications: C{system=True})."""
        return self._call(self._core.get_channel, system, consumer)


class Feed(Resource):
    """A data feed: a weather, RSS, JSON or other source the server reads."""

    __slots__ = ()
    _core: core.Feed

    def get_data(self, **params: Any) -> Any:
        """The feed's decoded data (dynamic feeds: C{searchValue=...})."""
        return self._call(self._core.get_data, **params)


class Content(Resource):
    """An item of the content tree: a folder, a file, an app or a URL (read-only)."""

    __slots__ = ()
    _core: core.Content

    def get_children(self, params: dict[str, Any] | None = None,
                     **kwargs: Any) -> ResourceList[Content]:
        """The items of this folder (further query parameters as C{find_content})."""
        return self._call(self._core.get_children, params, **kwargs)

    def get_url(self) -> str | None:
        """
        The delivery URL of a file, or of an app's C{index.html}; a URL
        item's own URL; C{None} for folders.
        """
        return self._call(self._core.get_url)

    def has_variant(self, name: str) -> bool:
        """Whether the item has a variant C{name} (e.g. C{small}, of an image)."""
        return bool(self._call(self._core.has_variant, name))

    def get_variant_url(self, name: str) -> str | None:
        """The delivery URL of the variant C{name}, or C{None} if there is none."""
        return self._call(self._core.get_variant_url, name)


class Data(_Stored):
    """A data item of the key/value store: C{key}, C{group} and a settable C{value}."""

    __slots__ = ()
    _core: core.Data

    @property
    def key(self) -> str:
        """The item's key, unique in its group."""
        return str(self._get("key"))

    @property
    def group(self) -> str:
        """The item's group."""
        return str(self._get("group"))

    @property
    def value(self) -> Any:
        """The item's value, any JSON (settable; L{save} stores it)."""
        return self._get("value")

    @value.setter
    def value(self, value: Any) -> None:
        self._set("value", value)

    def save(self) -> Data:
        """PUT the value, then take the server's document; this object."""
        self._call(self._core.save)
        return self


#: The blocking class of each class of the core.
_FACES: dict[type, type[Blocking]] = {
    core.Handle: Handle, core.Channel: Channel, core.Listener: Listener,
    core.Broadcast: Broadcast, core.Resource: Resource, core.Device: Device,
    core.Thing: Thing, core.Experience: Experience, core.Location: Location,
    core.Zone: Zone, core.Feed: Feed, core.Content: Content, core.Data: Data,
}


# -- an instance -----------------------------------------------------------------------------


class _ShippingHandler(logging.Handler):
    """Hands log records to a L{LogShipper} in the reactor thread."""

    def __init__(self, shipper: LogShipper, level: int, runner: Runner) -> None:
        super().__init__(level)
        self._shipper = shipper
        self._runner = runner

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "exp" and record.levelno < logging.WARNING:
            return  # Twisted's own chatter, bridged by _ToExpLogger
        try:
            message = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._runner.post(self._shipper.add, record.levelname.lower(), message,
                          record.created, logger=record.name)


class Exp(Blocking):
    """
    One started SDK instance (what C{exp.start} returns): the calls of
    L{exp.twisted.ExpService}, blocking.
    """

    __slots__ = ()
    _core: core.ExpService
    _log = Logger()

    @property
    def service(self) -> core.ExpService:
        """The L{exp.twisted.ExpService} underneath (for use in the reactor thread)."""
        return self._core

    @property
    def options(self) -> Options:
        """The options in use (once a pairing device is paired, with its credentials)."""
        return self._get("options")

    @property
    def is_connected(self) -> bool:
        """Whether the network connection is up."""
        return bool(self._get("is_connected"))

    @property
    def auth(self) -> dict[str, Any]:
        """The current auth payload."""
        return self._get("auth")

    @property
    def identity(self) -> dict[str, Any]:
        """The identity of the current auth payload (a copy)."""
        return self._get("identity")

    @property
    def pairing_code(self) -> str | None:
        """The code to pair this device with, while it is unpaired."""
        return self._get("pairing_code")

    def whenConnected(self) -> None:
        """Return once the network connection is up."""
        self._call(self._core.whenConnected)

    def get_auth(self) -> dict[str, Any]:
        """The current auth payload, refreshed first if it is due."""
        return self._call(self._core.get_auth)

    def on(self, name: str, callback: Callable[..., Any]) -> Handle:
        """
        Call C{callback} (in a worker thread) on every event C{name}:
        C{online}, C{offline}, C{update} (with the new auth payload) or
        C{error} (with the fatal error).
        """
        runner = self._runner

        def threaded(*args: Any) -> None:
            runner.in_thread(callback, *args).addErrback(
                lambda f: self._log.failure("a callback of the {name} event failed", f,
                                            name=name))

        return self._call(self._core.on, name, threaded)

    def log_handler(self, level: int = logging.INFO) -> logging.Handler:
        """
        A stdlib C{logging} handler that ships records to EXP in batches,
        never blocking or failing the program (C{logging.getLogger().addHandler(
        instance.log_handler())}).
        """
        shipper: LogShipper = self._runner.call(self._core.log_observer)
        return _ShippingHandler(shipper, level, self._runner)

    def stop(self) -> None:
        """Stop this instance: listeners cancelled, connections closed."""
        _forget(self)
        self._runner.call(_stop, self._core)

    # -- the raw API -----------------------------------------------------------------

    def get(self, path: str, params: Any = None) -> Any:
        """GET C{path} of the API; the decoded JSON (C{None} when empty)."""
        return self._call(self._core.get, path, params)

    def post(self, path: str, payload: Any = None, params: Any = None) -> Any:
        """POST C{payload} (any JSON) to C{path} of the API; the decoded JSON answer."""
        return self._call(self._core.post, path, payload, params)

    def patch(self, path: str, payload: Any = None, params: Any = None) -> Any:
        """PATCH C{path} of the API with C{payload}; the decoded JSON answer."""
        return self._call(self._core.patch, path, payload, params)

    def put(self, path: str, payload: Any = None, params: Any = None) -> Any:
        """PUT C{payload} at C{path} of the API; the decoded JSON answer."""
        return self._call(self._core.put, path, payload, params)

    def delete(self, path: str, params: Any = None) -> Any:
        """DELETE C{path} of the API; the decoded JSON answer (C{None} when empty)."""
        return self._call(self._core.delete, path, params)

    # -- the network ----------------------------------------------------------------

    def get_channel(self, name: str, system: bool = False, consumer: bool = False) -> Channel:
        """A channel object (no I/O); C{system}: server notifications (listen only)."""
        return self._call(self._core.get_channel, name, system, consumer)

    # -- resources ------------------------------------------------------------------

    def get_device(self, uuid: str | None = None) -> Device | None:
        """The device C{uuid}; C{None} if there is none (or no uuid)."""
        return self._call(self._core.get_device, uuid)

    def find_devices(self, params: dict[str, Any] | None = None,
                     **kwargs: Any) -> ResourceList[Device]:
        """The devices that match the query parameters C{params} and C{kwargs}."""
        return self._call(self._core.find_devices, params, **kwargs)

    def create_device(self, document: dict[str, Any] | None = None) -> Device:
        """A new device with C{document} (C{{}} by default)."""
        return self._call(self._core.create_device, document)

    def delete_device(self, uuid: str) -> None:
        """Delete the device C{uuid}."""
        self._call(self._core.delete_device, uuid)

    def get_current_device(self) -> Device | None:
        """This device's document; C{None} for users and consumer apps."""
        return self._call(self._core.get_current_device)

    def get_thing(self, uuid: str | None = None) -> Thing | None:
        """The thing C{uuid}; C{None} if there is none (or no uuid)."""
        return self._call(self._core.get_thing, uuid)

    def find_things(self, params: dict[str, Any] | None = None,
                    **kwargs: Any) -> ResourceList[Thing]:
        """The things that match the query parameters C{params} and C{kwargs}."""
        return self._call(self._core.find_things, params, **kwargs)

    def create_thing(self, document: dict[str, Any] | None = None) -> Thing:
        """A new thing with C{document} (C{{}} by default)."""
        return self._call(self._core.create_thing, document)

    def delete_thing(self, uuid: str) -> None:
        """Delete the thing C{uuid}."""
        self._call(self._core.delete_thing, uuid)

    def get_experience(self, uuid: str | None = None) -> Experience | None:
        """The experience C{uuid}; C{None} if there is none (or no uuid)."""
        return self._call(self._core.get_experience, uuid)

    def find_experiences(self, params: dict[str, Any] | None = None,
                         **kwargs: Any) -> ResourceList[Experience]:
        """The experiences that match the query parameters C{params} and C{kwargs}."""
        return self._call(self._core.find_experiences, params, **kwargs)

    def create_experience(self, document: dict[str, Any] | None = None) -> Experience:
        """A new experience with C{document} (C{{}} by default)."""
        return self._call(self._core.create_experience, document)

    def delete_experience(self, uuid: str) -> None:
        """Delete the experience C{uuid}."""
        self._call(self._core.delete_experience, uuid)

    def get_current_experience(self) -> Experience | None:
        """The experience of this device, if any."""
        return self._call(self._core.get_current_experience)

    def get_location(self, uuid: str | None = None) -> Location | None:
        """The location C{uuid}; C{None} if there is none (or no uuid)."""
        return self._call(self._core.get_location, uuid)

    def find_locations(self, params: dict[str, Any] | None = None,
                       **kwargs: Any) -> ResourceList[Location]:
        """The locations that match the query parameters C{params} and C{kwargs}."""
        return self._call(self._core.find_locations, params, **kwargs)

    def create_location(self, document: dict[str, Any] | None = None) -> Location:
        """A new location with C{document} (C{{}} by default)."""
        return self._call(self._core.create_location, document)

    def delete_location(self, uuid: str) -> None:
        """Delete the location C{uuid}."""
        self._call(self._core.delete_location, uuid)

    def get_current_location(self) -> Location | None:
        """The location of this device, if any."""
        return self._call(self._core.get_current_location)

    def get_current_zones(self) -> list[Zone]:
        """The zones of this device's location it is in ([] if none)."""
        return self._call(self._core.get_current_zones)

    def get_feed(self, uuid: str | None = None) -> Feed | None:
        """The feed C{uuid}; C{None} if there is none (or no uuid)."""
        return self._call(self._core.get_feed, uuid)

    def find_feeds(self, params: dict[str, Any] | None = None,
                   **kwargs: Any) -> ResourceList[Feed]:
        """The feeds that match the query parameters C{params} and C{kwargs}."""
        return self._call(self._core.find_feeds, params, **kwargs)

    def create_feed(self, document: dict[str, Any] | None = None) -> Feed:
        """A new feed with C{document} (C{{}} by default)."""
        return self._call(self._core.create_feed, document)

    def delete_feed(self, uuid: str) -> None:
        """Delete the feed C{uuid}."""
        self._call(self._core.delete_feed, uuid)

    def get_content(self, uuid: str | None = None) -> Content | None:
        """The content item C{uuid}; C{None} if there is none (or no uuid)."""
        return self._call(self._core.get_content, uuid)

    def find_content(self, params: dict[str, Any] | None = None,
                     **kwargs: Any) -> ResourceList[Content]:
        """The content items that match the query parameters C{params} and C{kwargs}."""
        return self._call(self._core.find_content, params, **kwargs)

    def get_data(self, key: str | None = None, group: str = "default") -> Data | None:
        """The data item C{group}/C{key}; C{None} if there is none (or no key or group)."""
        return self._call(self._core.get_data, key, group)

    def find_data(self, params: dict[str, Any] | None = None,
                  **kwargs: Any) -> ResourceList[Data]:
        """The data items that match the query parameters C{params} and C{kwargs}."""
        return self._call(self._core.find_data, params, **kwargs)

    def create_data(self, key: str, group: str = "default", value: Any = None) -> Data:
        """Store C{value} (any JSON) at C{group}/C{key}, overwriting what was there."""
        return self._call(self._core.create_data, key, group, value)

    def delete_data(self, key: str, group: str = "default") -> None:
        """Delete the data item C{group}/C{key}."""
        self._call(self._core.delete_data, key, group)


def _stop(service: core.ExpService) -> Deferred[None] | None:
    """Stop C{service} unless it has been stopped (in the reactor thread)."""
    return None if service.session.stopped else service.stopService()


# -- the started instances ---------------------------------------------------------------

_instances: list[Exp] = []
_instances_lock = threading.Lock()


def _forget(instance: Exp) -> None:
    with _instances_lock:
        if instance in _instances:
            _instances.remove(instance)


def start(*, runner: Runner | None = None, **options: Any) -> Exp:
    """
    Authenticate and start an SDK instance; return it once authenticated.

    Options: C{username}, C{password}, C{organization} (a user) · C{uuid},
    C{secret} (a device) · C{uuid}, C{api_key} (a consumer app) ·
    C{allow_pairing} · C{host} · C{enable_network} · C{auth}.

    @param runner: runs the calls in the reactor thread; by default crochet's
        (L{default_runner}), started with the first instance.
    @raise exp.RuntimeError: if the options are invalid or incomplete.
    @raise exp.AuthenticationError: if the server refuses the credentials.
    """
    check_options(**options)
    if runner is None:
        runner = default_runner()

    async def begin() -> core.ExpService:
        service = core.ExpService(**options)
        service.startService()
        try:
            await service.whenAuthenticated()
        except BaseException:
            await service.stopService()
            raise
        return service

    instance = Exp(runner.call(lambda: Deferred.fromCoroutine(begin())), runner)
    with _instances_lock:
        _instances.append(instance)
    return instance


def stop() -> None:
    """Stop every started instance."""
    with _instances_lock:
        instances = list(_instances)
    for instance in instances:
        instance.stop()


def current() -> Exp:
    """
    The most recently started instance that is still running.

    @raise exp.RuntimeError: if there is none.
    """
    with _instances_lock:
        if not _instances:
            raise RuntimeError("no EXP instance is running: call exp.start(...) first")
        return _instances[-1]
