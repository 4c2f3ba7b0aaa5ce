"""
Property-based bad input for the SDK (issue 7): whatever a program passes to
a public call, the call returns or raises one of the documented exceptions
(L{exp.ExpError} and its subclasses; C{TypeError} only for a payload that is
not JSON), in bounded time, and the instance keeps working afterwards.

How hypothesis meets the reactor here.  pytest-twisted (1.14) knows
hypothesis: for a C{@given} test it replaces hypothesis' inner test with one
that runs each example in the reactor's greenlet and waits for it.  So
C{@given} on an C{async def} test marked C{@pytest_twisted.ensureDeferred}
really works: every example is awaited against the one server and the one
L{ExpService} of this module (module-scoped async fixtures), and a failing
example is shrunk and reported as usual; this was checked by hand with a
deliberately failing property when the module was written.  Recording cases
in a sync C{@given} function to replay them, or C{hypothesis.find}, is not
needed; what does I{not} work is C{pytest_twisted.blockon} inside a sync
C{@given} test, which already runs in the reactor's greenlet.  Examples are
derandomized (the same ones on every run, no example database), so that a
run is reproducible and nobody's run turns red by chance; the shapes that a
few hundred random examples would rarely combine (a field of a document
holding a value of the wrong type) are also tried exhaustively.

Each call is bounded by L{LIMIT} seconds with a timer that records the
timeout itself before cancelling the call: C{addTimeout} alone could not
tell a hang from a L{NetworkError}, since some calls turn a cancellation
into one.  A failure logged by Twisted while an example runs (an unhandled
error in a Deferred, a crash in a callback) fails that example too.

The blocking face cannot run here (crochet and pytest-twisted cannot share a
process): L{test_blocking_face_with_random_calls} runs a script of seeded
random calls in a subprocess against an C{exp-server} process.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import reprlib
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from zope.interface import provider

import exp
from exp._options import KNOWN, Options, check_options
from exp.errors import ApiError, ExpError
from exp.server.testing import DEMO, RunningServer, ServerProcess, start_server
from exp.twisted import ExpService
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

#: A file to append every call and its outcome to (to see what the examples do).
TRACE = os.environ.get("EXP_PROPERTIES_TRACE")
#: Seconds a single call may take before it counts as a hang.
LIMIT = 10.0
#: The server clamps broadcast timeouts to this, so that huge ones end soon.
MAX_BROADCAST = 0.1

PROPERTY = settings(
    deadline=None, database=None, derandomize=True, print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much, HealthCheck.large_base_example],
)

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlong = 60


def short(value: Any) -> str:
    return _repr.repr(value)


# -- arbitrary values ------------------------------------------------------------------

#: Text that is awkward in a URL, a JSON document or a log line.
TRICKY = ["", " ", "/", "//", ".", "..", "../..", "a/../b", "%", "%2F", "%00", "?", "#",
          "?x=1#y", "a b", "\x00", "\r\n", "\ud800", "a\udfffb", "é", "☃", "\U0001f600"]


def repeated(text: str, times: int) -> st.SearchStrategy[str]:
    """C{text * times}, built when drawn (a plain C{just} would print it whole)."""
    return st.builds(str.__mul__, st.just(text), st.just(times))


any_text = st.one_of(
    st.sampled_from(TRICKY), repeated("x", 10_000), repeated("é", 30_000),
    st.text(st.characters(codec=None, exclude_categories=[]), max_size=20),
)
numbers = st.one_of(
    st.integers(), st.floats(),
    st.sampled_from([10**400, -10**400, math.nan, math.inf, -math.inf, 1e308, -0.0]),
)


class Opaque:
    """An object JSON knows nothing about."""

    def __repr__(self) -> str:
        return "<Opaque>"


def recursive_list() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


def recursive_dict() -> dict[str, Any]:
    value: dict[str, Any] = {"a": 1}
    value["self"] = value
    return value


oddities = st.one_of(
    st.builds(Opaque), st.builds(recursive_list), st.builds(recursive_dict),
    st.frozensets(st.integers(), max_size=3), st.sets(st.integers(), max_size=3),
    st.complex_numbers(), st.just(Ellipsis), st.just(print), st.just(Decimal("0.1")),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, any_text, st.binary(max_size=8))
keys = st.one_of(any_text, numbers, st.none(), st.booleans())
values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(scalars, oddities),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.tuples(children, children),
        st.dictionaries(keys, children, max_size=4),
    ),
    max_leaves=8,
)
#: JSON payloads, including ones too big for the server (1 MiB bodies).
payloads = st.one_of(values, repeated("y", 2 << 20),
                     st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
timeouts = st.one_of(
    st.sampled_from([0, 0.0, 0.01, 0.05, -0.0, -1, math.nan, math.inf, -math.inf, 10**400,
                     -10**400, 1e308, 1e9, True, False, None, "1", "0.1", b"1", [1],
                     Decimal("0.1"), Fraction(1, 20), 1j]),
    st.floats(), st.integers(),
)
params = st.one_of(st.none(), st.dictionaries(keys, values, max_size=4), values)
#: Keyword arguments of C{find_*}: any name but the positional parameter's own.
kwargs = st.dictionaries(any_text.filter(lambda k: k != "params"), values, max_size=3)
uuids = st.one_of(any_text, any_text, values)
flags = st.one_of(st.booleans(), values)


def is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


# -- part 1: options -----------------------------------------------------------------

STRING_OPTIONS = ("username", "password", "organization", "uuid", "secret", "api_key")
FLAG_OPTIONS = ("allow_pairing", "enable_network")
URLS = ["https://api.goexp.io", "http://127.0.0.1:9000", "http://h/", "http://[", "http://[::1",
        "http://[::1]:80", "http://:80", "http://h:99999", "http://h:-1", "http://h:port",
        "http://h?q=1", "http://h#f", "ftp://h", "h", "//h", "http://\ud800", "http://h\x00",
        "http://\uff21\uff0f", "http://h/" + "é" * 100]
hosts = st.one_of(st.sampled_from(URLS), st.builds(
    lambda scheme, rest: scheme + rest,
    st.sampled_from(["http://", "https://", "HTTP://", "ftp://", ""]), any_text))
auth_payloads = st.fixed_dictionaries(
    {"token": st.one_of(st.just("token"), values),
     "expiration": st.one_of(st.just(4_000_000_000_000), numbers, values),
     "identity": st.one_of(st.fixed_dictionaries({}, optional={
         "type": st.sampled_from(["user", "device", "consumerApp"]), "paired": values,
         "uuid": any_text, "organization": any_text}), values),
     "api": st.one_of(st.fixed_dictionaries({"host": st.one_of(hosts, values)}), values),
     "network": st.one_of(st.fixed_dictionaries({"host": st.one_of(hosts, values)}),
                          values)},
    optional={"restrictedToken": values},
)
option_values = st.one_of(
    st.none(), st.booleans(), st.just("x"), any_text, numbers, st.binary(max_size=8),
    st.dictionaries(any_text, values, max_size=3), st.lists(values, max_size=3),
    hosts, auth_payloads, st.builds(Opaque),
)
option_names = st.one_of(st.sampled_from(KNOWN), st.text(min_size=1, max_size=12),
                         st.sampled_from(["user", "apiKey", "allowPairing", "Host", "timeout"]))


#: For each option, values of about the right kind (and then any value at all).
PLAUSIBLE = {
    **{name: st.one_of(st.just("x"), any_text) for name in STRING_OPTIONS},
    **{name: st.booleans() for name in FLAG_OPTIONS},
    "host": hosts, "auth": auth_payloads,
}
option_sets = st.one_of(
    st.dictionaries(option_names, option_values, max_size=6),
    st.fixed_dictionaries({}, optional={
        name: st.one_of(PLAUSIBLE[name], PLAUSIBLE[name], option_values) for name in KNOWN}),
)


def malformed(name: str, value: Any) -> bool:
    """An option whose value is obviously of the wrong kind."""
    if value is None:
        return False
    if name in STRING_OPTIONS or name == "host":
        return not isinstance(value, str) or not value
    if name in FLAG_OPTIONS:
        return not isinstance(value, bool)
    if name == "auth":
        return not isinstance(value, dict)
    return False


def assert_url(value: Any) -> None:
    from urllib.parse import urlsplit

    assert isinstance(value, str), value
    parts = urlsplit(value)
    assert parts.scheme in ("http", "https") and parts.hostname, value
    assert parts.port is None or 0 < parts.port < 65536, value


def assert_well_formed(options: Options) -> None:
    """Options that were accepted can be used as they are."""
    assert options.kind in ("user", "device", "consumerApp", "pairing", "auth"), options
    assert_url(options.host)
    for name in STRING_OPTIONS:
        value = getattr(options, name)
        assert value is None or (isinstance(value, str) and value), (name, value)
        if value is not None:
            value.encode("utf-8")  # it will go into a JSON body or a token
    assert isinstance(options.allow_pairing, bool)
    assert isinstance(options.enable_network, bool)
    auth = options.auth
    if auth is not None:
        assert isinstance(auth["token"], str), auth
        assert isinstance(auth["identity"], dict), auth
        expiration = auth["expiration"]
        assert isinstance(expiration, int | float) and not isinstance(expiration, bool), auth
        try:
            assert math.isfinite(expiration / 1000.0), auth
        except OverflowError:
            raise AssertionError(f"expiration {short(expiration)} is too large") from None
        for part in ("api", "network"):
            assert isinstance(auth[part], dict), auth
            assert_url(auth[part]["host"])


@settings(PROPERTY, max_examples=500)
@given(options=option_sets)
def test_check_options_accepts_or_names_the_offender(options: dict[str, Any]) -> None:
    """check_options returns usable Options or raises exp.RuntimeError naming an option."""
    try:
        checked = check_options(**options)
    except exp.RuntimeError as e:
        message = str(e)
        assert message
        unknown = [name for name in options if name not in KNOWN]
        wrong = [name for name in options if malformed(name, options[name])]
        if wrong and isinstance(options.get("host"), str):  # any text may be a bad URL
            wrong.append("host")
        named = unknown or wrong or list(KNOWN)
        assert any(name in message for name in named), (message, named)
        return
    assert isinstance(checked, Options)
    assert not [name for name in options if name not in KNOWN]
    assert_well_formed(checked)


SERVICE_ONLY = ("request_timeout", "retry_policy")
VALID = [{"allow_pairing": True}, {"uuid": "u", "secret": "s"}, {"uuid": "u", "api_key": "k"},
         {"username": "u", "password": "p", "organization": "o", "enable_network": False}]


@settings(PROPERTY, max_examples=300)
@given(positional=st.lists(option_values, max_size=2),
       options=st.one_of(option_sets, st.sampled_from(VALID), st.dictionaries(
           st.one_of(option_names, st.sampled_from(SERVICE_ONLY)),
           st.one_of(option_values, timeouts, st.just(lambda n: 1.0)), max_size=6)),
       extra=st.fixed_dictionaries({}, optional={
           "request_timeout": timeouts, "retry_policy": st.one_of(values, st.just(
               lambda n: 1.0))}))
def test_service_construction(positional: list[Any], options: dict[str, Any],
                              extra: dict[str, Any]) -> None:
    """
    ExpService(...) builds a service or raises exp.RuntimeError for a bad
    value; a call that does not fit its Python signature (an unknown keyword,
    more than one positional argument, host given twice) is a TypeError, as for
    any Python callable, whereas exp.start(**options) reports unknown names as
    exp.RuntimeError because its options are a documented bag of keywords.
    """
    options = {**options, **extra}
    known = set(KNOWN) | set(SERVICE_ONLY)
    misfit = (any(name not in known for name in options) or len(positional) > 1
              or (positional and "host" in options))
    try:
        service = ExpService(*positional, **options)
    except TypeError as e:
        assert misfit, e
        return
    except exp.RuntimeError as e:
        assert str(e)
        return
    assert not misfit
    assert_well_formed(service.options)
    assert not service.running
    timeout = options.get("request_timeout")
    if timeout is not None:  # it becomes the delay of every REST call's timer
        assert isinstance(timeout, int | float) and not isinstance(timeout, bool), timeout
        assert 0 < timeout < 1e300, timeout
    assert options.get("retry_policy") is None or callable(options["retry_policy"])


# -- part 2: every call against a real server -----------------------------------------------


class Logged:
    """Failures Twisted logs while this module runs (none is expected)."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def take(self) -> list[str]:
        failures, self.failures = self.failures, []
        return failures


@pytest.fixture(scope="module")
def logged() -> Iterator[Logged]:
    record = Logged()

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        failure = event.get("log_failure")
        if failure is not None:
            record.failures.append(
                f"{event.get('log_format')}: {failure.getTraceback()}")

    globalLogPublisher.addObserver(observe)
    yield record
    globalLogPublisher.removeObserver(observe)


@pytest_twisted.async_yield_fixture(scope="module")
async def server() -> AsyncIterator[RunningServer]:
    running = await start_server(max_broadcast_timeout=MAX_BROADCAST)
    yield running
    await running.stop()


class Canary:
    """The module's service, and a listener that proves its network still works."""

    def __init__(self, service: ExpService, listener: Listener) -> None:
        self.service = service
        self.listener = listener
        self.count = 0

    async def check(self, network: bool = False) -> None:
        """A normal call succeeds (and, with C{network}, a broadcast arrives)."""
        thing = await bounded("canary get_thing", lambda: self.service.get_thing("demo-thing"))
        assert isinstance(thing, Thing) and thing.uuid == "demo-thing", thing
        if network:
            self.count += 1
            channel = self.service.get_channel("canary")
            await bounded("canary broadcast", lambda: channel.broadcast("ping", self.count, 0))
            broadcast = await bounded("canary wait", lambda: self.listener.wait(LIMIT / 2))
            assert isinstance(broadcast, Broadcast), "the network stopped delivering"
            assert broadcast.payload == self.count


@pytest_twisted.async_yield_fixture(scope="module")
async def canary(server: RunningServer, logged: Logged) -> AsyncIterator[Canary]:
    service = ExpService(host=server.url, uuid=DEMO["device_uuid"],
                         secret=DEMO["device_secret"])
    service.startService()
    await service.whenAuthenticated()
    await service.whenConnected()
    listener = await service.get_channel("canary").listen("ping")
    yield Canary(service, listener)
    await service.stopService()


class Hang(AssertionError):
    pass


async def bounded(label: str, call: Callable[[], Any]) -> Any:
    """C{call()}, awaited if it is a Deferred; L{Hang} after L{LIMIT} seconds."""
    result = call()
    if isinstance(result, Coroutine):
        result = Deferred.fromCoroutine(result)
    if not isinstance(result, Deferred):
        return result
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        result.cancel()

    timer = reactor.callLater(LIMIT, expire)
    try:
        return await result
    except Exception:
        if expired:
            raise Hang(f"{label} did not finish within {LIMIT} s") from None
        raise
    finally:
        if timer.active():
            timer.cancel()


class Call:
    """One call of a public method, with what it may carry as a JSON payload."""

    def __init__(self, method: str, *args: Any, payload: tuple[Any, ...] = (),
                 **kwargs: Any) -> None:
        self.method = method
        self.args = args
        self.kwargs = kwargs
        self.payload = payload

    def __repr__(self) -> str:
        parts = [short(a) for a in self.args]
        parts += [f"{k}={short(v)}" for k, v in self.kwargs.items()]
        return f"{self.method}({', '.join(parts)})"

    async def run(self, target: Any, payload: tuple[Any, ...] = ()) -> Any:
        """
        Make the call on C{target}: its result, or the documented exception
        it raised (anything else fails the test).
        """
        try:
            result = await bounded(
                repr(self), lambda: getattr(target, self.method)(*self.args, **self.kwargs))
        except Hang:
            raise
        except Exception as e:
            assert_documented(e, self, (*self.payload, *payload))
            result = e
        if TRACE:
            with open(TRACE, "a", encoding="utf-8", errors="replace") as f:
                f.write(f"{type(target).__name__}.{self!r:.300}\n  -> {short(result)}\n")
        return result


def assert_documented(error: Exception, call: Any, payload: tuple[Any, ...]) -> None:
    if isinstance(error, TypeError) and not isinstance(error, ExpError):
        assert str(error).startswith("payload is not JSON-serializable"), (call, error)
        assert not all(is_json(p) for p in payload), (call, error)
        return
    assert isinstance(error, ExpError), (call, type(error), error)
    assert str(error), (call, type(error))
    if isinstance(error, ApiError):
        assert 400 <= error.status_code < 500, (call, error)


def calling(method: str, *args: st.SearchStrategy[Any], payload: tuple[int, ...] = (),
         **kw: st.SearchStrategy[Any]) -> st.SearchStrategy[Call]:
    """A strategy of calls of C{method}; C{payload} names the JSON arguments."""

    def build(args: tuple[Any, ...], keywords: dict[str, Any]) -> Call:
        extra = keywords.pop("**", {})
        return Call(method, *args, payload=tuple(args[i] for i in payload),
                    **keywords, **extra)

    return st.builds(build, st.tuples(*args), st.fixed_dictionaries(kw))


COLLECTIONS = {"device": Device, "thing": Thing, "experience": Experience,
               "location": Location, "feed": Feed}
GETTERS: dict[str, type[Any]] = {
    **{f"get_{name}": kind for name, kind in COLLECTIONS.items()}, "get_content": Content}
FINDERS = ["find_devices", "find_things", "find_experiences", "find_locations", "find_feeds",
           "find_content", "find_data"]

service_calls = st.one_of(
    *[calling(name, uuids) for name in GETTERS],
    *[calling(name, params, **{"**": kwargs}) for name in FINDERS],
    *[calling(f"create_{name}", payloads, payload=(0,)) for name in COLLECTIONS],
    *[calling(f"delete_{name}", uuids) for name in COLLECTIONS],
    calling("get_data", uuids, uuids), calling("get_data", uuids),
    calling("create_data", uuids, uuids, payloads, payload=(2,)),
    calling("delete_data", uuids, uuids),
    *[calling(name) for name in ("get_current_device", "get_current_experience",
                              "get_current_location", "get_current_zones", "get_auth")],
    *[calling(name, st.one_of(st.sampled_from(["/api/things", "/api/data/g/k", "/api/nothing"]),
                           uuids), params) for name in ("get", "delete")],
    *[calling(name, st.one_of(st.sampled_from(["/api/things", "/api/data/g/k", "/api/nothing"]),
                           uuids), payloads, params, payload=(1,))
      for name in ("post", "patch", "put")],
    calling("get_channel", any_text), calling("get_channel", uuids, flags, flags),
    calling("on", st.one_of(st.sampled_from(["online", "offline", "update", "error"]), uuids),
         st.one_of(st.just(lambda *args: None), values)),
)

#: What a successful call may answer.
RESULTS: dict[str, tuple[type[Any], ...]] = {
    **{name: (kind, type(None)) for name, kind in GETTERS.items()},
    **{name: (ResourceList,) for name in FINDERS},
    **{f"create_{name}": (kind,) for name, kind in COLLECTIONS.items()},
    **{f"delete_{name}": (type(None),) for name in COLLECTIONS},
    "get_data": (Data, type(None)), "create_data": (Data,), "delete_data": (type(None),),
    "get_current_device": (Device, type(None)), "get_current_zones": (list,),
    "get_current_location": (Location, type(None)),
    "get_current_experience": (Experience, type(None)),
    "get_auth": (dict,), "get_channel": (Channel,),
    "broadcast": (list,), "fling": (list,), "identify": (list,), "listen": (Listener,),
    "wait": (Broadcast, type(None)), "respond": (type(None),),
    "save": (Resource, Data, Zone), "refresh": (Resource, Data, Zone),
    "delete": (type(None),), "get_location": (Location, type(None)),
    "get_zones": (list,), "get_experience": (Experience, type(None)),
    "get_devices": (ResourceList,), "get_things": (ResourceList,),
    "get_layout_url": (str,), "get_url": (str, type(None)),
    "get_variant_url": (str, type(None)), "has_variant": (bool,),
}


def assert_result(call: Call, result: Any) -> None:
    if isinstance(result, BaseException):
        return
    expected = RESULTS.get(call.method)
    if expected is not None:
        assert isinstance(result, expected), (call, result)


async def cleanup(call: Call, result: Any) -> None:
    """Undo what a successful call left behind: listeners, handles, created documents."""
    if isinstance(result, Listener | Handle):
        result.cancel()
    elif call.method.startswith("create_") and isinstance(result, Resource | Data):
        try:
            await bounded("cleanup", result.delete)
        except ExpError:
            pass


@settings(PROPERTY, max_examples=400)
@given(call=service_calls)
@pytest_twisted.ensureDeferred
async def test_service_calls(canary: Canary, logged: Logged, call: Call) -> None:
    """Every call of ExpService returns or raises a documented exception, in time."""
    result = await call.run(canary.service)
    assert_result(call, result)
    await cleanup(call, result)
    await canary.check()
    assert logged.take() == []


names = st.one_of(st.just("event"), any_text, values)
channel_calls = st.one_of(
    calling("broadcast", names, payloads, timeouts, payload=(1,)),
    calling("broadcast", names, payloads, payload=(1,)),
    calling("broadcast", st.just("event"), payloads, timeout=timeouts, payload=(1,)),
    calling("fling", payloads, timeouts, payload=(0,)),
    calling("identify", timeouts),
    calling("listen", names),
    calling("listen", names, st.one_of(st.none(), st.just(lambda b: None), values),
            timeouts, timeouts),
    calling("listen", st.just("event"), timeout=timeouts, max_age=timeouts),
)


@settings(PROPERTY, max_examples=300)
@given(name=st.one_of(st.just("channel"), any_text), system=flags, consumer=flags,
       call=channel_calls)
@pytest_twisted.ensureDeferred
async def test_channel_calls(canary: Canary, logged: Logged, name: Any, system: Any,
                             consumer: Any, call: Call) -> None:
    """Broadcast, fling, identify and listen on any channel: documented outcomes only."""
    try:
        channel = canary.service.get_channel(name, system, consumer)
    except exp.RuntimeError:
        return
    result = await call.run(channel)
    assert_result(call, result)
    await cleanup(call, result)
    await canary.check(network=True)
    assert logged.take() == []


@settings(PROPERTY, max_examples=150)
@given(timeout=timeouts, max_age=timeouts, queued=st.booleans(), payload=payloads)
@pytest_twisted.ensureDeferred
async def test_listener_wait(canary: Canary, logged: Logged, timeout: Any, max_age: Any,
                             queued: bool, payload: Any) -> None:
    """
    listener.wait(timeout) answers a broadcast or None, or raises
    exp.RuntimeError for a timeout that is not a number of seconds; a long
    wait ends when the listener is cancelled.
    """
    service = canary.service
    channel = service.get_channel("waiting")
    listener = await Call("listen", "event", max_age=max_age).run(channel)
    if not isinstance(listener, Listener):
        listener = await bounded("listen", lambda: channel.listen("event"))
    sent = None
    if queued and is_json(payload) and len(json.dumps(payload)) < 1 << 19:
        await bounded("broadcast", lambda: channel.broadcast("event", payload, 0))
        sent = json.loads(json.dumps(payload))
        # the broadcast arrives over the socket: the canary's comes after it
        await canary.check(network=True)
    release = reactor.callLater(0.2, listener.cancel)
    try:
        result = await Call("wait", timeout).run(listener)
    finally:
        if release.active():
            release.cancel()
        listener.cancel()
    assert result is None or isinstance(result, Broadcast | ExpError), result
    if isinstance(result, Broadcast):
        assert result.payload == sent
    await canary.check(network=True)
    assert logged.take() == []


@settings(PROPERTY, max_examples=100)
@given(payload=payloads)
@pytest_twisted.ensureDeferred
async def test_broadcast_respond(canary: Canary, logged: Logged, payload: Any) -> None:
    """broadcast.respond(payload) sends JSON back to the broadcaster, or raises TypeError."""
    service = canary.service
    channel = service.get_channel("responding")
    listener = await bounded("listen", lambda: channel.listen("question"))
    try:
        asked = channel.broadcast("question", None, MAX_BROADCAST)
        broadcast = await bounded("wait", lambda: listener.wait(LIMIT / 2))
        assert isinstance(broadcast, Broadcast)
        respond = Call("respond", payload, payload=(payload,))
        result = await respond.run(broadcast)
        responses = await bounded("broadcast", lambda: asked)
    finally:
        listener.cancel()
    # a response that comes after the broadcast's (short) timeout is dropped
    if result is None:
        assert responses in ([], [json.loads(json.dumps(payload))]), responses
    else:
        assert isinstance(result, TypeError | ApiError), result
        assert not is_json(payload) or isinstance(result, ApiError), result
        assert responses == []
    await canary.check(network=True)
    assert logged.take() == []


# -- the objects the calls return ------------------------------------------------------------

#: The fields of each kind of object that its calls read.
FIELDS = {
    "device": ["location", "experience", "uuid"], "thing": ["location", "uuid"],
    "experience": ["uuid"], "location": ["zones", "uuid"], "feed": ["uuid"],
    "content": ["variants", "path", "subtype", "url", "uuid"], "zone": ["key", "name"],
    "data": ["key", "group", "value"],
}
field_values = st.one_of(
    values, st.fixed_dictionaries({}, optional={"uuid": uuids, "zones": values}),
    st.lists(st.one_of(values, st.fixed_dictionaries({}, optional={
        "key": values, "name": values})), max_size=3),
)


class Mutation:
    """A change a program may make to an object before calling it."""

    def __init__(self, kind: str, key: Any = None, value: Any = None) -> None:
        self.kind = kind
        self.key = key
        self.value = value

    def __repr__(self) -> str:
        if self.kind == "none":
            return "no change"
        if self.kind == "field":
            return f"document[{short(self.key)}] = {short(self.value)}"
        return f".{self.kind} = {short(self.value)}"

    def apply(self, target: Any) -> None:
        if self.kind == "field":
            target.document[self.key] = self.value
        elif self.kind != "none":
            setattr(target, self.kind, self.value)


def mutations(kind: str) -> st.SearchStrategy[Mutation]:
    return st.one_of(
        st.builds(Mutation, st.just("none")),
        st.builds(Mutation, st.just("field"), st.sampled_from(FIELDS[kind]), field_values),
        st.builds(Mutation, st.just("field"), any_text, values),
        st.builds(Mutation, st.just("document"), st.none(), st.one_of(values, field_values)),
        st.builds(Mutation, st.just("name"), st.none(), values),
    )


object_params = st.one_of(st.none(), st.dictionaries(
    st.one_of(any_text, st.sampled_from(["experience.uuid", "location.uuid", "parent"])),
    values, max_size=3), values)
object_kwargs = st.dictionaries(
    st.one_of(any_text, st.sampled_from(["experience.uuid", "location.uuid", "parent"]))
    .filter(lambda k: k != "params"), values, max_size=3)
common = [calling("save"), calling("refresh"), calling("delete"),
          calling("get_channel", flags, flags)]
finders = [calling("get_devices", object_params, **{"**": object_kwargs}),
           calling("get_things", object_params, **{"**": object_kwargs})]
OBJECT_CALLS = {
    "device": [*common, calling("get_location"), calling("get_zones"), calling("get_experience")],
    "thing": [*common, calling("get_location"), calling("get_zones")],
    "experience": [*common, finders[0]],
    "location": [*common, *finders, calling("get_zones"), calling("get_layout_url")],
    "feed": [*common, calling("get_data", **{"**": object_kwargs})],
    "content": [*common, calling("get_children", object_params, **{"**": object_kwargs}),
                calling("get_url"), calling("get_variant_url", values),
                calling("has_variant", values)],
    "zone": [calling("save"), calling("refresh"), calling("get_channel", flags, flags),
             calling("get_devices"), calling("get_things"), calling("get_location")],
    "data": [calling("save"), calling("refresh"), calling("delete"),
             calling("get_channel", flags, flags)],
}
object_mutations = {
    **{kind: mutations(kind) for kind in OBJECT_CALLS},
    "data": st.one_of(mutations("data"),
                      st.builds(Mutation, st.just("value"), st.none(), payloads)),
    "content": st.one_of(mutations("content"), st.builds(
        lambda name: Mutation("field", "variants", [{"name": name}]), values)),
}
object_cases = st.one_of(*[
    st.tuples(st.just(kind), object_mutations[kind], st.one_of(*calls))
    for kind, calls in OBJECT_CALLS.items()])
LOCATED = {"location": {"uuid": "demo-location", "zones": [{"key": "entrance"}]},
           "experience": {"uuid": "demo-experience"}}


async def make(service: ExpService, kind: str, index: int) -> Any:
    """A fresh object of C{kind} to call (content: an item of the demo tree)."""
    if kind in ("device", "thing"):
        return await getattr(service, f"create_{kind}")({"name": "prop", **LOCATED})
    if kind in ("location", "zone"):
        location = await service.create_location(
            {"name": "prop", "zones": [{"key": "z", "name": "Z"}]})
        return location if kind == "location" else location.get_zones()[0]
    if kind == "data":
        return await service.create_data("prop", "props", {"v": 1})
    if kind == "content":
        items = await service.find_content()
        return items[index % len(items)]
    return await getattr(service, f"create_{kind}")({"name": "prop"})


@settings(PROPERTY, max_examples=400)
@given(case=object_cases, index=st.integers(0, 20))
@pytest_twisted.ensureDeferred
async def test_object_calls(canary: Canary, logged: Logged, case: tuple[str, Mutation, Call],
                            index: int) -> None:
    """
    The calls of resources, zones, data items and content, after any change
    a program may make to their documents, names or values: documented
    outcomes only.
    """
    kind, mutation, call = case
    target = await bounded(f"make {kind}", lambda: make(canary.service, kind, index))
    owner = target.location if isinstance(target, Zone) else target
    path = None if isinstance(owner, Content) else owner._path()
    try:
        mutation.apply(target)
    except ExpError as e:
        assert_documented(e, mutation, ())
    if TRACE:
        with open(TRACE, "a", encoding="utf-8", errors="replace") as f:
            f.write(f"{kind}: {mutation!r:.200}\n")
    carried = (owner.document,) + ((owner.value,) if isinstance(owner, Data) else ())
    result = await call.run(target, carried)
    assert_result(call, result)
    if not isinstance(result, Listener | Channel) and hasattr(result, "cancel"):
        result.cancel()
    if path is not None:
        try:
            await bounded("cleanup", lambda: canary.service.delete(path))
        except ExpError:
            pass
    await canary.check()
    assert logged.take() == []


#: The calls that read each kind of object's document (and change nothing).
READERS = {
    "device": ["get_location", "get_zones", "get_experience", "get_channel", "refresh"],
    "thing": ["get_location", "get_zones", "get_channel", "refresh"],
    "location": ["get_zones", "get_layout_url", "get_devices", "get_things", "get_channel",
                 "refresh"],
    "content": ["get_url", "get_children", "get_channel", "refresh"],
    "zone": ["get_devices", "get_things", "get_location", "get_channel"],
    "data": ["get_channel", "refresh"],
    "experience": ["get_devices", "get_channel", "refresh"],
    "feed": ["get_data", "get_channel", "refresh"],
}


async def existing(service: ExpService, kind: str, index: int) -> Any:
    """A fresh copy of a demo object of C{kind}."""
    if kind == "device":
        return await service.get_device(DEMO["device_uuid"])
    if kind == "thing":
        return await service.get_thing("demo-thing")
    if kind in ("location", "zone"):
        location = await service.get_location("demo-location")
        assert location is not None
        return location if kind == "location" else location.get_zones()[0]
    if kind == "data":
        return await service.get_data("fluffy", "cats")
    if kind == "experience":
        return await service.get_experience("demo-experience")
    if kind == "feed":
        feeds = await service.find_feeds(name="reader feed")
        return feeds[0] if feeds else await service.create_feed({"name": "reader feed"})
    items = await service.find_content()
    return items[index % len(items)]


@settings(PROPERTY, max_examples=300)
@given(case=st.sampled_from(list(READERS)).flatmap(
           lambda kind: st.tuples(st.just(kind), st.sampled_from(FIELDS[kind]))),
       value=field_values, index=st.integers(0, 20))
@pytest_twisted.ensureDeferred
async def test_documents_with_fields_of_any_type(canary: Canary, logged: Logged,
                                                 case: tuple[str, str], value: Any,
                                                 index: int) -> None:
    """
    Whatever a field of a document holds (a program may set it, a server may
    send it), the calls that read it answer or raise a documented exception.
    """
    kind, field = case
    target = await bounded(f"get {kind}", lambda: existing(canary.service, kind, index))
    target.document[field] = value
    for method in READERS[kind]:
        await Call(method).run(target)
    if isinstance(target, Content):
        variants = target.document.get("variants")
        names = [v.get("name") for v in variants if isinstance(v, dict)] if isinstance(
            variants, list) else []
        for name in [*names[:3], "thumbnail"]:
            await Call("has_variant", name).run(target)
            await Call("get_variant_url", name).run(target)
    await canary.check()
    assert logged.take() == []


#: A value of each shape a field might wrongly hold.
SHAPES: list[Any] = [
    None, True, 0, 5, -1.5, math.nan, 10**400, "", "text", "\ud800", "../x", b"x", Opaque(),
    [], [5], ["x"], [None, {}], [{"key": []}, {"key": "entrance", "name": 5}],
    [{"name": Opaque()}], {}, {"uuid": 5}, {"uuid": "\ud800"}, {"uuid": "../demo-location"},
    {"uuid": "demo-location", "zones": 5}, {"uuid": "demo-location", "zones": "ab"},
    {"uuid": "demo-location", "zones": [5, "x", {"key": {}}]}, {"zones": {"key": 1}},
    [{"name": "\ud800"}], [{"name": "thumbnail"}],
    recursive_list(), recursive_dict(),
]


#: Which demo objects to try for each kind (the content tree has seven items).
INDEXES = {"content": list(range(7))}


@pytest_twisted.ensureDeferred
async def test_documents_with_fields_of_each_shape(canary: Canary, logged: Logged) -> None:
    """
    Each field a call reads, holding a value of each shape in turn: the calls
    that read it answer or raise a documented exception.
    """
    failures = []
    for kind, fields in FIELDS.items():
        for field in fields:
            for value, index in itertools.product(SHAPES, INDEXES.get(kind, [0])):
                target = await bounded(f"get {kind}", lambda kind=kind, index=index: existing(
                    canary.service, kind, index))
                target.document[field] = value
                calls = [Call(method) for method in READERS[kind]]
                if kind == "content":
                    calls += [Call(method, name) for name in ("thumbnail", "\ud800", 5)
                              for method in ("has_variant", "get_variant_url")]
                for call in calls:
                    try:
                        assert_result(call, await call.run(target))
                    except AssertionError as e:
                        failures.append(f"{kind}[{index}].document[{field!r}] ="
                                        f" {short(value)}: {str(e)[:300]}")
    assert not failures, "\n".join(failures)
    await canary.check()
    assert logged.take() == []


@pytest_twisted.ensureDeferred
async def test_broadcast_longer_than_the_request_timeout() -> None:
    """
    A broadcast may wait for responses longer than a REST call's own timeout
    (a service and a server of its own: a short request timeout, a long
    broadcast limit).
    """
    running = await start_server(max_broadcast_timeout=5.0)
    service = ExpService(host=running.url, uuid=DEMO["device_uuid"],
                         secret=DEMO["device_secret"], request_timeout=0.3)
    service.startService()
    try:
        await service.whenAuthenticated()
        responses = await bounded("broadcast", lambda: service.get_channel("slow").broadcast(
            "question", None, 0.6))
        assert responses == []
    finally:
        await service.stopService()
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_service_still_works_at_the_end(canary: Canary, logged: Logged) -> None:
    """After all the bad input, the module's service still calls, listens and broadcasts."""
    assert canary.service.is_connected
    await canary.check(network=True)
    assert logged.take() == []


# -- part 3: the blocking face --------------------------------------------------------------

#: The number of random calls the blocking script makes.
BLOCKING_CALLS = 250

BLOCKING_SCRIPT = """\
import json
import math
import random
import sys
from collections import Counter
from decimal import Decimal

import exp
from exp.errors import ExpError

URL, SEED, CALLS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
DEVICE = dict(uuid={device_uuid!r}, secret={device_secret!r}, host=URL)
rng = random.Random(SEED)
counts = Counter()
undocumented = []


class Opaque:
    pass


def text():
    return rng.choice(["", " ", "/", "..", "%", "%2F", "a/../b", "\\x00", "\\ud800", "é",
                       "\\U0001f600", "x" * 10000, "?x#y", "name", "event",
                       "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(8)))])


def value(depth=0):
    pick = rng.randrange(14 if depth < 2 else 10)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.choice([0, -1, 10**400, rng.randrange(-10**9, 10**9)])
    if pick == 3:
        return rng.choice([math.nan, math.inf, -math.inf, 1e308, -0.0, rng.random()])
    if pick in (4, 5):
        return text()
    if pick == 6:
        return rng.choice([b"\\xff", Opaque(), {{1, 2}}, Decimal("1"), 1j, print])
    if pick == 7:
        loop = [1]
        loop.append(loop)
        return loop
    if pick == 8:
        return {{"a": 1, "b": [1, 2]}}
    if pick == 9:
        return "y" * (2 << 20)
    if pick in (10, 11):
        return [value(depth + 1) for _ in range(rng.randrange(3))]
    return {{rng.choice([text(), 1, None]): value(depth + 1) for _ in range(rng.randrange(3))}}


def timeout():
    return rng.choice([0, 0.05, -1, math.nan, math.inf, -math.inf, 10**400, 1e308, "1",
                       None, True, [1], Decimal("0.1"), rng.random() / 10])


def is_json(payload):
    try:
        json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def attempt(label, f, *args, payload=(), **kwargs):
    try:
        result = f(*args, **kwargs)
    except TypeError as e:
        if str(e).startswith("payload is not JSON-serializable") and not all(
                is_json(p) for p in payload):
            counts["TypeError"] += 1
        else:
            undocumented.append(f"{{label}}: TypeError: {{e}}"[:300])
        return None
    except ExpError as e:
        counts[type(e).__name__] += 1
        return None
    except Exception as e:
        undocumented.append(f"{{label}}: {{type(e).__name__}}: {{e}}"[:300])
        return None
    counts["ok"] += 1
    return result


for _ in range(20):  # exp.start with bad options: exp.RuntimeError, before any I/O
    options = {{rng.choice(["uuid", "secret", "api_key", "username", "password",
                           "organization", "allow_pairing", "enable_network", "auth",
                           "nonsense"]): value() for _ in range(rng.randrange(4))}}
    # never None: the default host is the real EXP, and valid options would log in there
    options["host"] = rng.choice([value(), "not a url", "ftp://h", "http://["]) or "h"
    attempt("start", exp.start, **options)

instance = exp.start(**DEVICE)
NAMES = [n for n in exp.RESOURCE_CALLS]
channel = instance.get_channel("props")
listener = channel.listen("event")
done = 0
while done < CALLS:
    done += 1
    which = rng.randrange(10)
    if which < 4:
        name = rng.choice(NAMES)
        if name.startswith(("create_device", "create_thing", "create_experience",
                             "create_location", "create_feed")):
            document = value()
            attempt(name, getattr(exp.api, name), document, payload=(document,))
        elif name == "create_data":
            data = value()
            attempt(name, exp.api.create_data, value(), value(), data, payload=(data,))
        elif name.startswith("find_"):
            attempt(name, getattr(exp.api, name), value(),
                    **{{str(k): value() for k in range(rng.randrange(2))}})
        elif name.startswith("get_current"):
            attempt(name, getattr(exp.api, name))
        elif name.endswith("_data"):
            attempt(name, getattr(exp.api, name), value(), value())
        else:
            attempt(name, getattr(exp.api, name), value())
    elif which == 4:
        payload = value()
        target = attempt("get_channel", instance.get_channel, rng.choice(["props", text()]))
        if target is not None:
            attempt("broadcast", target.broadcast, rng.choice(["event", text()]), payload,
                    timeout(), payload=(payload,))
    elif which == 5:
        got = attempt("listen", channel.listen, rng.choice(["event", text()]),
                      timeout=timeout(), max_age=timeout())
        if got is not None:
            got.cancel()
    elif which == 6:
        wait = timeout()
        if wait is None or (isinstance(wait, (int, float)) and wait > 0.2):
            channel.broadcast("event", None, 0)  # something to answer at once
        got = attempt("wait", listener.wait, wait)
        if got is not None:
            payload = value()
            attempt("respond", got.respond, payload, payload=(payload,))
    elif which == 7:
        payload = value()
        attempt("raw", getattr(instance, rng.choice(["post", "put", "patch"])),
                rng.choice(["/api/things", text(), value()]), payload, value(),
                payload=(payload,))
    elif which == 8:
        attempt("raw", getattr(instance, rng.choice(["get", "delete"])),
                rng.choice(["/api/things", text(), value()]), value())
    else:
        attempt("get_channel", instance.get_channel, value(), value(), value())

things = exp.api.find_things()  # still working
counts["still working"] = int(exp.api.get_thing("demo-thing") is not None)
exp.stop()
attempt("after stop", exp.api.find_things)
print("RESULT " + json.dumps({{"counts": counts, "undocumented": undocumented,
                              "calls": done}}), flush=True)
"""

DOCUMENTED = {"ok", "TypeError", "ExpError", "RuntimeError", "AuthenticationError",
              "ApiError", "NetworkError", "UnexpectedError", "still working"}


@pytest.mark.slow
def test_blocking_face_with_random_calls(tmp_path: Path) -> None:
    """
    exp.start and exp.api with arbitrary arguments, in a subprocess: only
    documented exceptions, and the script ends on its own in time.
    """
    script = tmp_path / "random_calls.py"
    script.write_text(textwrap.dedent(BLOCKING_SCRIPT.format(
        device_uuid=DEMO["device_uuid"], device_secret=DEMO["device_secret"])),
        encoding="utf-8")
    with ServerProcess("--max-broadcast-timeout", str(MAX_BROADCAST)) as server:
        result = subprocess.run(
            [sys.executable, str(script), server.url, "7", str(BLOCKING_CALLS)],
            cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, result.stdout + result.stderr
    summary = json.loads(lines[0][len("RESULT "):])
    assert summary["undocumented"] == [], summary
    assert set(summary["counts"]) <= DOCUMENTED, summary
    assert summary["calls"] == BLOCKING_CALLS
    assert summary["counts"]["still working"] == 1, summary
    assert summary["counts"]["RuntimeError"] >= 20, summary  # at least the bad starts
