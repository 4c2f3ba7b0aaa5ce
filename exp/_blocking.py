"""
The blocking face: the documented synchronous interface on top of
L{exp.twisted}.  The reactor runs in a background thread (crochet); each
call runs the Deferred-native call there and waits for its result.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import crochet
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python import threadable

from exp._options import check_options
from exp.errors import RuntimeError
from exp.twisted._channels import Broadcast, Channel, Listener
from exp.twisted._logs import LogShipper
from exp.twisted._resources import Content, Data, Resource, ResourceList, Zone
from exp.twisted._service import ExpService

_WRAPPED = (Resource, Data, Zone, Content, Channel, Listener, Broadcast)
_setup_lock = threading.Lock()
_started = False


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


def _in_reactor(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run C{f} in the reactor thread; wait for its (Deferred) result."""
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


def _wrap(value: Any) -> Any:
    """Blocking proxies for what the core returns."""
    if isinstance(value, ResourceList):
        wrapped = ResourceList([_wrap(v) for v in value], {"total": value.total})
        wrapped.__dict__.update(value.__dict__)
        return wrapped
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    if isinstance(value, _WRAPPED):
        return Blocking(value)
    return value


def _unwrap(value: Any) -> Any:
    return object.__getattribute__(value, "_target") if isinstance(value, Blocking) else value


def _threaded_callback(callback: Callable[[Any], Any]) -> Callable[[Any], Deferred[Any]]:
    """A listener callback run in a worker thread, where blocking calls work."""
    from twisted.internet.threads import deferToThread

    def run(broadcast: Any) -> Deferred[Any]:
        return deferToThread(callback, _wrap(broadcast))

    return run


class _ShippingHandler(logging.Handler):
    """Hands log records to a L{LogShipper} in the reactor thread."""

    def __init__(self, shipper: LogShipper, level: int) -> None:
        super().__init__(level)
        self._shipper = shipper

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "exp" and record.levelno < logging.WARNING:
            return  # Twisted's own chatter, bridged by _ToExpLogger
        try:
            message = self.format(record)
        except Exception:
            self.handleError(record)
            return
        from twisted.internet import reactor

        reactor.callFromThread(  # type: ignore[attr-defined]
            self._shipper.add, record.levelname.lower(), message, record.created,
            logger=record.name)


class Blocking:
    """
    A blocking view of an object of L{exp.twisted}: attributes read and
    write through; methods run in the reactor and return their results.
    """

    __slots__ = ("_target",)

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        target = object.__getattribute__(self, "_target")
        value = getattr(target, name)
        if name.startswith("_") or not callable(value):
            return _wrap(value)

        def call(*args: Any, **kwargs: Any) -> Any:
            if name == "listen":
                if args[1:2] and callable(args[1]):
                    args = (args[0], _threaded_callback(args[1]), *args[2:])
                if callable(kwargs.get("callback")):
                    kwargs["callback"] = _threaded_callback(kwargs["callback"])
            args = tuple(_unwrap(a) for a in args)
            return _wrap(_in_reactor(value, *args, **kwargs))

        call.__name__ = name
        call.__doc__ = getattr(value, "__doc__", None)
        return call

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "_target"), name, value)

    def __iter__(self) -> Any:
        raise TypeError(f"{type(self._target).__name__} is not iterable in the blocking API")

    def __eq__(self, other: object) -> bool:
        return bool(self._target == _unwrap(other))

    def __hash__(self) -> int:
        return hash(self._target)

    def __repr__(self) -> str:
        return repr(self._target)

    def __dir__(self) -> list[str]:
        return [n for n in dir(self._target) if not n.startswith("_")]


class Exp(Blocking):
    """
    One started SDK instance (what C{exp.start} returns): every call of
    L{exp.twisted.ExpService}, blocking.
    """

    __slots__ = ()

    @property
    def service(self) -> ExpService:
        """The L{ExpService} underneath (for use from the reactor thread)."""
        service: ExpService = object.__getattribute__(self, "_target")
        return service

    @property
    def is_connected(self) -> bool:
        return self.service.is_connected

    def on(self, name: str, callback: Callable[..., Any]) -> Any:
        """Call C{callback} (in a worker thread) on an event; returns a handle."""
        from twisted.internet import reactor

        def threaded(*args: Any) -> None:
            reactor.callInThread(callback, *args)  # type: ignore[attr-defined]

        return _in_reactor(self.service.on, name, threaded)

    def log_handler(self, level: int = logging.INFO) -> logging.Handler:
        """
        A stdlib C{logging} handler that ships records to EXP in batches,
        never blocking or failing the program (C{logging.getLogger().addHandler(
        instance.log_handler())}).
        """
        return _ShippingHandler(_in_reactor(self.service.log_observer), level)

    def stop(self) -> None:
        """Stop this instance: listeners cancelled, connections closed."""
        _forget(self)
        if not self.service.session.stopped:
            _in_reactor(self.service.stopService)


_instances: list[Exp] = []
_instances_lock = threading.Lock()


def _forget(instance: Exp) -> None:
    with _instances_lock:
        if instance in _instances:
            _instances.remove(instance)


def start(**options: Any) -> Exp:
    """
    Authenticate and start an SDK instance; return it once authenticated.

    Options: C{username}, C{password}, C{organization} (a user) · C{uuid},
    C{secret} (a device) · C{uuid}, C{api_key} (a consumer app) ·
    C{allow_pairing} · C{host} · C{enable_network} · C{auth}.

    @raise exp.RuntimeError: if the options are invalid or incomplete.
    @raise exp.AuthenticationError: if the server refuses the credentials.
    """
    check_options(**options)
    _setup()

    async def begin() -> ExpService:
        service = ExpService(**options)
        service.startService()
        try:
            await service.whenAuthenticated()
        except BaseException:
            await service.stopService()
            raise
        return service

    def run() -> Deferred[ExpService]:
        return Deferred.fromCoroutine(begin())

    instance = Exp(_in_reactor(run))
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
    """The most recently started instance that is still running."""
    with _instances_lock:
        if not _instances:
            raise RuntimeError("no EXP instance is running: call exp.start(...) first")
        return _instances[-1]
