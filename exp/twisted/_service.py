"""
L{ExpService}: one EXP identity — authentication, the REST API and the
real-time network — as a Twisted service whose calls return Deferreds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application.internet import backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, ensureDeferred
from twisted.logger import Logger, LogLevel

from exp._options import DEFAULT_HOST, Options, check_count, check_options, check_seconds
from exp.errors import ApiError, NetworkError, RuntimeError
from exp.twisted._auth import Authenticator
from exp.twisted._channels import Broadcast, Channel, Listener
from exp.twisted._events import Events, Handle
from exp.twisted._http import MAX_RESPONSE_SIZE, NO_BODY, Http, error_for
from exp.twisted._logs import LogShipper
from exp.twisted._network import MAX_MESSAGE_SIZE, Network
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
    data_path,
    query_params,
    segment,
)

R = TypeVar("R", bound=Resource)


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
        retry = retry_policy or backoffPolicy(initialDelay=1.0, maxDelay=30.0)
        self._http = Http(reactor, request_timeout, max_response_size)
        self._request_timeout = request_timeout
        self._auth = Authenticator(options, self._http, reactor, self.events, retry,
                                   self._auth_updated)
        self._network: Network | None = None
        if options.enable_network:
            self._network = Network(reactor, self.events, retry, self._socket_refused,
                                    max_message_size)
            self._network.setServiceParent(self)
        self._pairing_listener: Listener | None = None
        self._stopped = False

    @property
    def options(self) -> Options:
        """
        The options in use; once a pairing device is paired, with the C{uuid}
        and C{secret} it was given (store them for its next start).
        """
        return self._auth.options

    # -- lifetime --------------------------------------------------------------

    def startService(self) -> None:
        if self._stopped:
            raise RuntimeError("a stopped EXP instance cannot be started again")
        super().startService()
        self._auth.start()

    def stopService(self) -> Deferred[None]:
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        self._stopped = True
        self._auth.stop()
        await super().stopService()
        await self._http.close()

    def _check(self) -> None:
        if self._stopped:
            raise RuntimeError("this EXP instance has been stopped")

    def whenAuthenticated(self) -> Deferred[dict[str, Any]]:
        """The auth payload once logged in; L{AuthenticationError} if refused."""
        return self._auth.current()

    def whenConnected(self) -> Deferred[None]:
        """Fires once the network connection is up."""
        self._check()
        return self._require_network().when_connected()

    @property
    def is_connected(self) -> bool:
        """Whether the network connection is up."""
        return self._network is not None and self._network.is_connected

    @property
    def auth(self) -> dict[str, Any]:
        """The current auth payload (L{exp.RuntimeError} before the first login)."""
        if self._auth.payload is None:
            raise RuntimeError("not authenticated yet: wait for whenAuthenticated()")
        return self._auth.payload

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self.auth["identity"])

    @property
    def pairing_code(self) -> str | None:
        """The code to pair this device with, while it is unpaired."""
        payload = self._auth.payload
        if payload is None or payload["identity"].get("paired") is not False:
            return None
        return payload["identity"].get("pairingCode")

    def get_auth(self) -> Deferred[dict[str, Any]]:
        """The current auth payload, refreshed first if it is due."""
        self._check()
        return self._auth.current()

    def on(self, name: str, callback: Callable[..., Any]) -> Handle:
        """Call C{callback} on C{online}, C{offline}, C{update} or C{error}."""
        return self.events.on(name, callback)

    def _auth_updated(self, payload: dict[str, Any]) -> None:
        if self._network is not None and self.running:
            self._network.connect(payload)
        paired = payload["identity"].get("paired")
        if paired is False and self._network is not None:
            self._listen_for_pairing(payload)
        elif self._pairing_listener is not None:
            self._pairing_listener.cancel()
            self._pairing_listener = None

    def _listen_for_pairing(self, payload: dict[str, Any]) -> None:
        if self._pairing_listener is not None:
            return
        channel = Channel(self, payload["identity"]["uuid"], system=True)

        def paired(broadcast: Broadcast) -> None:
            body = broadcast.payload
            if isinstance(body, dict) and isinstance(body.get("uuid"), str) and isinstance(
                    body.get("secret"), str):
                self._log.info("paired as device {uuid}", uuid=body["uuid"])
                self._auth.paired(body["uuid"], body["secret"])

        assert self._network is not None
        listener = Listener(self, channel, "paired", max_age=60, callback=paired)
        self._pairing_listener = listener
        self._network.add_listener(listener).addErrback(
            lambda f: self._log.failure("could not listen for pairing", f))

    def _socket_refused(self) -> None:
        payload = self._auth.payload
        if payload is not None:
            self._auth.rejected(payload["token"])

    # -- raw API -----------------------------------------------------------------

    async def _authenticated(self, waiting: Deferred[dict[str, Any]] | None = None
                             ) -> dict[str, Any]:
        """
        The auth payload (from C{waiting}, by default the current one); if a
        login being retried gives none within the request timeout, its last
        failure.
        """
        if waiting is None:
            waiting = self._auth.current()

        def timed_out(result: Any, timeout: float) -> Any:
            raise self._auth.last_error or NetworkError(
                f"not logged in within {timeout:g} s")

        if not waiting.called:
            waiting.addTimeout(self._request_timeout, self.clock, onTimeoutCancel=timed_out)
        return await waiting

    async def _call(self, method: str, path: str, params: Any = None,
                    payload: Any = NO_BODY, timeout: float | None = None) -> Any:
        self._check()
        if not isinstance(path, str) or not path.startswith("/"):
            raise RuntimeError("a path of the API is a string that starts with '/'")
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise RuntimeError(f"the path {path!r:.60} is not valid text") from None
        auth = await self._authenticated()
        for attempt in (1, 2):
            status, body = await self._http.call(
                method, auth["api"]["host"] + path, token=auth["token"], params=params,
                payload=payload, timeout=timeout,
            )
            if status == 401 and attempt == 1:
                auth = await self._authenticated(self._auth.rejected(auth["token"]))
                continue
            if status >= 300:
                raise error_for(status, body)
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, path: str, params: Any = None) -> Deferred[Any]:
        """GET C{path} of the API; the decoded JSON (C{None} when empty)."""
        return ensureDeferred(self._call("GET", path, _params(params)))

    def post(self, path: str, payload: Any = None, params: Any = None) -> Deferred[Any]:
        return ensureDeferred(self._call("POST", path, _params(params), payload))

    def patch(self, path: str, payload: Any = None, params: Any = None) -> Deferred[Any]:
        return ensureDeferred(self._call("PATCH", path, _params(params), payload))

    def put(self, path: str, payload: Any = None, params: Any = None) -> Deferred[Any]:
        return ensureDeferred(self._call("PUT", path, _params(params), payload))

    def delete(self, path: str, params: Any = None) -> Deferred[Any]:
        return ensureDeferred(self._call("DELETE", path, _params(params)))

    # -- network -----------------------------------------------------------------

    def _organization(self) -> str:
        return str(self.auth["identity"].get("organization", ""))

    def _require_network(self) -> Network:
        if self._network is None:
            raise NetworkError("this instance was started with enable_network=False: "
                               "it cannot listen or connect to the network")
        return self._network

    def _network_or_none_remove(self, listener: Listener) -> None:
        if self._network is not None:
            self._network.remove_listener(listener)

    def get_channel(self, name: str, system: bool = False, consumer: bool = False) -> Channel:
        """A channel object (no I/O)."""
        self._check()
        return Channel(self, name, system, consumer)

    async def _broadcast(self, channel: Channel, name: str, payload: Any,
                         timeout: float) -> list[Any]:
        seconds = check_seconds(timeout)
        await self._authenticated()
        body = {"channel": channel.id, "name": name, "payload": payload}
        # the answer comes after the responses are collected: wait longer for it
        answer = await self._call("POST", "/api/networks/current/broadcasts",
                                  {"timeout": str(int(seconds * 1000))}, body,
                                  timeout=self._request_timeout + seconds)
        return list(answer) if isinstance(answer, list) else []

    async def _respond(self, broadcast: Broadcast, payload: Any) -> None:
        await self._call("POST", "/api/networks/current/responses", None,
                         {"id": broadcast.id, "channel": broadcast.channel.id,
                          "payload": payload})

    async def _listen(self, channel: Channel, name: str,
                      callback: Callable[[Broadcast], Any] | None, timeout: float,
                      max_age: float, max_queue: int) -> Listener:
        network = self._require_network()
        check_seconds(timeout)
        check_seconds(max_age, "max_age")
        check_count(max_queue, "max_queue", "broadcasts")
        await self._auth.current()
        listener = Listener(self, channel, name, max_age, callback, max_queue)
        subscribed = network.add_listener(listener)
        subscribed.addTimeout(timeout, self.clock)
        try:
            await subscribed
        except (CancelledError, TimeoutError):
            listener.cancel()
            raise NetworkError(
                f"the network did not confirm listening on {channel.name!r}"
                f" within {timeout:g} s"
            ) from None
        except Exception:
            listener.cancel()
            raise
        return listener

    # -- resources ----------------------------------------------------------------

    async def _get_one(self, kind: type[R], uuid: str | None) -> R | None:
        if not uuid or not isinstance(uuid, str):
            return None
        try:
            path = f"{kind.collection}/{segment(uuid)}"
        except RuntimeError:  # not valid text: no document has it
            return None
        try:
            document = await self.get(path)
        except ApiError as e:
            if e.status_code == 404:
                return None
            raise
        return kind(self, document)

    async def _find(self, kind: Callable[[ExpService, dict[str, Any]], Any], path: str,
                    params: dict[str, Any] | None, kwargs: dict[str, Any]) -> ResourceList:
        answer = await self.get(path, query_params(params, kwargs))
        if not isinstance(answer, dict):
            answer = {"results": [], "total": 0}
        return ResourceList([kind(self, d) for d in answer.get("results", [])], answer)

    async def _create(self, kind: type[R], document: dict[str, Any] | None) -> R:
        if document is None:
            document = {}
        if not isinstance(document, dict):
            raise RuntimeError("a document is a dict")
        return kind(self, await self.post(kind.collection, document))

    async def _delete_one(self, kind: type[Resource], uuid: str) -> None:
        if not uuid or not isinstance(uuid, str):
            raise RuntimeError("delete needs a uuid")
        await self.delete(f"{kind.collection}/{segment(uuid)}")

    def get_device(self, uuid: str | None = None) -> Deferred[Device | None]:
        return ensureDeferred(self._get_one(Device, uuid))

    def find_devices(self, params: dict[str, Any] | None = None,
                     **kwargs: Any) -> Deferred[ResourceList]:
        return ensureDeferred(self._find(Device, Device.collection, params, kwargs))

    def create_device(self, document: dict[str, Any] | None = None) -> Deferred[Device]:
        return ensureDeferred(self._create(Device, document))

    def delete_device(self, uuid: str) -> Deferred[None]:
        return ensureDeferred(self._delete_one(Device, uuid))

    def get_current_device(self) -> Deferred[Device | None]:
        """This device's document; C{None} for users and consumer apps."""
        return ensureDeferred(self._current_device())

    async def _current_device(self) -> Device | None:
        self._check()
        auth = await self._authenticated()
        identity = auth["identity"]
        if identity.get("type") != "device" or identity.get("paired") is False:
            return None
        return await self.get_device(identity.get("uuid"))

    def get_thing(self, uuid: str | None = None) -> Deferred[Thing | None]:
        return ensureDeferred(self._get_one(Thing, uuid))

    def find_things(self, params: dict[str, Any] | None = None,
                    **kwargs: Any) -> Deferred[ResourceList]:
        return ensureDeferred(self._find(Thing, Thing.collection, params, kwargs))

    def create_thing(self, document: dict[str, Any] | None = None) -> Deferred[Thing]:
        return ensureDeferred(self._create(Thing, document))

    def delete_thing(self, uuid: str) -> Deferred[None]:
        return ensureDeferred(self._delete_one(Thing, uuid))

    def get_experience(self, uuid: str | None = None) -> Deferred[Experience | None]:
        return ensureDeferred(self._get_one(Experience, uuid))

    def find_experiences(self, params: dict[str, Any] | None = None,
                         **kwargs: Any) -> Deferred[ResourceList]:
        return ensureDeferred(self._find(Experience, Experience.collection, params, kwargs))

    def create_experience(self, document: dict[str, Any] | None = None) -> Deferred[Experience]:
        return ensureDeferred(self._create(Experience, document))

    def delete_experience(self, uuid: str) -> Deferred[None]:
        return ensureDeferred(self._delete_one(Experience, uuid))

    def get_current_experience(self) -> Deferred[Experience | None]:
        """The experience of this device, if any."""
        return ensureDeferred(self._current(lambda d: d.get_experience()))

    async def _current(self, step: Callable[[Device], Deferred[Any]]) -> Any:
        device = await self.get_current_device()
        return None if device is None else await step(device)

    def get_location(self, uuid: str | None = None) -> Deferred[Location | None]:
        return ensureDeferred(self._get_one(Location, uuid))

    def find_locations(self, params: dict[str, Any] | None = None,
                       **kwargs: Any) -> Deferred[ResourceList]:
        return ensureDeferred(self._find(Location, Location.collection, params, kwargs))

    def create_location(self, document: dict[str, Any] | None = None) -> Deferred[Location]:
        return ensureDeferred(self._create(Location, document))

    def delete_location(self, uuid: str) -> Deferred[None]:
        return ensureDeferred(self._delete_one(Location, uuid))

    def get_current_location(self) -> Deferred[Location | None]:
        """The location of this device, if any."""
        return ensureDeferred(self._current(lambda d: d.get_location()))

    def get_current_zones(self) -> Deferred[list[Zone]]:
        """The zones of this device's location it is in ([] if none)."""
        return ensureDeferred(self._current_zones())

    async def _current_zones(self) -> list[Zone]:
        zones = await self._current(lambda d: d.get_zones())
        return zones or []

    def get_feed(self, uuid: str | None = None) -> Deferred[Feed | None]:
        return ensureDeferred(self._get_one(Feed, uuid))

    def find_feeds(self, params: dict[str, Any] | None = None,
                   **kwargs: Any) -> Deferred[ResourceList]:
        return ensureDeferred(self._find(Feed, Feed.collection, params, kwargs))

    def create_feed(self, document: dict[str, Any] | None = None) -> Deferred[Feed]:
        return ensureDeferred(self._create(Feed, document))

    def delete_feed(self, uuid: str) -> Deferred[None]:
        return ensureDeferred(self._delete_one(Feed, uuid))

    def get_content(self, uuid: str | None = None) -> Deferred[Content | None]:
        return ensureDeferred(self._get_one(Content, uuid))

    def find_content(self, params: dict[str, Any] | None = None,
                     **kwargs: Any) -> Deferred[ResourceList]:
        return ensureDeferred(self._find(Content, Content.collection, params, kwargs))

    def get_data(self, key: str | None = None, group: str = "default"
                 ) -> Deferred[Data | None]:
        """The data item C{group}/C{key}; C{None} if there is none (or no key or group)."""
        return ensureDeferred(self._get_data(key, group))

    async def _get_data(self, key: str | None, group: str) -> Data | None:
        if key is None or key == "" or group == "":
            return None
        _check_data_key(key, group)
        try:
            return Data(self, await self.get(data_path(group, key)))
        except ApiError as e:
            if e.status_code == 404:
                return None
            raise

    def find_data(self, params: dict[str, Any] | None = None,
                  **kwargs: Any) -> Deferred[ResourceList]:
        return ensureDeferred(self._find(Data, "/api/data", params, kwargs))

    def create_data(self, key: str, group: str = "default",
                    value: Any = None) -> Deferred[Data]:
        """Store C{value} at C{group}/C{key} (overwriting what was there)."""
        _check_data_key(key, group)
        return ensureDeferred(self._create_data(key, group, value))

    async def _create_data(self, key: str, group: str, value: Any) -> Data:
        return Data(self, await self.put(data_path(group, key), value))

    # -- logs ------------------------------------------------------------------

    def log_observer(self, level: LogLevel = LogLevel.info, interval: float = 5.0,
                     batch_size: int = 100, max_queued: int = 1000) -> LogShipper:
        """
        A C{twisted.logger} observer that ships log events to EXP in batches
        (C{globalLogPublisher.addObserver(service.log_observer())}); it never
        blocks or fails the program, and drops the oldest entries when the
        server cannot take them.
        """
        shipper = LogShipper(self, level, interval, batch_size, max_queued)
        shipper.setServiceParent(self)
        return shipper

    def _post_logs(self, entries: list[dict[str, Any]]) -> Deferred[None]:
        payload = self._auth.payload

        async def post() -> None:
            if payload is None:
                raise NetworkError("not authenticated")
            status, body = await self._http.call(
                "POST", payload["api"]["host"] + "/api/logs", token=payload["token"],
                payload=entries)
            if status >= 300:
                raise error_for(status, body)

        return ensureDeferred(post())

    def delete_data(self, key: str, group: str = "default") -> Deferred[None]:
        _check_data_key(key, group)
        return ensureDeferred(self._delete_data(key, group))

    async def _delete_data(self, key: str, group: str) -> None:
        await self.delete(data_path(group, key))


def _check_data_key(key: Any, group: Any) -> None:
    if not isinstance(key, str) or not key:
        raise RuntimeError("a data item's key is a non-empty string")
    if not isinstance(group, str) or not group:
        raise RuntimeError("a data item's group is a non-empty string")


def _params(params: Any) -> Any:
    """Query parameters as treq takes them, JSON-ish values as strings."""
    if params is None:
        return None
    if not isinstance(params, dict):
        raise RuntimeError("params is a dict of query parameters")
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        out[str(key)] = [str(v) for v in value] if isinstance(value, (list, tuple)) else str(
            value)
    try:
        "".join(out).encode("utf-8")
        "".join(v if isinstance(v, str) else "".join(v) for v in out.values()).encode("utf-8")
    except UnicodeEncodeError:
        raise RuntimeError("query parameters must be valid text (no lone surrogates)") from None
    return out



