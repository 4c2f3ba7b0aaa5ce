"""
Channels, broadcasts, resources and log shipping on a session spy
(L{exp.twisted.testing.session_spy}): what each asks of its session, with
no server.  The live session is covered end to end by the other SDK tests.
"""

from __future__ import annotations

import builtins
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel

from exp.errors import NetworkError, RuntimeError
from exp.protocol import encode_channel
from exp.twisted import Channel, Content, Data, Device, Experience, Location, Session, Zone
from exp.twisted._calls import Method
from exp.twisted._logs import LogShipper
from exp.twisted.testing import SessionCall, SessionSpy, session_spy


def result(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has fired (its exception raised)."""
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    assert outcome, "the Deferred has not fired"
    if hasattr(outcome[0], "raiseException"):
        outcome[0].raiseException()
    return outcome[0]


def only(calls: list[SessionCall]) -> SessionCall:
    [call] = calls
    calls.clear()
    return call


def test_the_spy_is_a_session() -> None:
    """The spy offers what a Session is (checked by the type checker, and here)."""
    spy: Session = session_spy()[0]
    assert spy.organization == "scala" and spy.auth is not None and not spy.stopped


def test_a_broadcast_is_sent_on_the_channel_id() -> None:
    """broadcast names the channel by its id (of the organization) and checks the payload."""
    session, calls = session_spy(organization="org")
    channel = Channel(session, "lobby", consumer=True)
    sent = channel.broadcast("hi", {"n": 1}, timeout=2)
    call = only(calls)
    assert call.name == "broadcast"
    assert call.args == (encode_channel("org", "lobby", False, True), "hi", {"n": 1}, 2.0)
    assert call.deferred is not None
    call.deferred.callback(["pong"])
    assert result(sent) == ["pong"]
    with pytest.raises(TypeError):
        channel.broadcast("hi", object())
    with pytest.raises(RuntimeError):
        result(channel.broadcast("hi", timeout=-1))
    assert calls == []


def test_a_channel_of_a_stopped_session_is_refused() -> None:
    """Making a channel on a stopped session raises exp.RuntimeError."""
    session, _ = session_spy()
    session.stopped = True
    with pytest.raises(RuntimeError, match="stopped"):
        Channel(session, "lobby")


def test_listen_subscribes_and_a_refusal_cancels_the_listener() -> None:
    """listen subscribes a listener with its timeout; a refusal cancels and unsubscribes it."""
    session, calls = session_spy()
    channel = Channel(session, "lobby")
    listening = channel.listen("hi", timeout=5)
    call = only(calls)
    assert call.name == "subscribe" and call.args[1] == 5
    listener = call.args[0]
    assert listener.channel_id == channel.id
    assert call.deferred is not None
    call.deferred.errback(NetworkError("refused"))
    with pytest.raises(NetworkError):
        result(listening)
    assert listener.cancelled
    assert only(calls) == SessionCall("unsubscribe", (listener,), None)


def test_a_response_names_the_broadcast_and_its_channel() -> None:
    """respond sends the payload for the broadcast's id, on its channel."""
    session, calls = session_spy()
    listening = Channel(session, "lobby").listen("hi")
    subscribe = only(calls)
    assert subscribe.deferred is not None
    subscribe.deferred.callback(None)
    listener = result(listening)
    listener.receive({"id": "b1", "channel": listener.channel_id, "name": "hi", "payload": 1})
    broadcast = result(listener.wait())
    broadcast.respond("pong")
    assert only(calls).args == (listener.channel_id, "b1", "pong")


def test_resource_classmethods_make_their_requests() -> None:
    """get, find, create and remove of a kind are requests of its collection."""
    session, calls = session_spy()
    got = Device.get(session, "a/b")
    call = only(calls)
    assert call.args[:2] == ("GET", "/api/devices/a%2Fb")
    assert call.deferred is not None
    call.deferred.callback({"uuid": "a/b", "name": "lobby"})
    device = result(got)
    assert isinstance(device, Device) and device.name == "lobby"

    found = Experience.find(session, {"name": "x"}, limit=2)
    call = only(calls)
    assert call.args[:3] == ("GET", "/api/experiences", {"name": "x", "limit": "2"})
    assert call.deferred is not None
    call.deferred.callback({"results": [{"uuid": "e"}], "total": 7})
    experiences = result(found)
    assert [e.uuid for e in experiences] == ["e"] and experiences.total == 7

    Location.create(session)
    assert only(calls).args[:4] == ("POST", "/api/locations", None, {})
    Data.remove(session, "k", "g")
    assert only(calls).args[:2] == ("DELETE", "/api/data/g/k")
    assert result(Device.get(session)) is None  # no uuid: no request
    assert calls == []
    with pytest.raises(RuntimeError, match="read-only"):
        Content.create(session, {})


def test_current_resources_of_a_device() -> None:
    """The current location and zones are those its device document names."""
    session, calls = session_spy()
    assert session.auth is not None
    session.auth["identity"] = {"type": "device", "uuid": "d", "organization": "scala"}
    zones = Zone.current(session)
    device = only(calls)
    assert device.args[:2] == ("GET", "/api/devices/d")
    assert device.deferred is not None
    device.deferred.callback({"uuid": "d", "location": {"uuid": "l", "zones": [{"key": "z1"}]}})
    location = only(calls)
    assert location.args[:2] == ("GET", "/api/locations/l")
    assert location.deferred is not None
    location.deferred.callback({"uuid": "l", "zones": [{"key": "z1"}, {"key": "z2"}]})
    assert [zone.key for zone in result(zones)] == ["z1"]


def test_the_log_shipper_posts_batches_once_logged_in() -> None:
    """A shipper waits for an auth payload, then posts its queue a batch at a time."""
    session, calls = session_spy()
    shipper = LogShipper(session, LogLevel.info, interval=1, batch_size=2)
    for n in range(3):
        shipper.add("info", f"line {n}", n)
    session.auth, auth = None, session.auth
    assert shipper.flush() is None and calls == []
    session.auth = auth
    shipper.flush()
    call = only(calls)
    assert call.name == "post_logs" and [e["message"] for e in call.args[0]] == [
        "line 0", "line 1"]
    assert call.deferred is not None
    call.deferred.errback(NetworkError("away"))
    assert shipper.queued == 3  # put back, for the next try


def test_a_row_of_the_table_makes_methods_of_the_names_it_is_given() -> None:
    """A row of a table of calls makes plain methods, and fails if it names them wrongly."""
    from exp.twisted._calls import family

    class Right:
        get_device, find_devices, create_device, delete_device = family(Device)

        def __init__(self, session: SessionSpy) -> None:
            self.session = session

    assert not any(isinstance(value, Method) for value in vars(Right).values())
    assert vars(Right)["get_device"].__qualname__ == f"{Right.__qualname__}.get_device"
    session, calls = session_spy()
    Right(session).delete_device("d")
    assert only(calls).args[:2] == ("DELETE", "/api/devices/d")
    with pytest.raises((TypeError, builtins.RuntimeError)) as raised:  # wrapped up to 3.11
        class Wrong:
            get_thing, find_things, create_thing, delete_thing = family(Device)
    assert "get_device" in str(raised.value.__cause__ or raised.value)
