"""
The seam under channels, listeners, broadcasts, resources and log shipping.

A L{Session} is what they need of an SDK instance, and nothing more: the
clock, the auth payload and its organization, REST calls, broadcasts and
responses, subscriptions to the network, shipping log entries, and whether
the instance has been stopped.  An L{exp.twisted.ExpService} builds a live
one (its C{session}); tests give them a spy instead
(L{exp.twisted.testing.session_spy}), as treq's tests give an agent spy to
what takes an C{IAgent}.

This module imports nothing else of the SDK, so that everything may import it.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

#: The C{payload} of a L{Session.request} without a body (C{None} is sent as
#: JSON C{null}).
NO_BODY: Any = object()


class Subscriber(Protocol):
    """
    What a session holds for a listener: the channel it listens on, where the
    broadcasts of that channel go, and how it is cancelled when the session
    stops.
    """

    @property
    def channel_id(self) -> str:
        """The channel's id on the wire (read once logged in)."""

    def receive(self, body: dict[str, Any]) -> None:
        """Take one broadcast of the channel, as the network sent it."""

    def cancel(self) -> None:
        """Receive nothing more (the session is stopping)."""


class Session(Protocol):
    """
    One SDK instance, as channels, listeners, broadcasts, resources and the
    log shipper use it.  Every call that does I/O returns a Deferred, and
    fails with the SDK's documented exceptions.
    """

    @property
    def clock(self) -> IReactorTime:
        """The clock of every timer: listeners' ages and waits, log batches."""

    @property
    def auth(self) -> dict[str, Any] | None:
        """The current auth payload; C{None} before the first login."""

    @property
    def organization(self) -> str:
        """
        The organization of the current identity (channel ids are made of it).

        @raise exp.RuntimeError: before the first login.
        """

    @property
    def stopped(self) -> bool:
        """Whether the instance has been stopped (every call then fails)."""

    def authenticated(self) -> Deferred[dict[str, Any]]:
        """
        The auth payload once logged in.  A login being retried that gives
        none within the request timeout fails it with the login's last
        failure; a stopped instance fails it with L{exp.RuntimeError}.
        """

    def request(self, method: str, path: str, params: Any = None, payload: Any = NO_BODY,
                timeout: float | None = None) -> Deferred[Any]:
        """
        One call of the REST API, logged in (and once more after a login
        again, if the token is refused); its decoded JSON answer, C{None}
        when empty.

        @param method: C{GET}, C{POST}, C{PATCH}, C{PUT} or C{DELETE}.
        @param path: the API's path, starting with C{/}.
        @param params: query parameters as treq takes them (strings, or lists
            of strings), or C{None}.
        @param payload: the JSON body, or L{NO_BODY}.
        @param timeout: seconds to wait for the answer; the instance's request
            timeout by default.
        @raise exp.ApiError: for an error answer.
        """

    def broadcast(self, channel_id: str, name: str, payload: Any,
                  timeout: float) -> Deferred[list[Any]]:
        """
        Send a broadcast named C{name} on a channel; after C{timeout}
        seconds, the payloads of the responses.
        """

    def respond(self, channel_id: str, broadcast_id: str | None,
                payload: Any) -> Deferred[None]:
        """Answer the broadcast C{broadcast_id} of a channel with C{payload}."""

    def subscribe(self, subscriber: Subscriber,
                  timeout: float | None = None) -> Deferred[None]:
        """
        Once logged in, hand the broadcasts of C{subscriber}'s channel to it,
        on this connection to the network and every later one; fires once the
        network confirms the subscription.

        @param timeout: seconds, from the subscription's request, to wait for
            the confirmation before failing with Twisted's C{TimeoutError};
            C{None} waits for ever.
        @raise exp.NetworkError: if the instance has no network
            (C{enable_network=False}), or the network refuses the channel.
        """

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Hand nothing more to C{subscriber} (harmless if it has no subscription)."""

    def post_logs(self, entries: list[dict[str, Any]]) -> Deferred[None]:
        """Send log entries (C{level}, C{message}, C{time} and more) to EXP."""


class HasSession(Protocol):
    """What has a session: an L{exp.twisted.ExpService}."""

    @property
    def session(self) -> Session:
        """The session of this SDK instance."""


def session_of(owner: Session | HasSession) -> Session:
    """
    The session of C{owner}: an L{exp.twisted.ExpService}'s, or C{owner}
    itself if it is a session.  (What takes a session also takes the
    service, as it did before there were sessions.)
    """
    session: Session | None = getattr(owner, "session", None)
    return session if session is not None else cast(Session, owner)
