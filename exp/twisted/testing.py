"""
Testing code that uses a L{Session}, with no server: L{session_spy}.

Channels, listeners, broadcasts, resources and log shippers do all their
I/O through their session.  Give them a spy instead, and a test sees each
call they make and answers it by firing its Deferred, on a
C{twisted.internet.task.Clock}::

    session, calls = session_spy()
    got = []
    Device.get(session, "lobby").addCallback(got.append)
    [call] = calls
    assert call.name == "request" and call.args[:2] == ("GET", "/api/devices/lobby")
    call.deferred.callback({"uuid": "lobby", "name": "Lobby"})
    assert got[0].name == "Lobby"

(as C{treq}'s tests give an agent spy to what takes an C{IAgent}).
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from exp.errors import RuntimeError
from exp.twisted._session import NO_BODY, Subscriber

__all__ = ["SessionCall", "SessionSpy", "session_spy"]


@attrs.frozen
class SessionCall:
    """
    One call made on a L{SessionSpy}.

    @ivar name: the method called: C{request}, C{broadcast}, C{respond},
        C{subscribe}, C{unsubscribe} or C{post_logs}.
    @ivar args: its arguments, in the order of L{exp.twisted.Session}'s
        signature (defaults filled in).
    @ivar deferred: what the call returned: fire it to answer the call
        (C{None} for C{unsubscribe}, which returns nothing).
    """

    name: str
    args: tuple[Any, ...]
    deferred: Deferred[Any] | None


class SessionSpy:
    """
    A L{exp.twisted.Session} that records every call (in L{calls}) and
    answers none of them by itself.

    @ivar clock: a C{Clock}: advance it to run timers.
    @ivar auth: the auth payload (settable; C{None} as before the first
        login, when L{authenticated} fails).
    @ivar stopped: whether the instance counts as stopped (settable).
    @ivar calls: the calls made, oldest first.
    """

    def __init__(self, calls: list[SessionCall], organization: str = "scala",
                 host: str = "http://exp.invalid") -> None:
        """
        @param calls: where the calls are recorded.
        @param organization: the organization of the identity of L{auth}.
        @param host: the API and network host of L{auth}.
        """
        self.clock = Clock()
        self.auth: dict[str, Any] | None = {
            "token": "spy-token", "restrictedToken": "spy-restricted-token",
            "expiration": 2**53, "identity": {
                "type": "user", "uuid": "spy-uuid", "organization": organization},
            "api": {"host": host}, "network": {"host": host},
        }
        self.stopped = False
        self.calls = calls

    @property
    def organization(self) -> str:
        """The organization of L{auth} (L{exp.RuntimeError} if it is C{None})."""
        if self.auth is None:
            raise RuntimeError("not authenticated yet: wait for whenAuthenticated()")
        return str(self.auth["identity"].get("organization", ""))

    def authenticated(self) -> Deferred[dict[str, Any]]:
        """L{auth} at once (not recorded); L{exp.RuntimeError} if it is C{None}."""
        if self.auth is None:
            return fail(RuntimeError("not authenticated"))
        return succeed(self.auth)

    def _record(self, name: str, *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append(SessionCall(name, args, d))
        return d

    def request(self, method: str, path: str, params: Any = None, payload: Any = NO_BODY,
                timeout: float | None = None) -> Deferred[Any]:
        """Record a C{request} call; answer it with its Deferred."""
        return self._record("request", method, path, params, payload, timeout)

    def broadcast(self, channel_id: str, name: str, payload: Any,
                  timeout: float) -> Deferred[list[Any]]:
        """Record a C{broadcast} call; answer it with its Deferred."""
        return self._record("broadcast", channel_id, name, payload, timeout)

    def respond(self, channel_id: str, broadcast_id: str | None,
                payload: Any) -> Deferred[None]:
        """Record a C{respond} call; answer it with its Deferred."""
        return self._record("respond", channel_id, broadcast_id, payload)

    def subscribe(self, subscriber: Subscriber,
                  timeout: float | None = None) -> Deferred[None]:
        """Record a C{subscribe} call; confirm it by firing its Deferred."""
        return self._record("subscribe", subscriber, timeout)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Record an C{unsubscribe} call."""
        self.calls.append(SessionCall("unsubscribe", (subscriber,), None))

    def post_logs(self, entries: list[dict[str, Any]]) -> Deferred[None]:
        """Record a C{post_logs} call; answer it with its Deferred."""
        return self._record("post_logs", entries)


def session_spy(organization: str = "scala") -> tuple[SessionSpy, list[SessionCall]]:
    """
    A session that records the calls made on it, and the list they go to.

    @param organization: the organization of the spy's identity (channel
        ids are made of it).
    """
    calls: list[SessionCall] = []
    return SessionSpy(calls, organization), calls
