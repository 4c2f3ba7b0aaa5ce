"""
L{LiveSession}: the L{Session} of a running L{exp.twisted.ExpService},
over real HTTP (treq) and a real connection to the network (Autobahn).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime

from exp._options import Options, check_seconds
from exp.errors import NetworkError, RuntimeError
from exp.twisted._auth import Authenticator
from exp.twisted._events import Events
from exp.twisted._http import Http, error_for
from exp.twisted._network import Network
from exp.twisted._session import NO_BODY, Subscriber


class LiveSession:
    """
    Authentication, REST calls and the network of one SDK instance: what
    its channels, listeners, resources and log shipper use (L{Session}).
    L{exp.twisted.ExpService} builds one, starts it with itself, and makes
    its network a child service.

    @ivar clock: the reactor, as the clock of every timer.
    @ivar http: the JSON calls over one connection pool.
    @ivar authenticator: keeps the auth payload current.
    @ivar network: the connection to the network; C{None} with
        C{enable_network=False}.
    @ivar request_timeout: seconds before a REST call fails.
    @ivar stopped: whether L{stop} was called.
    """

    def __init__(self, options: Options, reactor: Any, events: Events,
                 retry_policy: Callable[[int], float], request_timeout: float,
                 max_response_size: int, max_message_size: int,
                 on_update: Callable[[dict[str, Any]], None]) -> None:
        """
        @param on_update: called with each new auth payload, before the
            C{update} event.
        """
        self.clock: IReactorTime = reactor
        self.http = Http(reactor, request_timeout, max_response_size)
        self.request_timeout = request_timeout
        self.authenticator = Authenticator(options, self.http, reactor, events, retry_policy,
                                           on_update)
        self.network: Network | None = None
        if options.enable_network:
            self.network = Network(reactor, events, retry_policy, self._token_refused,
                                   max_message_size)
        self.stopped = False

    # -- state -------------------------------------------------------------------

    @property
    def auth(self) -> dict[str, Any] | None:
        """The current auth payload; C{None} before the first login."""
        return self.authenticator.payload

    @property
    def organization(self) -> str:
        """The organization of the current identity (L{exp.RuntimeError} before login)."""
        if self.auth is None:
            raise RuntimeError("not authenticated yet: wait for whenAuthenticated()")
        return str(self.auth["identity"].get("organization", ""))

    def require_network(self) -> Network:
        """
        The network.

        @raise exp.NetworkError: with C{enable_network=False}.
        """
        if self.network is None:
            raise NetworkError("this instance was started with enable_network=False: "
                               "it cannot listen or connect to the network")
        return self.network

    def stop(self) -> None:
        """Fail every call from now on; stop keeping the auth payload current."""
        self.stopped = True
        self.authenticator.stop()

    def close(self) -> Deferred[None]:
        """Cancel the REST calls in flight and close their connections."""
        return ensureDeferred(self.http.close())

    def _token_refused(self) -> None:
        payload = self.auth
        if payload is not None:
            self.authenticator.rejected(payload["token"])

    def _check(self) -> None:
        if self.stopped:
            raise RuntimeError("this EXP instance has been stopped")

    # -- REST ----------------------------------------------------------------------

    def authenticated(self) -> Deferred[dict[str, Any]]:
        """
        The auth payload once logged in; if a login being retried gives none
        within the request timeout, its last failure.
        """
        return ensureDeferred(self._authenticated())

    async def _authenticated(self, waiting: Deferred[dict[str, Any]] | None = None
                             ) -> dict[str, Any]:
        """The auth payload from C{waiting} (by default the current one), within the timeout."""
        if waiting is None:
            waiting = self.authenticator.current()

        def timed_out(result: Any, timeout: float) -> Any:
            raise self.authenticator.last_error or NetworkError(
                f"not logged in within {timeout:g} s")

        if not waiting.called:
            waiting.addTimeout(self.request_timeout, self.clock, onTimeoutCancel=timed_out)
        return await waiting

    def request(self, method: str, path: str, params: Any = None, payload: Any = NO_BODY,
                timeout: float | None = None) -> Deferred[Any]:
        """
        One call of the REST API (L{Session.request}): logged in, and once
        more after logging in again if the server refuses the token.
        """
        return ensureDeferred(self._request(method, path, params, payload, timeout))

    async def _request(self, method: str, path: str, params: Any, payload: Any,
                       timeout: float | None) -> Any:
        self._check()
        if not isinstance(path, str) or not path.startswith("/"):
            raise RuntimeError("a path of the API is a string that starts with '/'")
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise RuntimeError(f"the path {path!r:.60} is not valid text") from None
        auth = await self._authenticated()
        for attempt in (1, 2):
            status, body = await self.http.call(
                method, auth["api"]["host"] + path, token=auth["token"], params=params,
                payload=payload, timeout=timeout,
            )
            if status == 401 and attempt == 1:
                auth = await self._authenticated(self.authenticator.rejected(auth["token"]))
                continue
            if status >= 300:
                raise error_for(status, body)
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    def post_logs(self, entries: list[dict[str, Any]]) -> Deferred[None]:
        """POST log entries with the current token (no login waited for, no retry)."""
        return ensureDeferred(self._post_logs(self.auth, entries))

    async def _post_logs(self, payload: dict[str, Any] | None,
                         entries: list[dict[str, Any]]) -> None:
        if payload is None:
            raise NetworkError("not authenticated")
        status, body = await self.http.call(
            "POST", payload["api"]["host"] + "/api/logs", token=payload["token"],
            payload=entries)
        if status >= 300:
            raise error_for(status, body)

    # -- network -----------------------------------------------------------------

    def broadcast(self, channel_id: str, name: str, payload: Any,
                  timeout: float) -> Deferred[list[Any]]:
        """
        POST a broadcast; the responses the server collected for C{timeout}
        seconds (the answer is waited for that much longer).
        """
        return ensureDeferred(self._broadcast(channel_id, name, payload, timeout))

    async def _broadcast(self, channel_id: str, name: str, payload: Any,
                         timeout: float) -> list[Any]:
        seconds = check_seconds(timeout)
        body = {"channel": channel_id, "name": name, "payload": payload}
        answer = await self._request("POST", "/api/networks/current/broadcasts",
                                     {"timeout": str(int(seconds * 1000))}, body,
                                     self.request_timeout + seconds)
        return list(answer) if isinstance(answer, list) else []

    def respond(self, channel_id: str, broadcast_id: str | None,
                payload: Any) -> Deferred[None]:
        """POST a response to a broadcast."""
        return ensureDeferred(self._respond(channel_id, broadcast_id, payload))

    async def _respond(self, channel_id: str, broadcast_id: str | None, payload: Any) -> None:
        await self._request("POST", "/api/networks/current/responses", None,
                            {"id": broadcast_id, "channel": channel_id, "payload": payload},
                            None)

    def subscribe(self, subscriber: Subscriber,
                  timeout: float | None = None) -> Deferred[None]:
        """
        Once logged in, add C{subscriber} to the network; fires once its
        channel is subscribed (L{Session.subscribe}).
        """
        return ensureDeferred(self._subscribe(subscriber, timeout))

    async def _subscribe(self, subscriber: Subscriber, timeout: float | None) -> None:
        network = self.require_network()
        await self.authenticator.current()
        subscribed = network.add_listener(subscriber)
        if timeout is not None:
            subscribed.addTimeout(timeout, self.clock)
        await subscribed

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Remove C{subscriber} from the network, if it is there."""
        if self.network is not None:
            self.network.remove_listener(subscriber)
