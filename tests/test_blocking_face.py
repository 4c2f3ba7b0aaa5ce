"""
The blocking face in this process, without crochet: its runner is
injected.  The reactor is pytest-twisted's; each test's blocking code runs
in a worker thread (as a script's main thread would), and the runner
reaches the reactor from there as crochet does (C{blockingCallFromThread}).
What needs crochet itself (Ctrl-C, the reactor thread of its own, logging)
is tested in subprocesses by C{test_blocking.py}.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.python import threadable

import exp
import exp._blocking
from exp import twisted as core
from exp.server.testing import DEMO, start_server
from exp.twisted import ResourceList
from exp.twisted.testing import session_spy

from ._sdk import CONSUMER, DEVICE, USER, within

REACTOR: Any = reactor


class ThreadRunner:
    """
    An L{exp.Runner} for a reactor that runs in another thread already:
    records, for each call it runs, its function's name and whether it ran in
    the reactor thread.
    """

    def __init__(self) -> None:
        self.ran: list[tuple[str, bool]] = []

    def call(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if threadable.isInIOThread():
            raise exp.RuntimeError("the blocking exp API was called from the reactor thread")

        def run() -> Any:
            self.ran.append((getattr(f, "__name__", repr(f)), threadable.isInIOThread()))
            return f(*args, **kwargs)

        return blockingCallFromThread(REACTOR, run)

    def post(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        REACTOR.callFromThread(f, *args, **kwargs)

    def in_thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThread(f, *args)


@pytest_twisted.async_yield_fixture()
async def url() -> AsyncIterator[str]:
    """A local server with the demo seed, in this reactor."""
    server = await start_server()
    yield server.url
    await server.stop()


async def blocking(script: Callable[[], Any]) -> Any:
    """Run C{script} in a worker thread (blocking calls work there); its result."""

    def run() -> Any:
        try:
            return script()
        finally:
            exp.stop()

    return await within(deferToThread(run), 60)


# -- the classes -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_results_are_instances_of_the_exp_api_classes(url: str) -> None:
    """What the calls return are exp.api objects, as 1.0.x scripts check with isinstance."""
    runner = ThreadRunner()

    def script() -> dict[str, Any]:
        user = exp.start(host=url, runner=runner, **USER)
        channel = exp.get_channel("kinds")
        listener = channel.listen("x")
        channel.broadcast("x", payload=1, timeout=0)
        broadcast = listener.wait(10)
        location = exp.get_location("demo-location")
        assert location is not None
        devices = exp.find_devices(name="lobby")
        created = exp.api.create_data(key="k", group="kinds", value=1)
        kinds = {
            "instance": isinstance(user, exp.Exp),
            "device": isinstance(exp.get_device(DEMO["device_uuid"]), exp.api.Device),
            "devices": [isinstance(d, exp.api.Device) for d in devices],
            "list": isinstance(devices, ResourceList) and devices.total == 1,
            "location": isinstance(location, exp.api.Location),
            "zones": [isinstance(z, exp.api.Zone) for z in location.get_zones()],
            "data": isinstance(created, exp.api.Data),
            "content": isinstance(exp.api.get_content("root"), exp.api.Content),
            "channel": isinstance(channel, exp.api.Channel),
            "listener": isinstance(listener, exp.api.Listener),
            "broadcast": isinstance(broadcast, exp.api.Broadcast),
            "broadcast channel": isinstance(broadcast and broadcast.channel,
                                            exp.api.Channel),
            "handle": isinstance(user.on("online", lambda: None), exp.api.Handle),
            "not twisted": not isinstance(exp.get_device(DEMO["device_uuid"]), core.Device),
        }
        created.delete()
        return kinds

    kinds = await blocking(script)
    assert kinds == {
        "instance": True, "device": True, "devices": [True], "list": True, "location": True,
        "zones": [True, True], "data": True, "content": True, "channel": True,
        "listener": True, "broadcast": True, "broadcast channel": True, "handle": True,
        "not twisted": True,
    }
    assert exp._blocking._started is False  # crochet was never set up


def _parameters(f: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    signature = inspect.signature(f)
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()
            if p.name != "self"]


#: Each blocking class, with the class of the core it wraps.
PAIRS = [(exp.Exp, core.ExpService), (exp.api.Channel, core.Channel),
         (exp.api.Listener, core.Listener), (exp.api.Broadcast, core.Broadcast),
         (exp.api.Device, core.Device), (exp.api.Thing, core.Thing),
         (exp.api.Experience, core.Experience), (exp.api.Location, core.Location),
         (exp.api.Zone, core.Zone), (exp.api.Feed, core.Feed),
         (exp.api.Content, core.Content), (exp.api.Data, core.Data),
         (exp.api.Handle, core.Handle)]


@pytest.mark.parametrize(("face", "kind"), PAIRS, ids=[face.__name__ for face, _ in PAIRS])
def test_blocking_methods_take_what_the_twisted_ones_take(face: type, kind: type) -> None:
    """Every call of a blocking class has the parameters of the Twisted call it makes."""
    calls = [name for name, value in vars(face).items()
             if not name.startswith("_") and inspect.isfunction(value)]
    for klass in face.__mro__[1:]:
        if klass.__module__ == face.__module__ and klass is not exp.Blocking:
            calls += [name for name, value in vars(klass).items()
                      if not name.startswith("_") and inspect.isfunction(value)]
    assert calls
    for name in set(calls) - {"stop", "log_handler", "listen", "on"}:
        assert _parameters(getattr(face, name)) == _parameters(getattr(kind, name)), name
        assert getattr(face, name).__doc__, name


def test_module_level_calls_are_the_instance_calls() -> None:
    """exp.get_device and friends take what instance.get_device takes; exp.api's are exp's."""
    for name in exp.INSTANCE_CALLS:
        assert _parameters(getattr(exp, name)) == _parameters(getattr(exp.Exp, name)), name
        assert getattr(exp, name).__doc__, name
        assert "current" not in inspect.signature(getattr(exp, name)).parameters
    for name in exp.RESOURCE_CALLS:
        assert getattr(exp.api, name) is getattr(exp, name)


def test_listen_and_on_take_blocking_callbacks() -> None:
    """listen and on have the parameters of the Twisted calls; their callbacks get views."""
    listen = inspect.signature(exp.api.Channel.listen)
    assert _parameters(exp.api.Channel.listen) == _parameters(core.Channel.listen)
    assert listen.parameters["callback"].annotation == "Callable[[Broadcast], Any] | None"
    assert _parameters(exp.Exp.on) == _parameters(core.ExpService.on)


def test_a_misspelled_attribute_is_an_error() -> None:
    """Setting an attribute a blocking object does not have raises AttributeError."""
    device = exp.api.Device(core.Device(session_spy()[0], {"uuid": "u", "name": "n"}),
                            _Inline())
    assert device.name == "n"
    with pytest.raises(AttributeError):
        device.nmae = "lobby"  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        device.nmae  # type: ignore[attr-defined]  # noqa: B018


class _Inline:
    """A runner that runs everything at once, in the caller's thread."""

    def call(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return f(*args, **kwargs)

    def post(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)

    def in_thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return maybeDeferred(f, *args)


# -- threads -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_attributes_are_read_and_written_in_the_reactor_thread(url: str) -> None:
    """Properties, document and value reads and writes all run in the reactor thread."""
    runner = ThreadRunner()

    def script() -> list[tuple[str, bool]]:
        exp.start(host=url, runner=runner, **USER)
        device = exp.get_device(DEMO["device_uuid"])
        data = exp.create_data("k", "threads", 1)
        assert device is not None
        runner.ran.clear()
        device.name = device.name
        device.document = dict(device.document, field=1)
        _ = device.uuid, device.subtype
        data.value = data.value + 1
        data.save()
        data.delete()
        return list(runner.ran)

    ran = await blocking(script)
    assert [name for name, _ in ran] == ["getattr", "setattr", "getattr", "setattr",
                                         "getattr", "getattr", "getattr", "setattr",
                                         "save", "delete"]
    assert all(in_reactor for _, in_reactor in ran)


@pytest_twisted.ensureDeferred
async def test_listener_callbacks_run_in_a_worker_thread(url: str) -> None:
    """A callback of listen gets an exp.api.Broadcast, in a thread that is not the reactor's."""
    runner = ThreadRunner()
    seen: list[Any] = []
    done = threading.Event()

    def callback(broadcast: exp.api.Broadcast) -> None:
        seen.append([type(broadcast), threadable.isInIOThread(), broadcast.payload])
        broadcast.respond("pong")
        done.set()

    def script() -> list[Any]:
        exp.start(host=url, runner=runner, **DEVICE)
        sender = exp.start(host=url, runner=runner, **CONSUMER)
        exp.get_channel("ping", consumer=True).listen("ping", callback)
        answers = sender.get_channel("ping", consumer=True).broadcast("ping", 7, timeout=3)
        assert done.wait(30)
        return answers

    answers = await blocking(script)
    assert seen == [[exp.api.Broadcast, False, 7]]
    assert answers == ["pong"]


@pytest_twisted.ensureDeferred
async def test_stop_and_then_every_call_raises(url: str) -> None:
    """After stop, module-level calls and the stopped instance's calls raise exp.RuntimeError."""
    runner = ThreadRunner()

    def script() -> list[str]:
        instance = exp.start(host=url, runner=runner, **USER)
        channel = instance.get_channel("stopped")
        instance.stop()
        instance.stop()  # harmless
        errors = []
        for call in (lambda: exp.get_device("x"), lambda: exp.api.find_devices(),
                     lambda: instance.get_device("x"), lambda: channel.broadcast("x"),
                     lambda: instance.get_channel("x")):
            try:
                call()
            except exp.RuntimeError as e:
                errors.append(type(e).__name__)
        return errors

    assert await blocking(script) == ["RuntimeError"] * 5
