"""
L{ExpService}: one EXP identity — authentication, the REST API and the
real-time network — as a Twisted service whose calls return Deferreds.

It is a facade: it checks the options, builds the instance's session
(L{LiveSession}, which channels, listeners, resources and log shippers
share), starts and stops it, and offers every call of the SDK.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger, LogLevel

from exp._options import DEFAULT_HOST, Options, check_count, check_options, check_seconds
from exp.errors import RuntimeError
from exp.twisted import _resources as resources
from exp.twisted._calls import family, readers
from exp.twisted._channels import Broadcast, Channel, Listener
from exp.twisted._events import Events, Handle
from exp.twisted._http import MAX_RESPONSE_SIZE, encode_params
from exp.twisted._live import LiveSession
from exp.twisted._logs import LogShipper
from exp.twisted._network import MAX_MESSAGE_SIZE


class ExpService(MultiService):
    """
    An EXP user, device, consumer app or pairing device.

    Start it (C{startService}, or as a child of your application) and wait
    for L{whenAuthenticated}; every call returns a Deferred, so C{await}
    works as well as callbacks::

        service = ExpService(host=url, uuid=uuid, secret=secret)
        service.startService()
        await service.whenAuthenticated()
        devices = await service.find_devices(name="lobby")

    The calls of each kind of resource are the classmethods of its class on
    the service's L{session}, one row of a table each (L{exp.twisted._calls}):
    C{get_device(uuid=None)} is L{Device.get}, C{find_devices(params=None,
    **kwargs)} L{Device.find}, C{create_device(document=None)}
    L{Device.create} and C{delete_device(uuid)} L{Device.remove}; and so on
    for things, experiences, locations, feeds and content (read-only).

    @param host: the EXP API to log in to.
    @param enable_network: join the real-time network (needed to listen).
    @param auth: an auth payload from an earlier login, used until it is
        refused or expires.
    @param reactor: the reactor (also the clock); the global one by default.
    @param request_timeout: seconds before a REST call fails with
        L{NetworkError}; also the longest a call waits for a login that is
        being retried (it then fails with the login's last failure,
        L{NetworkError} or L{ApiError}).
    @param retry_policy: seconds to wait before attempt C{n} of a login or
        a connection (as C{twisted.application.internet.backoffPolicy}).
    @param max_response_size: the largest REST answer body read, in bytes
        (32 MiB); a larger one is dropped unread past the limit, and the call
        fails with L{UnexpectedError}.
    @param max_message_size: the largest network message taken, in bytes
        (4 MiB); a larger one closes the connection, which is made again.
    @raise exp.RuntimeError: if the credentials are incomplete or
        contradictory, or the host is not an http(s) URL.

    @ivar reactor: the reactor, also L{clock}.
    @ivar clock: the clock of every timer.
    @ivar events: the events C{online}, C{offline}, C{update} and C{error}
        (see L{on}).
    @ivar session: what channels, listeners, resources and log shippers use
        of this instance (a L{Session}); also what the classmethods of the
        resources take (C{Device.get(service.session, uuid)}).
    """

    _log = Logger()

    def __init__(self, host: str = DEFAULT_HOST, *, username: str | None = None,
                 password: str | None = None, organization: str | None = None,
                 uuid: str | None = None, secret: str | None = None,
                 api_key: str | None = None, allow_pairing: bool | None = None,
                 enable_network: bool = True, auth: dict[str, Any] | None = None,
                 reactor: Any = None, request_timeout: float = 30.0,
                 retry_policy: Callable[[int], float] | None = None,
                 max_response_size: int = MAX_RESPONSE_SIZE,
                 max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        super().__init__()
        options = check_options(
            host=host, username=username, password=password, organization=organization,
            uuid=uuid, secret=secret, api_key=api_key, allow_pairing=allow_pairing,
            enable_network=enable_network, auth=auth,
        )
        if not check_seconds(request_timeout, "request_timeout"):
            raise RuntimeError("request_timeout must be more than 0 seconds")
        if retry_policy is not None and not callable(retry_policy):
            raise RuntimeError("retry_policy must be a callable: attempt -> delay in seconds")
        check_count(max_response_size, "max_response_size", "bytes")
        check_count(max_message_size, "max_message_size", "bytes")
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.reactor = reactor
        self.clock = reactor
        self.events = Events()
        self.session = LiveSession(
            options, reactor, self.events,
            retry_policy or backoffPolicy(initialDelay=1.0, maxDelay=30.0),
            request_timeout, max_response_size, max_message_size, self._auth_updated)
        if self.session.network is not None:
            self.session.network.setServiceParent(self)
        self._pairing_listener: Listener | None = None

    @property
    def options(self) -> Options:
        """
        The options in use; once a pairing device is paired, with the C{uuid}
        and C{secret} it was given (store them for its next start).
        """
        return self.session.authenticator.options

    # -- lifetime --------------------------------------------------------------

    def startService(self) -> None:
        """Log in (then keep the token fresh) and join the network."""
        if self.session.stopped:
            raise RuntimeError("a stopped EXP instance cannot be started again")
        super().startService()
        self.session.authenticator.start()

    def stopService(self) -> Deferred[None]:
        """
        Stop for good: listeners cancelled, log shippers flushed, connections
        closed, nothing left scheduled; every later call raises
        L{exp.RuntimeError}.
        """
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        self.session.stop()
        await super().stopService()
        await self.session.close()

    def _check(self) -> None:
        if self.session.stopped:
            raise RuntimeError("this EXP instance has been stopped")

    def whenAuthenticated(self) -> Deferred[dict[str, Any]]:
        """The auth payload once logged in; L{AuthenticationError} if refused."""
        return self.session.authenticator.current()

    def whenConnected(self) -> Deferred[None]:
        """
        Fires once the network connection is up.

        @raise exp.NetworkError: with C{enable_network=False}.
        """
        self._check()
        return self.session.require_network().when_connected()

    @property
    def is_connected(self) -> bool:
        """Whether the network connection is up."""
        return self.session.network is not None and self.session.network.is_connected

    @property
    def auth(self) -> dict[str, Any]:
        """The current auth payload (L{exp.RuntimeError} before the first login)."""
        if self.session.auth is None:
            raise RuntimeError("not authenticated yet: wait for whenAuthenticated()")
        return self.session.auth

    @property
    def identity(self) -> dict[str, Any]:
        """The identity of the current auth payload (a copy): C{type}, C{uuid}, ..."""
        return dict(self.auth["identity"])

    @property
    def pairing_code(self) -> str | None:
        """The code to pair this device with, while it is unpaired."""
        payload = self.session.auth
        if payload is None or payload["identity"].get("paired") is not False:
            return None
        return payload["identity"].get("pairingCode")

    def get_auth(self) -> Deferred[dict[str, Any]]:
        """The current auth payload, refreshed first if it is due."""
        self._check()
        return self.session.authenticator.current()

    def on(self, name: str, callback: Callable[..., Any]) -> Handle:
        """
        Call C{callback} on every event C{name}: C{online}, C{offline},
        C{update} (with the new auth payload) or C{error} (with the fatal
        error).
        """
        return self.events.on(name, callback)

    def _auth_updated(self, payload: dict[str, Any]) -> None:
        if self.session.network is not None and self.running:
            self.session.network.connect(payload)
        paired = payload["identity"].get("paired")
        if paired is False and self.session.network is not None:
            self._listen_for_pairing(payload)
        elif self._pairing_listener is not None:
            self._pairing_listener.cancel()
            self._pairing_listener = None

    def _listen_for_pairing(self, payload: dict[str, Any]) -> None:
        if self._pairing_listener is not None:
            return
        channel = Channel(self.session, payload["identity"]["uuid"], system=True)

        def paired(broadcast: Broadcast) -> None:
            body = broadcast.payload
            if isinstance(body, dict) and isinstance(body.get("uuid"), str) and isinstance(
                    body.get("secret"), str):
                self._log.info("paired as device {uuid}", uuid=body["uuid"])
                self.session.authenticator.paired(body["uuid"], body["secret"])

        listener = Listener(self.session, channel, "paired", max_age=60, callback=paired)
        self._pairing_listener = listener
        self.session.subscribe(listener).addErrback(
            lambda f: self._log.failure("could not listen for pairing", f))

    # -- raw API -----------------------------------------------------------------

    def get(self, path: str, params: Any = None) -> Deferred[Any]:
        """GET C{path} of the API; the decoded JSON (C{None} when empty)."""
        return self.session.request("GET", path, encode_params(params))

    def post(self, path: str, payload: Any = None, params: Any = None) -> Deferred[Any]:
        """POST C{payload} (any JSON) to C{path} of the API; the decoded JSON answer."""
        return self.session.request("POST", path, encode_params(params), payload)

    def patch(self, path: str, payload: Any = None, params: Any = None) -> Deferred[Any]:
        """PATCH C{path} of the API with C{payload}; the decoded JSON answer."""
        return self.session.request("PATCH", path, encode_params(params), payload)

    def put(self, path: str, payload: Any = None, params: Any = None) -> Deferred[Any]:
        """PUT C{payload} at C{path} of the API; the decoded JSON answer."""
        return self.session.request("PUT", path, encode_params(params), payload)

    def delete(self, path: str, params: Any = None) -> Deferred[Any]:
        """DELETE C{path} of the API; the decoded JSON answer (C{None} when empty)."""
        return self.session.request("DELETE", path, encode_params(params))

    # -- network -----------------------------------------------------------------

    def get_channel(self, name: str, system: bool = False, consumer: bool = False) -> Channel:
        """
        A channel object (no I/O).

        @param system: a channel of server notifications (listen only).
        @param consumer: a channel that consumer apps may use.
        """
        return Channel(self.session, name, system, consumer)

    # -- resources ----------------------------------------------------------------

    get_device, find_devices, create_device, delete_device = family(resources.Device)
    """The calls of devices: get, find, create and delete (L{Device.get}, ...)."""

    def get_current_device(self) -> Deferred[resources.Device | None]:
        """This device's document; C{None} for users and consumer apps."""
        return resources.Device.current(self.session)

    get_thing, find_things, create_thing, delete_thing = family(resources.Thing)
    """Things, like devices: L{Thing.get}, L{Thing.find}, L{Thing.create}, L{Thing.remove}."""
    (get_experience, find_experiences, create_experience,
     delete_experience) = family(resources.Experience)
    """Experiences (L{Experience.get}, L{Experience.find}, and create and delete)."""

    def get_current_experience(self) -> Deferred[resources.Experience | None]:
        """The experience of this device, if any."""
        return resources.Experience.current(self.session)

    get_location, find_locations, create_location, delete_location = family(resources.Location)
    """Locations: L{Location.get} and its kind's other calls on the session."""

    def get_current_location(self) -> Deferred[resources.Location | None]:
        """The location of this device, if any."""
        return resources.Location.current(self.session)

    def get_current_zones(self) -> Deferred[list[resources.Zone]]:
        """The zones of this device's location it is in ([] if none)."""
        return resources.Zone.current(self.session)

    get_feed, find_feeds, create_feed, delete_feed = family(resources.Feed)
    """Feeds, created and deleted as devices are (L{Feed.get}, L{Feed.find})."""
    get_content, find_content = readers(resources.Content)
    """Content, read-only: L{Content.get} and L{Content.find} only."""

    def get_data(self, key: str | None = None, group: str = "default"
                 ) -> Deferred[resources.Data | None]:
        """The data item C{group}/C{key}; C{None} if there is none (or no key or group)."""
        return resources.Data.get(self.session, key, group)

    def find_data(self, params: dict[str, Any] | None = None,
                  **kwargs: Any) -> Deferred[resources.ResourceList[resources.Data]]:
        """The data items that match the query parameters C{params} and C{kwargs}."""
        return resources.Data.find(self.session, params, **kwargs)

    def create_data(self, key: str, group: str = "default",
                    value: Any = None) -> Deferred[resources.Data]:
        """Store C{value} (any JSON) at C{group}/C{key}, overwriting what was there."""
        return resources.Data.create(self.session, key, group, value)

    def delete_data(self, key: str, group: str = "default") -> Deferred[None]:
        """Delete the data item C{group}/C{key}."""
        return resources.Data.remove(self.session, key, group)

    # -- logs ------------------------------------------------------------------

    def log_observer(self, level: LogLevel = LogLevel.info, interval: float = 5.0,
                     batch_size: int = 100, max_queued: int = 1000) -> LogShipper:
        """
        A C{twisted.logger} observer that ships log events to EXP in batches
        (C{globalLogPublisher.addObserver(service.log_observer())}); it never
        blocks or fails the program, and drops the oldest entries when the
        server cannot take them.

        @param level: the lowest level shipped.
        @param interval: seconds between batches.
        @param batch_size: the most entries sent at a time.
        @param max_queued: the most entries kept while they cannot be sent.
        """
        shipper = LogShipper(self.session, level, interval, batch_size, max_queued)
        shipper.setServiceParent(self)
        return shipper
