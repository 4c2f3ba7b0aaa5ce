"""
The blocking face: the documented synchronous interface on top of
L{exp.twisted}.

Each blocking object wraps one object of L{exp.twisted} (its core) and a
L{Runner}, which runs code in the reactor thread and waits for it.  A call
runs the core's call there and returns its result, wrapped in turn; an
attribute is read and written there too, never in the caller's thread on
state the reactor thread is changing.  The classes are written out (an
instance's resource calls come from one table, with the service's
signatures), so that C{isinstance}, C{help()}, C{inspect.signature}, mypy
and IDEs see what each call takes and returns.

By default the reactor runs in a thread of crochet's (L{CrochetRunner});
tests and programs that run a reactor of their own inject another runner.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, overload

import crochet
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python import threadable

from exp import twisted as core
from exp._options import Options, check_options
from exp.errors import RuntimeError
from exp.twisted import ResourceList
from exp.twisted import _calls as calls
from exp.twisted._channels import MAX_QUEUE
from exp.twisted._logs import LogShipper
from exp.twisted._resources import _Located as CoreLocated
from exp.twisted._resources import _Stored as CoreStored

_setup_lock = threading.Lock()
_started = False

T = TypeVar("T")
C = TypeVar("C")
B = TypeVar("B", bound="Blocking[Any]")
S = TypeVar("S", bound=CoreStored)
R = TypeVar("R", bound=core.Resource)
L = TypeVar("L", bound=CoreLocated)


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
    if _default_runner is None:
        _default_runner = CrochetRunner()  # two threads may make one each: either serves
    return _default_runner


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


class Read(Generic[T]):
    """
    An attribute of a blocking object: the core's attribute of the same name,
    read in the reactor thread (and wrapped, if it is an object of the
    core).  A blocking class declares one with an annotation
    (C{name: Read[str]}); L{Blocking} makes it.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> Read[T]: ...

    @overload
    def __get__(self, instance: Blocking[Any], owner: type) -> T: ...

    def __get__(self, instance: Blocking[Any] | None, owner: type) -> Any:
        """The core's attribute, read in the reactor thread."""
        return self if instance is None else instance._get(self.name)


class Write(Read[T]):
    """A L{Read} attribute that is also written in the reactor thread."""

    def __set__(self, instance: Blocking[Any], value: T) -> None:
        """Set the core's attribute in the reactor thread."""
        instance._set(self.name, value)


class Blocking(Generic[C]):
    """
    A blocking view of an object of L{exp.twisted}, its core: calls run in
    the reactor thread and return their results; attributes are read and
    written there too.  Two views of one core are equal.

    A subclass declares its attributes by annotation: C{name: Read[str]}, or
    C{name: Write[str]} if it may be set.  Setting any other attribute raises
    C{AttributeError}.
    """

    __slots__ = ("_core", "_runner")

    _core: C
    _runner: Runner

    def __init__(self, core: C, runner: Runner | None = None) -> None:
        """
        @param core: the object of L{exp.twisted}.
        @param runner: runs code in the reactor thread (L{default_runner} by default).
        """
        object.__setattr__(self, "_core", core)
        object.__setattr__(self, "_runner", runner if runner is not None else default_runner())

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, annotation in vars(cls).get("__annotations__", {}).items():
            kind = str(annotation).split("[", 1)[0]
            if kind in ("Read", "Write"):
                setattr(cls, name, Read(name) if kind == "Read" else Write(name))

    def _call(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """C{f(*args, **kwargs)} in the reactor thread; its result, wrapped."""
        return _wrap(self._runner.call(f, *args, **kwargs), self._runner)

    def _get(self, name: str) -> Any:
        """The core's attribute C{name}, read in the reactor thread, wrapped."""
        return self._call(getattr, self._core, name)

    def _set(self, name: str, value: Any) -> None:
        """Set the core's attribute C{name} in the reactor thread."""
        self._runner.call(setattr, self._core, name, value)

    if not TYPE_CHECKING:  # to type checkers, a view has the attributes it declares only

        def __setattr__(self, name: str, value: Any) -> None:
            if not isinstance(getattr(type(self), name, None), Write):
                raise AttributeError(f"{type(self).__name__} has no attribute {name!r} to set")
            super().__setattr__(name, value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Blocking) and other._core is self._core

    def __hash__(self) -> int:
        return hash(self._core)

    def __repr__(self) -> str:
        text: str = self._runner.call(repr, self._core)
        return text


# -- the network ---------------------------------------------------------------------------


class Handle(Blocking[core.Handle]):
    """What L{Exp.on} returns: C{cancel()} stops the callbacks."""

    def cancel(self) -> None:
        """Call the callback no more (calling twice is harmless)."""
        self._call(self._core.cancel)


class Channel(Blocking[core.Channel]):
    """
    A named channel of the organization; cheap, no I/O until used.

    @ivar name: the channel's name.
    @ivar system: whether it carries notifications of the server, which
        nobody may broadcast on.
    @ivar consumer: whether consumer apps may use it (they may use no other).
    @ivar id: its id on the wire.
    """

    name: Read[str]
    system: Read[bool]
    consumer: Read[bool]
    id: Read[str]

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


class Listener(Blocking[core.Listener]):
    """
    Receives the broadcasts of one name on a channel (see L{Channel.listen}).

    @ivar channel: the L{Channel} listened on.
    @ivar name: the name of the broadcasts it receives.
    @ivar cancelled: whether L{cancel} was called (or the instance stopped).
    """

    channel: Read[Channel]
    name: Read[str]
    cancelled: Read[bool]

    def wait(self, timeout: float | None = 0) -> Broadcast | None:
        """
        The oldest queued broadcast, or the next one to arrive within
        C{timeout} seconds (C{None} waits for ever); C{None} on timeout.
        """
        return self._call(self._core.wait, timeout)

    def cancel(self) -> None:
        """Receive nothing more; pending waits answer C{None}. Cannot be undone."""
        self._call(self._core.cancel)


class Broadcast(Blocking[core.Broadcast]):
    """
    One broadcast received by a listener.

    @ivar name: what the broadcaster named it.
    @ivar payload: its payload: this listener's own copy.
    @ivar channel: the L{Channel} it came on.
    @ivar id: the id the server gave it, which a response names.
    """

    name: Read[str | None]
    payload: Read[Any]
    channel: Read[Channel]
    id: Read[str | None]

    def respond(self, payload: Any = None) -> None:
        """
        Send a response to the broadcaster.

        @raise TypeError: if C{payload} is not JSON-serializable.
        """
        self._call(self._core.respond, payload)


# -- resources -----------------------------------------------------------------------------


class _Stored(Blocking[S]):
    """
    A document stored at a path of the API.

    @ivar document: the raw document, a dict (assigning anything else raises
        L{exp.RuntimeError}).  It is the resource's own: change it between
        calls, not while another thread calls C{refresh} or C{save}.
    """

    document: Write[dict[str, Any]]

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


class Resource(_Stored[R]):
    """
    A document of the API named by its uuid.

    @ivar uuid: the uuid of the document.
    @ivar name: its C{name} field (settable).
    @ivar subtype: its C{subtype} field, e.g. C{scala:content:file}.
    """

    uuid: Read[str | None]
    name: Write[str | None]
    subtype: Read[str | None]

    def save(self: B) -> B:
        """PATCH the document, then take the server's; this object."""
        self._call(self._core.save)
        return self


class _Located(Resource[L]):
    """Devices and things: they have a location and zones in it."""

    def get_location(self) -> Location | None:
        """The location named by the document; C{None} if there is none."""
        return self._call(self._core.get_location)

    def get_zones(self) -> list[Zone]:
        """The zones of the location that the document names ([] if none)."""
        return self._call(self._core.get_zones)


class Device(_Located[core.Device]):
    """A device: a player, a kiosk, a screen."""

    def get_experience(self) -> Experience | None:
        """The experience named by the document; C{None} if there is none."""
        return self._call(self._core.get_experience)


class Thing(_Located[core.Thing]):
    """A thing: something with a location that is not a device."""


class Experience(Resource[core.Experience]):
    """An experience: what devices show."""

    def get_devices(self, params: dict[str, Any] | None = None,
                    **kwargs: Any) -> ResourceList[Device]:
        """The devices of this experience (further query parameters as C{find_devices})."""
        return self._call(self._core.get_devices, params, **kwargs)


class Location(Resource[core.Location]):
    """A location: a place with devices, things, zones and a layout image."""

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


class Zone(Blocking[core.Zone]):
    """
    A zone of a location; it is saved and refreshed through its location.

    @ivar location: the L{Location} whose document holds the zone.
    @ivar document: the zone's part of that document, a dict.
    @ivar key: the zone's key, unique in its location.
    @ivar name: the zone's name (settable).
    """

    location: Read[Location]
    document: Write[dict[str, Any]]
    key: Read[str | None]
    name: Write[str | None]

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


class Feed(Resource[core.Feed]):
    """A data feed: a weather, RSS, JSON or other source the server reads."""

    def get_data(self, **params: Any) -> Any:
        """The feed's decoded data (dynamic feeds: C{searchValue=...})."""
        return self._call(self._core.get_data, **params)


class Content(Resource[core.Content]):
    """An item of the content tree: a folder, a file, an app or a URL (read-only)."""

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


class Data(_Stored[core.Data]):
    """
    A data item of the key/value store.

    @ivar key: its key, unique in its group.
    @ivar group: its group.
    @ivar value: its value, any JSON (settable; L{save} stores it).
    """

    key: Read[str]
    group: Read[str]
    value: Write[Any]

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
#: The class of the core of each blocking resource.
_KINDS: dict[type[Blocking], type[core.Resource]] = {
    face: kind for kind, face in _FACES.items() if issubclass(kind, core.Resource)}


# -- the calls of each kind of resource ------------------------------------------------------

V = TypeVar("V", bound=Blocking[Any])
V_co = TypeVar("V_co", bound=Blocking[Any], covariant=True)


class Getter(Protocol[V_co]):
    """C{get_<kind>(uuid=None)}: the document C{uuid}; C{None} if there is none."""

    def __call__(self, uuid: str | None = None) -> V_co | None: ...


class Finder(Protocol[V]):
    """C{find_<kinds>(params=None, **kwargs)}: the documents that match, a list."""

    def __call__(self, params: dict[str, Any] | None = None,
                 **kwargs: Any) -> ResourceList[V]: ...


class Creator(Protocol[V_co]):
    """C{create_<kind>(document=None)}: a new document, with its uuid."""

    def __call__(self, document: dict[str, Any] | None = None) -> V_co: ...


class Deleter(Protocol):
    """C{delete_<kind>(uuid)}: the document C{uuid} deleted."""

    def __call__(self, uuid: str) -> None: ...


def _names(view: type[Blocking], count: int) -> list[str]:
    """The names of the first C{count} calls of a kind: C{get_<kind>}, C{find_<kinds>}, ..."""
    noun, plural = calls.names(_KINDS[view])
    return [f"get_{noun}", f"find_{plural}", f"create_{noun}", f"delete_{noun}"][:count]


def _like(function: Callable[..., Any], model: Callable[..., Any],
         drop_self: bool = False) -> Callable[..., Any]:
    """
    C{function}, with the name, docstring and signature of C{model}, a call
    of L{exp.twisted}; it returns what C{model}'s Deferred gives.
    """
    signature = inspect.signature(model)
    returns = str(signature.return_annotation)
    if returns.startswith("Deferred[") and returns.endswith("]"):
        returns = returns[len("Deferred["):-1]
    parameters = list(signature.parameters.values())[1 if drop_self else 0:]
    function.__name__ = function.__qualname__ = model.__name__
    function.__doc__ = model.__doc__
    function.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=parameters, return_annotation=returns)
    return function


def _method(name: str) -> calls.Method[Any]:
    """The blocking method C{name} of L{Exp}: the service's call of that name."""

    def call(self: Exp, *args: Any, **kwargs: Any) -> Any:
        return self._call(getattr(self._core, name), *args, **kwargs)

    return calls.Method(_like(call, getattr(core.ExpService, name)))


def readers(view: type[V]) -> tuple[calls.Method[Getter[V]], calls.Method[Finder[V]]]:
    """The methods C{get_<kind>} and C{find_<kinds>} of L{Exp}."""
    get, find = (_method(name) for name in _names(view, 2))
    return get, find


def family(view: type[V]) -> tuple[calls.Method[Getter[V]], calls.Method[Finder[V]],
                                   calls.Method[Creator[V]], calls.Method[Deleter]]:
    """The methods C{get_<kind>}, C{find_<kinds>}, C{create_<kind>}, C{delete_<kind>} of L{Exp}."""
    get, find, create, delete = (_method(name) for name in _names(view, 4))
    return get, find, create, delete


def _of_current(name: str) -> Callable[..., Any]:
    """The module-level call C{name}: that of the most recently started instance."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(current(), name)(*args, **kwargs)

    return _like(call, getattr(core.ExpService, name), drop_self=True)


def current_readers(view: type[V]) -> tuple[Getter[V], Finder[V]]:
    """The module-level calls C{get_<kind>} and C{find_<kinds>}."""
    get, find = (_of_current(name) for name in _names(view, 2))
    return get, find


def current_family(view: type[V]) -> tuple[Getter[V], Finder[V], Creator[V], Deleter]:
    """The module-level calls C{get_<kind>}, C{find_<kinds>}, C{create_<kind>}, C{delete_<kind>}."""
    get, find, create, delete = (_of_current(name) for name in _names(view, 4))
    return get, find, create, delete


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


class Exp(Blocking[core.ExpService]):
    """
    One started SDK instance (what C{exp.start} returns): the calls of
    L{exp.twisted.ExpService}, blocking.

    @ivar options: the options in use; once a pairing device is paired,
        with the credentials it was given.
    @ivar is_connected: whether the network connection is up.
    @ivar auth: the current auth payload.
    @ivar identity: a copy of the identity of the auth payload.
    @ivar pairing_code: the code to pair this device with, while unpaired.
    """

    options: Read[Options]
    is_connected: Read[bool]
    auth: Read[dict[str, Any]]
    identity: Read[dict[str, Any]]
    pairing_code: Read[str | None]

    _log = Logger()

    @property
    def service(self) -> core.ExpService:
        """The L{exp.twisted.ExpService} underneath (for use in the reactor thread)."""
        return self._core

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

    get_device, find_devices, create_device, delete_device = family(Device)
    """L{ExpService<exp.twisted.ExpService>}'s calls of devices, blocking."""

    def get_current_device(self) -> Device | None:
        """This device's document; C{None} for users and consumer apps."""
        return self._call(self._core.get_current_device)

    get_thing, find_things, create_thing, delete_thing = family(Thing)
    """Blocking, the service's four calls of things."""
    get_experience, find_experiences, create_experience, delete_experience = family(Experience)
    """Of experiences: get, find, create and delete, as the service's, blocking."""

    def get_current_experience(self) -> Experience | None:
        """The experience of this device, if any."""
        return self._call(self._core.get_current_experience)

    get_location, find_locations, create_location, delete_location = family(Location)
    """The locations' calls, blocking (their zones are in each location's document)."""

    def get_current_location(self) -> Location | None:
        """The location of this device, if any."""
        return self._call(self._core.get_current_location)

    def get_current_zones(self) -> list[Zone]:
        """The zones of this device's location it is in ([] if none)."""
        return self._call(self._core.get_current_zones)

    get_feed, find_feeds, create_feed, delete_feed = family(Feed)
    """Feeds' get, find, create and delete; a feed's data is C{feed.get_data()}."""
    get_content, find_content = readers(Content)
    """The content tree's two calls (it is read-only), blocking."""

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
