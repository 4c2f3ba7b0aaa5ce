"""
The SDK's timing logic, driven synchronously by an injected C{task.Clock}:
the Engine.IO heartbeat, listener expiry and waits, the authenticator's
refresh, re-login and retry schedule, and the network's reconnect policy.
No test here waits for real time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from zope.interface import provider

from exp._options import check_options
from exp.errors import AuthenticationError, NetworkError, UnexpectedError
from exp.twisted._auth import Authenticator
from exp.twisted._channels import Channel, Listener
from exp.twisted._events import Events
from exp.twisted._network import Heartbeat, _reconnect_policy
from exp.twisted.testing import SessionSpy, session_spy

HOST = "http://login.invalid:1"
API = "http://api.invalid:2"
SECURE_HOST = "https://login.invalid:1"
SECURE_API = "https://api.invalid:2"


# -- the heartbeat ---------------------------------------------------------------------


class Beats:
    """A heartbeat on a clock, recording the pings it sends and its deaths."""

    def __init__(self, interval: float = 25.0, timeout: float = 20.0) -> None:
        self.clock = Clock()
        self.pings = 0
        self.deaths = 0
        self.heartbeat = Heartbeat(self.clock, interval, timeout, self._ping, self._dead)

    def _ping(self) -> None:
        self.pings += 1

    def _dead(self) -> None:
        self.deaths += 1


def test_heartbeat_pings_every_interval_while_pongs_come() -> None:
    """A ping goes out one interval after the start and one interval after each pong."""
    beats = Beats(interval=25, timeout=20)
    beats.clock.advance(24.9)
    assert beats.pings == 0
    beats.clock.advance(0.1)
    assert beats.pings == 1
    for n in range(2, 6):
        beats.clock.advance(1)
        beats.heartbeat.pong()
        beats.clock.advance(24.9)
        assert beats.pings == n - 1
        beats.clock.advance(0.1)
        assert beats.pings == n
    assert beats.deaths == 0


def test_heartbeat_without_pong_is_dead_once() -> None:
    """No pong within the timeout calls the dead callback once, and nothing more is sent."""
    beats = Beats(interval=25, timeout=20)
    beats.clock.advance(25)
    assert beats.pings == 1
    beats.clock.advance(19.9)
    assert beats.deaths == 0
    beats.clock.advance(0.1)
    assert beats.deaths == 1
    beats.clock.advance(1000)
    assert (beats.pings, beats.deaths) == (1, 1)
    assert beats.clock.getDelayedCalls() == []


def test_heartbeat_pong_resets_the_deadline() -> None:
    """A pong just before the deadline keeps the connection alive for another round."""
    beats = Beats(interval=25, timeout=20)
    beats.clock.advance(25)
    beats.clock.advance(19)
    beats.heartbeat.pong()
    beats.clock.advance(25)
    assert beats.pings == 2
    beats.clock.advance(19)
    assert beats.deaths == 0
    beats.clock.advance(1)
    assert beats.deaths == 1


def test_heartbeat_ignores_a_pong_nobody_asked_for() -> None:
    """A pong with no ping outstanding neither pings early nor schedules a second ping."""
    beats = Beats(interval=25, timeout=20)
    beats.clock.advance(10)
    beats.heartbeat.pong()
    assert len(beats.clock.getDelayedCalls()) == 1
    beats.clock.advance(15)
    assert beats.pings == 1


@pytest.mark.parametrize("when", [0.0, 10.0, 30.0])
def test_heartbeat_stop_cancels_everything(when: float) -> None:
    """Stopping (before a ping, or while awaiting a pong) leaves nothing scheduled."""
    beats = Beats(interval=25, timeout=20)
    beats.clock.advance(when)
    beats.heartbeat.stop()
    assert beats.clock.getDelayedCalls() == []
    beats.clock.advance(1000)
    assert beats.deaths == 0
    beats.heartbeat.stop()


# -- listeners ---------------------------------------------------------------------------


def make_listener(max_age: float = 60, **options: Any) -> tuple[SessionSpy, Listener]:
    """A listener on a session spy (the real session is covered by the network tests)."""
    session, _ = session_spy()
    return session, Listener(session, Channel(session, "lobby"), "hi", max_age, **options)


def unsubscribed(session: SessionSpy) -> list[Any]:
    """What the session was asked to unsubscribe, in order."""
    return [call.args[0] for call in session.calls if call.name == "unsubscribe"]


@contextmanager
def listener_log() -> Iterator[list[str]]:
    """The lines listeners log meanwhile, formatted."""
    from twisted.logger import formatEvent

    lines: list[str] = []

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace", "").endswith("Listener"):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        yield lines
    finally:
        globalLogPublisher.removeObserver(observe)


def body(payload: Any, name: str = "hi") -> dict[str, Any]:
    return {"id": f"id-{payload}", "channel": "c", "name": name, "payload": payload}


def now(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has already fired."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


def test_listener_drops_broadcasts_older_than_max_age() -> None:
    """A queued broadcast is kept up to max_age seconds, then dropped from the queue."""
    session, listener = make_listener(max_age=60)
    listener.receive(body(1))
    session.clock.advance(30)
    listener.receive(body(2))
    session.clock.advance(30)
    first = now(listener.wait())
    assert first.payload == 1
    session.clock.advance(30.5)
    assert now(listener.wait()) is None


def test_listener_expiry_keeps_younger_broadcasts() -> None:
    """Only the broadcasts past max_age go; younger ones stay queued in order."""
    session, listener = make_listener(max_age=10)
    for n in range(5):
        listener.receive(body(n))
        session.clock.advance(3)
    # received at 0, 3, 6, 9, 12; now 15: those at 0 and 3 are older than 10 s
    assert [now(listener.wait()).payload for _ in range(3)] == [2, 3, 4]
    assert now(listener.wait()) is None


def test_listener_wait_answers_queued_broadcasts_oldest_first() -> None:
    """wait() answers the queue oldest first, then None with no timeout."""
    _, listener = make_listener()
    for n in range(3):
        listener.receive(body(n))
    listener.receive(body(99, name="other"))
    assert [now(listener.wait()).payload for _ in range(3)] == [0, 1, 2]
    assert now(listener.wait()) is None


def test_listener_wait_times_out_with_none() -> None:
    """wait(timeout) answers None once the clock passes the timeout, and leaves no timer."""
    session, listener = make_listener()
    d = listener.wait(5)
    session.clock.advance(4.9)
    assert not d.called
    session.clock.advance(0.1)
    assert now(d) is None
    assert session.clock.getDelayedCalls() == []


def test_listener_wait_gets_a_broadcast_arriving_in_time() -> None:
    """A broadcast arriving during wait(timeout) answers it and cancels its timer."""
    session, listener = make_listener()
    first, second = listener.wait(5), listener.wait(5)
    session.clock.advance(2)
    listener.receive(body("a"))
    assert now(first).payload == "a"
    assert not second.called
    session.clock.advance(3)
    assert now(second) is None
    listener.receive(body("b"))
    assert now(listener.wait()).payload == "b"
    assert session.clock.getDelayedCalls() == []


def test_listener_cancel_answers_pending_waits_none() -> None:
    """cancel() answers every pending wait None, cancels timers and leaves the network."""
    session, listener = make_listener()
    waits = [listener.wait(5), listener.wait(None)]
    listener.cancel()
    assert [now(d) for d in waits] == [None, None]
    assert session.clock.getDelayedCalls() == []
    assert unsubscribed(session) == [listener]
    listener.receive(body(1))
    assert now(listener.wait(5)) is None
    listener.cancel()
    assert unsubscribed(session) == [listener]


def test_listener_queue_keeps_the_newest_max_queue() -> None:
    """
    A flood on a listener nobody waits on keeps max_queue broadcasts, the
    oldest dropped first; one line is logged when drops start and one, with
    the count, when the listener has caught up.
    """
    _, listener = make_listener(max_queue=3)
    with listener_log() as lines:
        for n in range(1000):
            listener.receive(body(n))
        assert len(lines) == 1
        assert "'hi'" in lines[0] and "'lobby'" in lines[0] and "3" in lines[0]
        assert [now(listener.wait()).payload for _ in range(3)] == [997, 998, 999]
        assert now(listener.wait()) is None
    assert len(lines) == 2
    assert "997" in lines[1]


def test_listener_queue_below_max_queue_drops_and_logs_nothing() -> None:
    """Up to max_queue queued broadcasts are all kept, and nothing is logged."""
    _, listener = make_listener(max_queue=3)
    with listener_log() as lines:
        for n in range(3):
            listener.receive(body(n))
        assert [now(listener.wait()).payload for _ in range(3)] == [0, 1, 2]
    assert lines == []


def test_listener_queue_drops_are_logged_again_after_catching_up() -> None:
    """A second flood after the queue was emptied is logged as a burst of its own."""
    _, listener = make_listener(max_queue=2)
    with listener_log() as lines:
        for _ in range(2):
            for n in range(5):
                listener.receive(body(n))
            assert [now(listener.wait()).payload for _ in range(2)] == [3, 4]
        listener.receive(body(9))
        listener.cancel()
    assert len(lines) == 4
    assert all("3 broadcasts" in line for line in lines[1::2])


def test_callback_listener_holds_at_most_max_queue_unfinished_callbacks() -> None:
    """
    While max_queue callbacks have not finished, a new broadcast is dropped
    (and logged) instead of starting another; once they finish, callbacks
    start again.
    """
    running: list[tuple[Any, Deferred[None]]] = []

    def slow(broadcast: Any) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        running.append((broadcast.payload, d))
        return d

    _, listener = make_listener(max_queue=2, callback=slow)
    with listener_log() as lines:
        for n in range(5):
            listener.receive(body(n))
        assert [p for p, _ in running] == [0, 1]
        assert len(lines) == 1
        running[0][1].callback(None)
        listener.receive(body(5))
        assert [p for p, _ in running] == [0, 1, 5]
        running[1][1].callback(None)
        running[2][1].errback(ValueError("the app's own failure"))
    assert len(lines) == 3  # the start of the drops, the failure, the catching up
    assert "3 broadcasts" in lines[2]


# -- the authenticator ---------------------------------------------------------------


class FakeHttp:
    """
    Answers the authenticator's calls from a script (status and body, a
    function making them at call time, an exception to raise, or a Deferred
    to await), and records every call.
    """

    def __init__(self) -> None:
        self.script: list[Any] = []
        self.calls: list[tuple[str, str | None]] = []

    async def call(self, method: str, url: str, *, token: str | None = None,
                   params: Any = None, payload: Any = None,
                   timeout: float | None = None) -> tuple[int, Any]:
        self.calls.append((url, token))
        assert self.script, f"unexpected call to {url}"
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, Deferred):
            answer = await answer
        elif callable(answer):
            answer = answer()
        return tuple(answer)  # type: ignore[return-value]

    @property
    def paths(self) -> list[str]:
        return [url.split("/api/", 1)[1] for url, _ in self.calls]


def payload(clock: Clock, token: str, lifetime: float = 3600, api: str = API,
            network: str = API) -> dict[str, Any]:
    """An auth payload whose token lives C{lifetime} s from the clock's now."""
    return {"token": token, "expiration": (clock.seconds() + lifetime) * 1000,
            "identity": {"type": "user", "uuid": "u", "organization": "scala"},
            "api": {"host": api}, "network": {"host": network}}


class Auth:
    """An Authenticator on a Clock with a FakeHttp, recording its events."""

    def __init__(self, retry: Any = None, auth_lifetime: float | None = None,
                 host: str = HOST, **options: Any) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        if auth_lifetime is not None:
            options["auth"] = payload(self.clock, "given", auth_lifetime)
        self.http = FakeHttp()
        self.events = Events()
        self.updates: list[dict[str, Any]] = []
        self.errors: list[Exception] = []
        self.events.on("error", self.errors.append)
        if not options:
            options = {"username": "u", "password": "p", "organization": "scala"}
        self.auth = Authenticator(
            check_options(host=host, **options), self.http,  # type: ignore[arg-type]
            self.clock, self.events, retry or (lambda attempt: 10.0 * attempt),
            self.updates.append,
        )

    def login_ok(self, token: str, lifetime: float = 3600, **hosts: str) -> Any:
        """A scripted 200 whose token lives C{lifetime} s from the time of the call."""
        return lambda: (200, payload(self.clock, token, lifetime, **hosts))

    def timer_in(self) -> float:
        """Seconds until the only scheduled call."""
        calls = self.clock.getDelayedCalls()
        assert len(calls) == 1, calls
        return float(calls[0].getTime() - self.clock.seconds())


def test_login_then_refresh_at_half_the_remaining_lifetime() -> None:
    """
    After a login the refresh is scheduled at half the token's remaining
    lifetime, and each refreshed payload schedules the next one the same way.
    (The HTTP side is a fake: this test is about timing.)
    """
    a = Auth()
    a.http.script = [a.login_ok("t1", lifetime=3600)]
    a.auth.start()
    assert a.http.paths == ["auth/login"]
    assert now(a.auth.current())["token"] == "t1"
    assert a.timer_in() == pytest.approx(1800)
    a.clock.advance(1799)
    assert len(a.http.calls) == 1
    a.http.script = [a.login_ok("t2", lifetime=1000)]
    a.clock.advance(1)
    assert a.http.calls[-1] == (API + "/api/auth/token", "t1")
    assert now(a.auth.current())["token"] == "t2"
    assert a.timer_in() == pytest.approx(500)
    assert [u["token"] for u in a.updates] == ["t1", "t2"]


def test_refresh_refused_logs_in_again() -> None:
    """A 401 on refresh is followed by a login with the credentials. (Fake HTTP: timing.)"""
    a = Auth()
    a.http.script = [a.login_ok("t1")]
    a.auth.start()
    a.http.script = [(401, {"code": "auth.invalidToken"}), a.login_ok("t2")]
    a.clock.advance(1800)
    assert a.http.paths == ["auth/login", "auth/token", "auth/login"]
    assert now(a.auth.current())["token"] == "t2"
    assert a.timer_in() == pytest.approx(1800)
    assert a.errors == []


def test_refused_login_is_fatal_and_never_retried() -> None:
    """A 401 on login is an AuthenticationError and an error event; nothing is retried."""
    a = Auth()
    a.http.script = [(401, {"code": "auth.invalidCredentials", "message": "bad password"})]
    waiting = a.auth.current()
    a.auth.start()
    failure = now(waiting)
    assert failure.check(AuthenticationError)
    assert "bad password" in str(failure.value)
    assert len(a.errors) == 1 and isinstance(a.errors[0], AuthenticationError)
    a.clock.advance(10 ** 7)
    assert a.http.paths == ["auth/login"]
    assert a.clock.getDelayedCalls() == []
    assert now(a.auth.current()).check(AuthenticationError)
    now(a.auth.rejected("t1")).trap(AuthenticationError)
    assert a.http.paths == ["auth/login"]


@pytest.mark.parametrize("downgraded", ["api", "network"])
def test_https_login_naming_an_http_host_is_fatal_and_never_retried(downgraded: str) -> None:
    """
    An https login whose answer names an http API or network host fails with
    UnexpectedError naming that host, fires one error event, and is not retried.
    """
    a = Auth(host=SECURE_HOST)
    hosts = {"api": SECURE_API, "network": SECURE_API, downgraded: API}
    a.http.script = [a.login_ok("t1", **hosts)]
    waiting = a.auth.current()
    a.auth.start()
    failure = now(waiting)
    assert failure.check(UnexpectedError)
    assert API in str(failure.value) and downgraded in str(failure.value)
    assert len(a.errors) == 1 and a.errors[0] is failure.value
    assert a.updates == []
    a.clock.advance(10 ** 7)
    assert a.http.paths == ["auth/login"]
    assert a.clock.getDelayedCalls() == []


def test_https_refresh_naming_an_http_host_is_fatal() -> None:
    """A refresh answer that downgrades to http is refused for good, like a login's."""
    a = Auth(host=SECURE_HOST)
    a.http.script = [a.login_ok("t1", api=SECURE_API, network=SECURE_API)]
    a.auth.start()
    a.http.script = [a.login_ok("t2", api=SECURE_API, network=API)]
    a.clock.advance(1800)
    assert a.http.calls[-1] == (SECURE_API + "/api/auth/token", "t1")
    assert now(a.auth.current()).check(UnexpectedError)
    assert len(a.errors) == 1
    assert [u["token"] for u in a.updates] == ["t1"]
    a.clock.advance(10 ** 7)
    assert a.http.paths == ["auth/login", "auth/token"]


def test_http_login_may_name_https_hosts() -> None:
    """Only a downgrade is refused: an http login may send the SDK on over https."""
    a = Auth()
    a.http.script = [a.login_ok("t1", api=SECURE_API, network=SECURE_API)]
    a.auth.start()
    assert now(a.auth.current())["api"]["host"] == SECURE_API
    assert a.errors == []


def test_transient_login_failures_are_retried_by_the_policy() -> None:
    """NetworkError and 503 on login are retried after the policy's delays until one works."""
    delays = {1: 3.0, 2: 7.0, 3: 11.0}
    a = Auth(retry=delays.__getitem__)
    a.http.script = [NetworkError("down"), (503, {"code": "busy"}), NetworkError("down"),
                     a.login_ok("t1")]
    a.auth.start()
    waiting = a.auth.current()
    assert len(a.http.calls) == 1
    for count, delay in ((2, 3.0), (3, 7.0), (4, 11.0)):
        a.clock.advance(delay - 0.01)
        assert len(a.http.calls) == count - 1
        a.clock.advance(0.01)
        assert len(a.http.calls) == count
    assert now(waiting)["token"] == "t1"
    assert a.errors == []
    assert a.timer_in() == pytest.approx(1800)


def test_transient_refresh_failures_are_retried_then_refresh() -> None:
    """A refresh that meets a 502 is retried by the policy, still as a refresh."""
    a = Auth(retry=lambda attempt: 5.0)
    a.http.script = [a.login_ok("t1")]
    a.auth.start()
    a.http.script = [(502, None), NetworkError("down"), a.login_ok("t2")]
    a.clock.advance(1800)
    a.clock.advance(5)
    a.clock.advance(5)
    assert a.http.paths == ["auth/login", "auth/token", "auth/token", "auth/token"]
    assert now(a.auth.current())["token"] == "t2"


def test_valid_auth_payload_needs_no_login_until_refresh() -> None:
    """Starting from a valid auth= payload calls nothing until half its lifetime has passed."""
    for credentials in ({}, {"uuid": "d", "secret": "s"}):
        a = Auth(auth_lifetime=600, **credentials)
        a.auth.start()
        assert now(a.auth.current())["token"] == "given"
        assert a.timer_in() == pytest.approx(300)
        a.clock.advance(299)
        assert a.http.calls == []
        a.http.script = [a.login_ok("fresh")]
        a.clock.advance(1)
        assert a.http.calls == [(API + "/api/auth/token", "given")]
        assert now(a.auth.current())["token"] == "fresh"


def test_expired_auth_payload_logs_in_at_once() -> None:
    """An expired auth= payload with credentials logs in at once; without them it is fatal."""
    a = Auth(auth_lifetime=-1, username="u", password="p", organization="scala")
    a.http.script = [a.login_ok("t1")]
    a.auth.start()
    assert a.http.paths == ["auth/login"]
    assert now(a.auth.current())["token"] == "t1"

    a = Auth(auth_lifetime=-1)
    a.auth.start()
    assert a.http.calls == []
    assert now(a.auth.current()).check(AuthenticationError)
    assert len(a.errors) == 1
    assert a.clock.getDelayedCalls() == []


def test_rejected_by_many_callers_logs_in_once() -> None:
    """Several callers reporting the same refused token cause one login that answers all."""
    a = Auth()
    a.http.script = [a.login_ok("t1")]
    a.auth.start()
    answer: Deferred[tuple[int, Any]] = Deferred()
    a.http.script = [answer]
    waiting = [a.auth.rejected("t1") for _ in range(3)]
    assert a.http.paths == ["auth/login", "auth/login"]
    assert not any(d.called for d in waiting)
    answer.callback((200, payload(a.clock, "t2")))
    assert [now(d)["token"] for d in waiting] == ["t2"] * 3
    # a caller still holding the refused token gets the new one without a login
    assert now(a.auth.rejected("t1"))["token"] == "t2"
    assert len(a.http.calls) == 2


def test_rejected_during_a_refresh_waits_for_the_new_token() -> None:
    """A token refused while its refresh is in flight answers the refreshed token, not itself."""
    a = Auth()
    a.http.script = [a.login_ok("t1")]
    a.auth.start()
    answer: Deferred[tuple[int, Any]] = Deferred()
    a.http.script = [answer]
    a.clock.advance(1800)
    assert a.http.paths == ["auth/login", "auth/token"]
    waiting = a.auth.rejected("t1")
    assert not waiting.called
    answer.callback((200, payload(a.clock, "t2")))
    assert now(waiting)["token"] == "t2"
    assert len(a.http.calls) == 2


def test_stop_cancels_the_refresh_timer() -> None:
    """stop() after a login leaves nothing scheduled and refreshes nothing."""
    a = Auth()
    a.http.script = [a.login_ok("t1")]
    a.auth.start()
    assert len(a.clock.getDelayedCalls()) == 1
    a.auth.stop()
    assert a.clock.getDelayedCalls() == []
    a.clock.advance(10 ** 6)
    assert len(a.http.calls) == 1


def test_stop_cancels_a_pending_retry() -> None:
    """stop() while waiting to retry a login cancels the retry and fails the waiters."""
    a = Auth()
    a.http.script = [NetworkError("down")]
    a.auth.start()
    waiting = a.auth.current()
    assert len(a.clock.getDelayedCalls()) == 1
    a.auth.stop()
    assert a.clock.getDelayedCalls() == []
    now(waiting).trap(Exception)
    a.clock.advance(10 ** 6)
    assert len(a.http.calls) == 1
    assert a.errors == []


def test_stop_cancels_a_login_in_flight() -> None:
    """stop() during a login leaves nothing scheduled even when the answer comes late."""
    a = Auth()
    answer: Deferred[tuple[int, Any]] = Deferred()
    a.http.script = [answer]
    a.auth.start()
    a.auth.stop()
    assert a.clock.getDelayedCalls() == []
    assert a.auth.payload is None
    assert a.errors == []


# -- the network's reconnect policy ----------------------------------------------------


def test_reconnect_policy_is_immediate_then_backs_off() -> None:
    """After a lost connection the first attempt is immediate, later ones follow the backoff."""
    asked: list[int] = []

    def backoff(attempt: int) -> float:
        asked.append(attempt)
        return 2.0 ** attempt

    policy = _reconnect_policy(backoff)
    assert [policy(n) for n in range(1, 6)] == [0.0, 2.0, 4.0, 8.0, 16.0]
    assert asked == [1, 2, 3, 4]


def test_a_closing_socket_sends_nothing() -> None:
    """A ping due while the WebSocket is closing is dropped, not raised into the reactor."""
    from exp.twisted._network import _Socket

    socket = _Socket()
    socket.state = socket.STATE_CLOSING
    socket.send_text("2")  # autobahn's sendMessage would raise Disconnected here
    socket.state = socket.STATE_CLOSED
    socket.send_text("2")
