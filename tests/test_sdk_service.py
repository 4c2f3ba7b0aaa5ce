"""
L{exp.twisted.ExpService} end to end against a real local server: options,
authentication and its events, the raw API calls and their errors,
re-authentication after a 401, unreachable servers, pairing, and stopping.
"""

from __future__ import annotations

import builtins
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol

import exp.errors
from exp.server.testing import DEMO, start_server
from exp.twisted import (
    ApiError,
    AuthenticationError,
    ExpService,
    NetworkError,
    RuntimeError,
    UnexpectedError,
)

from ._sdk import (
    CONSUMER,
    DEVICE,
    USER,
    Services,
    Watched,
    eventually,
    serve_on,
    sleep,
    user_payload,
    within,
)

FAST_RETRY = {"retry_policy": lambda attempt: 0.05}


class Recorder:
    """Records the arguments of every event it is called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> None:
        self.calls.append(args)


# -- options -------------------------------------------------------------------


def test_runtime_error_is_a_builtin_runtime_error() -> None:
    """exp.RuntimeError is an ExpError and a builtins.RuntimeError."""
    assert issubclass(RuntimeError, exp.errors.ExpError)
    assert issubclass(RuntimeError, builtins.RuntimeError)
    assert RuntimeError is exp.errors.RuntimeError


AUTH = {"token": "t", "expiration": 1, "identity": {}, "api": {}, "network": {}}


@pytest.mark.parametrize(("options", "named"), [
    ({}, "no credentials"),
    ({"allow_pairing": False}, "allow_pairing"),
    ({"username": DEMO["username"]}, "password"),
    ({"username": DEMO["username"], "password": "x"}, "organization"),
    ({**USER, "uuid": "u"}, "not both"),
    ({**USER, "allow_pairing": True}, "allow_pairing"),
    ({"uuid": "u"}, "secret"),
    ({"secret": "s"}, "uuid"),
    ({"api_key": "k"}, "uuid"),
    ({"uuid": "u", "secret": "s", "api_key": "k"}, "not both"),
    ({**CONSUMER, "allow_pairing": True}, "allow_pairing"),
    ({"username": "", "password": "p", "organization": "o"}, "username"),
    ({"uuid": 5, "secret": "s"}, "uuid"),
    ({**DEVICE, "enable_network": "yes"}, "enable_network"),
    ({**DEVICE, "allow_pairing": 1}, "allow_pairing"),
    ({**DEVICE, "host": "ftp://example.com"}, "http"),
    ({**DEVICE, "host": "example.com"}, "http"),
    ({**DEVICE, "host": "http://127.0.0.1:99999"}, "port"),
    ({**DEVICE, "host": "http://example.com/?a=b"}, "query"),
    ({**DEVICE, "host": ""}, "host"),
    ({"auth": "token"}, "auth"),
    ({"auth": {"token": "t"}}, "expiration"),
    ({"auth": dict(AUTH, identity="me")}, "identity"),
    ({"auth": dict(AUTH, api={"host": "http://api.example"},
                   network={"host": "https://ws.example"})}, "http://api.example"),
    ({**DEVICE, "max_response_size": 0}, "max_response_size"),
    ({**DEVICE, "max_response_size": 1.5}, "max_response_size"),
    ({**DEVICE, "max_message_size": -1}, "max_message_size"),
    ({**DEVICE, "max_message_size": True}, "max_message_size"),
    ({**DEVICE, "max_message_size": "4M"}, "max_message_size"),
])
def test_bad_options_raise_runtime_error(options: dict[str, Any], named: str) -> None:
    """Missing, contradictory or malformed options raise exp.RuntimeError naming them."""
    with pytest.raises(RuntimeError) as caught:
        ExpService(**options)
    assert named in str(caught.value)
    assert isinstance(caught.value, builtins.RuntimeError)


@pytest_twisted.ensureDeferred
async def test_bad_options_make_no_request(site: Watched) -> None:
    """Options are checked before any I/O: a bad one reaches no server."""
    with pytest.raises(RuntimeError):
        ExpService(host=site.url, uuid=DEMO["device_uuid"])
    await sleep(0.1)
    assert site.requests == []


# -- authentication -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_user_credentials(sdk: Services, site: Watched) -> None:
    """A user logs in with username, password and organization."""
    service = sdk.start(**USER)
    auth = await within(service.whenAuthenticated())
    assert auth["identity"]["type"] == "user"
    assert auth["identity"]["username"] == DEMO["username"]
    assert auth["identity"]["organization"] == DEMO["organization"]
    assert auth["api"]["host"] == site.url
    assert service.auth == auth
    assert service.identity == auth["identity"]
    assert service.pairing_code is None
    assert site.logins() == 1


@pytest_twisted.ensureDeferred
async def test_device_credentials(sdk: Services) -> None:
    """A device logs in with its uuid and secret."""
    service = sdk.start(**DEVICE)
    auth = await within(service.whenAuthenticated())
    assert auth["identity"]["type"] == "device"
    assert auth["identity"]["uuid"] == DEMO["device_uuid"]
    assert auth["identity"]["paired"] is True
    assert service.pairing_code is None


@pytest_twisted.ensureDeferred
async def test_consumer_app_credentials(sdk: Services) -> None:
    """A consumer app logs in with its uuid and api key."""
    service = sdk.start(**CONSUMER)
    auth = await within(service.whenAuthenticated())
    assert auth["identity"]["type"] == "consumerApp"
    assert auth["identity"]["uuid"] == DEMO["consumer_uuid"]


@pytest_twisted.ensureDeferred
async def test_pairing_mode(sdk: Services) -> None:
    """allow_pairing without credentials logs in as an unpaired device with a code."""
    service = sdk.start(allow_pairing=True)
    auth = await within(service.whenAuthenticated())
    assert auth["identity"]["type"] == "device"
    assert auth["identity"]["paired"] is False
    assert isinstance(service.pairing_code, str) and service.pairing_code
    assert service.pairing_code == auth["identity"]["pairingCode"]


@pytest_twisted.ensureDeferred
async def test_refused_device_with_allow_pairing_falls_back_to_pairing(
        sdk: Services, site: Watched) -> None:
    """A device whose credentials are wrong but allows pairing starts unpaired (the server
    answers such a login with an unpaired identity at once)."""
    service = sdk.start(uuid=DEMO["device_uuid"], secret="wrong", allow_pairing=True)
    auth = await within(service.whenAuthenticated())
    assert auth["identity"]["paired"] is False
    assert service.pairing_code
    assert site.logins() == 1


def test_auth_before_start_is_a_runtime_error() -> None:
    """Reading auth before the first login raises exp.RuntimeError."""
    service = ExpService(host="http://127.0.0.1:1", **USER)
    with pytest.raises(RuntimeError):
        service.auth  # noqa: B018


BAD_CREDENTIALS = [
    dict(USER, password="wrong"),
    dict(USER, organization="elsewhere"),
    dict(DEVICE, secret="wrong"),
    dict(CONSUMER, api_key="wrong"),
]


@pytest.mark.parametrize("credentials", BAD_CREDENTIALS,
                         ids=["password", "organization", "secret", "api_key"])
@pytest_twisted.ensureDeferred
async def test_bad_credentials_are_an_authentication_error_without_retry(
        sdk: Services, site: Watched, credentials: dict[str, str]) -> None:
    """Refused credentials fail whenAuthenticated and emit error, after exactly one login."""
    errors = Recorder()
    service = ExpService(host=site.url, **credentials, **FAST_RETRY)
    handle = service.on("error", errors)
    sdk.started.append(service)
    service.startService()
    with pytest.raises(AuthenticationError) as caught:
        await within(service.whenAuthenticated())
    assert "refused" in str(caught.value)
    assert len(errors.calls) == 1
    assert isinstance(errors.calls[0][0], AuthenticationError)
    # A retry would come after 0.05 s; give it ample time to show up.
    await sleep(0.5)
    with pytest.raises(AuthenticationError):
        await within(service.get("/api/devices"))
    with pytest.raises(AuthenticationError):
        await within(service.find_devices())
    assert site.logins() == 1
    assert len(errors.calls) == 1
    handle.cancel()


@pytest_twisted.ensureDeferred
async def test_get_auth_is_the_current_payload(sdk: Services) -> None:
    """get_auth() answers the payload whenAuthenticated gave."""
    service = await sdk.user()
    auth = await within(service.whenAuthenticated())
    assert await within(service.get_auth()) == auth
    assert (await within(service.get_auth()))["token"] == service.auth["token"]


@pytest_twisted.ensureDeferred
async def test_update_event_on_login_and_refresh(sdk: Services) -> None:
    """update fires with each new payload: at login and at each refresh, before expiry."""
    short = Watched(await start_server(token_lifetime=3))
    try:
        updates = Recorder()
        service = ExpService(host=short.url, **USER)
        service.on("update", updates)
        sdk.started.append(service)
        service.startService()
        first = await within(service.whenAuthenticated())
        assert updates.calls == [(first,)]
        await eventually(lambda: len(updates.calls) >= 2, "a refresh")
        fresh = updates.calls[1][0]
        assert fresh["token"] != first["token"]
        assert fresh["identity"] == first["identity"]
        assert short.count("POST", "/api/auth/token", 200) >= 1
        assert short.logins() == 1
        assert (await within(service.get_auth()))["token"] == updates.calls[-1][0]["token"]
        devices = await within(service.find_devices())
        assert devices.total >= 1
        await within(service.stopService())
    finally:
        await short.close()


@pytest_twisted.ensureDeferred
async def test_unknown_event_is_a_runtime_error(sdk: Services) -> None:
    """on() with an unknown event name or a non-callable raises exp.RuntimeError."""
    service = sdk.start(**USER)
    with pytest.raises(RuntimeError, match="online"):
        service.on("connected", lambda: None)
    with pytest.raises(RuntimeError):
        service.on("online", "not callable")  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_online_offline_events_and_cancel(sdk: Services, site: Watched) -> None:
    """online/offline follow the socket; a cancelled handle is called no more."""
    online, offline, witness = Recorder(), Recorder(), Recorder()
    service = ExpService(host=site.url, **DEVICE)
    on = service.on("online", online)
    off = service.on("offline", offline)
    service.on("online", lambda: witness("online"))
    service.on("offline", lambda: witness("offline"))
    sdk.started.append(service)
    assert not service.is_connected
    service.startService()
    await within(service.whenConnected())
    assert service.is_connected
    assert online.calls == [()]
    assert offline.calls == []

    # The server drops every session: the SDK goes offline, then reconnects.
    site.server.network.close_all()
    await eventually(lambda: len(witness.calls) >= 3, "offline, then online again")
    assert witness.calls == [("online",), ("offline",), ("online",)]
    assert offline.calls == [()]
    assert online.calls == [(), ()]
    await within(service.whenConnected())
    assert service.is_connected

    on.cancel()
    off.cancel()
    off.cancel()  # harmless
    site.server.network.close_all()
    await eventually(lambda: len(witness.calls) >= 5, "a second reconnection")
    assert witness.calls[3:] == [("offline",), ("online",)]
    assert online.calls == [(), ()]
    assert offline.calls == [()]


@pytest_twisted.ensureDeferred
async def test_when_connected_without_network_is_a_network_error(sdk: Services) -> None:
    """whenConnected with enable_network=False raises exp.NetworkError; REST still works."""
    service = await sdk.user(enable_network=False)
    with pytest.raises(NetworkError, match="enable_network"):
        service.whenConnected()
    assert not service.is_connected
    assert (await within(service.find_devices())).total >= 1


# -- starting from an auth payload -----------------------------------------------


@pytest_twisted.ensureDeferred
async def test_auth_payload_is_used_without_login(sdk: Services, site: Watched) -> None:
    """auth= alone starts authenticated: calls work and nothing logs in."""
    payload = await user_payload(site.url)
    site.requests.clear()
    service = sdk.start(auth=payload)
    assert await within(service.whenAuthenticated()) == payload
    devices = await within(service.find_devices())
    assert [d.uuid for d in devices] == [DEMO["device_uuid"]]
    await within(service.whenConnected())
    assert site.logins() == 0


@pytest_twisted.ensureDeferred
async def test_rejected_auth_payload_logs_in_with_credentials(
        sdk: Services, site: Watched) -> None:
    """A refused auth= token gives one 401, one login with the credentials, one retry."""
    other = await start_server()
    try:
        foreign = await user_payload(other.url)  # signed by another server's key
    finally:
        await other.stop()
    foreign = dict(foreign, api={"host": site.url}, network={"host": site.url})
    site.requests.clear()
    service = sdk.start(auth=foreign, enable_network=False, **USER)
    assert (await within(service.whenAuthenticated()))["token"] == foreign["token"]
    assert site.logins() == 0
    devices = await within(service.find_devices())
    assert devices.total == 1
    assert site.requests == [("GET", "/api/devices", 401), ("POST", "/api/auth/login", 200),
                             ("GET", "/api/devices", 200)]
    assert service.auth["token"] != foreign["token"]


@pytest_twisted.ensureDeferred
async def test_rejected_auth_payload_without_credentials(
        sdk: Services, site: Watched) -> None:
    """A refused auth= token with no credentials is an AuthenticationError, no login."""
    other = await start_server()
    try:
        foreign = await user_payload(other.url)
    finally:
        await other.stop()
    foreign = dict(foreign, api={"host": site.url}, network={"host": site.url})
    errors = Recorder()
    service = ExpService(host=site.url, auth=foreign, enable_network=False)
    service.on("error", errors)
    sdk.started.append(service)
    service.startService()
    with pytest.raises(AuthenticationError):
        await within(service.find_devices())
    with pytest.raises(AuthenticationError):
        await within(service.whenAuthenticated())
    assert [type(e) for (e,) in errors.calls] == [AuthenticationError]
    assert site.logins() == 0


@pytest_twisted.ensureDeferred
async def test_expired_auth_payload_logs_in_at_once(sdk: Services, site: Watched) -> None:
    """An auth= payload that has expired is not used: the service logs in."""
    payload = await user_payload(site.url)
    expired = dict(payload, expiration=1000)
    site.requests.clear()
    service = sdk.start(auth=expired, **USER)
    auth = await within(service.whenAuthenticated())
    assert auth["token"] != payload["token"]
    assert site.logins() == 1


@pytest_twisted.ensureDeferred
async def test_401_reauthenticates_and_retries_once(sdk: Services, site: Watched) -> None:
    """After the server's key changes, a call gets 401, logs in once, retries once."""
    service = await sdk.user(enable_network=False)
    before = service.auth["token"]
    await site.restart_fresh()
    devices = await within(service.find_devices())
    assert [d.uuid for d in devices] == [DEMO["device_uuid"]]
    assert site.requests == [("GET", "/api/devices", 401), ("POST", "/api/auth/login", 200),
                             ("GET", "/api/devices", 200)]
    assert service.auth["token"] != before


@pytest_twisted.ensureDeferred
async def test_concurrent_401s_log_in_once(sdk: Services, site: Watched) -> None:
    """Several calls refused with the same old token share one login."""
    service = await sdk.user(enable_network=False)
    await site.restart_fresh()
    from twisted.internet.defer import gatherResults

    results = await within(gatherResults([service.find_devices() for _ in range(4)],
                                         consumeErrors=True))
    assert all(r.total == 1 for r in results)
    assert site.logins() == 1
    assert site.count("GET", "/api/devices", 200) == 4


# -- the raw API ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_raw_calls_answer_decoded_json(sdk: Services) -> None:
    """get/post/patch/put/delete answer the decoded JSON, None for an empty body."""
    service = await sdk.user()
    found = await within(service.get("/api/devices", {"name": "lobby"}))
    assert found["total"] == 1 and found["results"][0]["uuid"] == DEMO["device_uuid"]
    counted = await within(service.get("/api/devices", {"limit": 0}))
    assert counted == {"results": [], "total": 1}
    thing = await within(service.post("/api/things", {"name": "raw thing"}))
    assert thing["name"] == "raw thing" and thing["uuid"]
    patched = await within(service.patch(f"/api/things/{thing['uuid']}", {"name": "renamed"}))
    assert patched["name"] == "renamed" and patched["uuid"] == thing["uuid"]
    stored = await within(service.put("/api/data/raw/item", {"n": [1, 2]}))
    assert stored == {"group": "raw", "key": "item", "value": {"n": [1, 2]}}
    assert await within(service.get("/api/data/raw/item")) == stored
    assert await within(service.delete(f"/api/things/{thing['uuid']}")) is None
    assert await within(service.delete("/api/data/raw/item")) is None
    assert await within(service.post("/api/logs", [{"level": "info", "message": "hi"}])) is None


@pytest_twisted.ensureDeferred
async def test_raw_params_of_several_types(sdk: Services) -> None:
    """Params may be numbers, booleans, lists or None (left out)."""
    service = await sdk.user()
    await within(service.put("/api/data/typed/flag", True))
    answer = await within(service.get("/api/data", {"group": "typed", "limit": 5,
                                                    "skip": None}))
    assert answer["total"] == 1
    with pytest.raises(RuntimeError, match="params"):
        await service.get("/api/devices", ["name", "lobby"])


@pytest_twisted.ensureDeferred
async def test_api_errors_carry_status_code_message_payload(sdk: Services) -> None:
    """A 4xx answer is an ApiError with status_code, code, message and payload."""
    service = await sdk.user()
    with pytest.raises(ApiError) as caught:
        await within(service.get("/api/devices/no-such-device"))
    error = caught.value
    assert error.status_code == 404
    assert error.code == "resource.notFound"
    assert "no-such-device" in error.message
    assert error.payload == {"code": "resource.notFound", "message": error.message}
    assert "404" in str(error)

    with pytest.raises(ApiError) as caught:
        await within(service.post("/api/devices/pair", {"name": "no code"}))
    assert (caught.value.status_code, caught.value.code) == (400, "pairing.codeRequired")

    with pytest.raises(ApiError) as caught:
        await within(service.get("/api/devices", {"sort": ""}))
    assert caught.value.status_code == 400

    with pytest.raises(ApiError) as caught:
        await within(service.post("/api/logs", ["x" * (1 << 20)]))
    assert (caught.value.status_code, caught.value.code) == (413, "payload.tooLarge")


@pytest_twisted.ensureDeferred
async def test_answer_that_is_not_json_is_an_unexpected_error(sdk: Services) -> None:
    """A successful answer whose body is not JSON raises UnexpectedError."""
    service = await sdk.user()
    with pytest.raises(UnexpectedError) as caught:
        await within(service.get("/api/delivery/welcome.txt"))
    assert "not JSON" in str(caught.value)


@pytest_twisted.ensureDeferred
async def test_forbidden_is_an_api_error(sdk: Services) -> None:
    """A consumer app writing gets ApiError 403, not an authentication error."""
    service = await sdk.consumer()
    with pytest.raises(ApiError) as caught:
        await within(service.post("/api/things", {"name": "nope"}))
    assert caught.value.status_code == 403
    assert caught.value.code == "permission.denied"
    assert isinstance(caught.value, exp.errors.ExpError)


@pytest_twisted.ensureDeferred
async def test_unserializable_payload_is_a_type_error_before_sending(
        sdk: Services, site: Watched) -> None:
    """A payload that is not JSON raises TypeError and sends nothing."""
    service = await sdk.user()
    site.requests.clear()
    for payload in ({"when": object()}, {1, 2}, float("nan")):
        with pytest.raises(TypeError):
            await service.post("/api/things", payload)
    await sleep(0.1)
    assert [r for r in site.requests if r[1] == "/api/things"] == []


# -- unreachable servers -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stopped_server_is_a_network_error(sdk: Services, site: Watched) -> None:
    """Once the server is gone, a call fails with NetworkError in bounded time."""
    service = await sdk.user(request_timeout=2)
    assert (await within(service.find_devices())).total == 1
    await site.stop()
    for call in (lambda: service.get("/api/devices"),
                 lambda: service.post("/api/things", {"name": "x"}),
                 lambda: service.find_devices()):
        with pytest.raises(NetworkError):
            await within(call())


@pytest_twisted.ensureDeferred
async def test_silent_server_is_a_network_error(sdk: Services, site: Watched) -> None:
    """A server that accepts but never answers fails calls after request_timeout."""
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(Protocol))
    try:
        silent = f"http://127.0.0.1:{port.getHost().port}"
        payload = await user_payload(site.url)
        payload = dict(payload, api={"host": silent})
        service = sdk.start(auth=payload, enable_network=False, request_timeout=0.5)
        with pytest.raises(NetworkError) as caught:
            await within(service.get("/api/devices"))
        assert "0.5" in str(caught.value)
        await within(service.stopService())
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_login_retries_until_the_host_answers(sdk: Services, tmp_path: Any) -> None:
    """A host that cannot be reached at first is retried (not fatal) until it answers."""
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(Protocol))
    number = port.getHost().port
    await port.stopListening()
    errors = Recorder()
    service = ExpService(host=f"http://127.0.0.1:{number}", **USER, **FAST_RETRY)
    service.on("error", errors)
    sdk.started.append(service)
    service.startService()
    authenticated = service.whenAuthenticated()
    await sleep(0.3)
    assert not authenticated.called
    server, listening = await serve_on(number, str(tmp_path))  # the server comes up
    try:
        auth = await within(authenticated)
        assert auth["identity"]["type"] == "user"
        assert errors.calls == []
        await within(service.stopService())
    finally:
        await listening.stopListening()
        await server.stop()


# -- pairing ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_pairing_end_to_end(sdk: Services, site: Watched) -> None:
    """A user pairs the code; the device gets update with a paired identity and works."""
    device = sdk.start(allow_pairing=True)
    updates = Recorder()
    device.on("update", updates)
    await within(device.whenAuthenticated())
    code = device.pairing_code
    assert code
    assert await within(device.get_current_device()) is None
    await within(device.whenConnected())
    user = await sdk.user()
    stored = await within(user.post("/api/devices/pair",
                                     {"pairingCode": code, "name": "paired screen"}))
    assert stored["name"] == "paired screen"
    await eventually(lambda: any(a["identity"].get("paired") is True for (a,) in updates.calls),
                     "an update with the paired identity")
    identity = next(a for (a,) in updates.calls if a["identity"].get("paired"))["identity"]
    assert identity["type"] == "device"
    assert identity["uuid"] == stored["uuid"]
    assert identity["organization"] == DEMO["organization"]
    assert device.pairing_code is None
    current = await within(device.get_current_device())
    assert current is not None and current.uuid == stored["uuid"]
    assert current.name == "paired screen"
    await within(device.whenConnected())
    listener = await within(device.get_channel("after-pairing").listen("hello"))
    await within(user.get_channel("after-pairing").broadcast("hello", {"n": 1}))
    broadcast = await within(listener.wait(10))
    assert broadcast is not None and broadcast.payload == {"n": 1}


@pytest_twisted.ensureDeferred
async def test_unpaired_device_cannot_use_the_api(sdk: Services) -> None:
    """Before it is paired a device's calls are refused with ApiError 403."""
    device = sdk.start(allow_pairing=True)
    await within(device.whenAuthenticated())
    with pytest.raises(ApiError) as caught:
        await within(device.find_devices())
    assert caught.value.status_code == 403
    assert caught.value.code == "device.unpaired"


# -- stopping ----------------------------------------------------------------------------


def open_sockets() -> set[Any]:
    return set(reactor.getReaders()) | set(reactor.getWriters())


async def assert_quiet(calls: set[Any], sockets: set[Any]) -> None:
    """Soon, no delayed call or socket is left beyond C{calls} and C{sockets}."""
    def left() -> tuple[list[Any], set[Any]]:
        return [c for c in reactor.getDelayedCalls() if c not in calls], open_sockets() - sockets

    try:
        await eventually(lambda: left() == ([], set()), "the SDK's timers and sockets gone")
    except AssertionError:
        assert left() == ([], set())
        raise


async def assert_left_nothing(site: Watched, calls: set[Any], sockets: set[Any]) -> None:
    """No delayed call, socket or server session is left beyond C{calls} and C{sockets}."""
    await eventually(lambda: not site.server.network.sessions, "the server's sessions closed")
    await assert_quiet(calls, sockets)
    assert site.connections() == []


@pytest_twisted.ensureDeferred
async def test_stop_leaves_nothing_behind(site: Watched) -> None:
    """A stopped service leaves no delayed call, socket or server session."""
    calls, sockets = set(reactor.getDelayedCalls()), open_sockets()
    services = Services(site.url)
    service = await services.device()
    await within(service.whenConnected())
    listener = await within(service.get_channel("stop").listen("ping"))
    pending = listener.wait(30)
    await within(service.find_devices())
    assert site.server.network.sessions
    await within(service.stopService())
    assert await within(pending) is None
    assert listener.cancelled
    assert not service.is_connected
    await assert_left_nothing(site, calls, sockets)


@pytest_twisted.ensureDeferred
async def test_stop_during_login_leaves_nothing_behind(site: Watched) -> None:
    """Stopping while the login is unanswered fails the waiters and cancels the request."""
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(Protocol))
    try:
        calls, sockets = set(reactor.getDelayedCalls()), open_sockets()
        service = ExpService(host=f"http://127.0.0.1:{port.getHost().port}", **USER)
        service.startService()
        authenticated = service.whenAuthenticated()
        await sleep(0.1)
        await within(service.stopService())
        with pytest.raises(RuntimeError):
            await within(authenticated)
        await assert_quiet(calls, sockets)
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_stop_while_retrying_leaves_nothing_behind(site: Watched) -> None:
    """Stopping a service waiting to retry its login cancels the retry timer."""
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(Protocol))
    number = port.getHost().port
    await port.stopListening()
    calls, sockets = set(reactor.getDelayedCalls()), open_sockets()
    service = ExpService(host=f"http://127.0.0.1:{number}", **USER)
    service.startService()
    await sleep(0.2)
    await within(service.stopService())
    await assert_quiet(calls, sockets)


@pytest_twisted.ensureDeferred
async def test_every_call_of_a_stopped_service_raises(site: Watched) -> None:
    """After stopService every call raises exp.RuntimeError."""
    services = Services(site.url)
    service = await services.user()
    channel = service.get_channel("stopped")
    device = await within(service.get_device(DEMO["device_uuid"]))
    await within(service.stopService())
    calls = [
        lambda: service.get("/api/devices"),
        lambda: service.post("/api/things", {}),
        lambda: service.patch("/api/things/x", {}),
        lambda: service.put("/api/data/a/b", 1),
        lambda: service.delete("/api/things/x"),
        lambda: service.get_auth(),
        lambda: service.whenAuthenticated(),
        lambda: service.whenConnected(),
        lambda: service.get_channel("x"),
        lambda: service.get_device("x"),
        lambda: service.find_devices(),
        lambda: service.create_thing({}),
        lambda: service.delete_location("x"),
        lambda: service.get_current_device(),
        lambda: service.get_current_zones(),
        lambda: service.get_data("fluffy", "cats"),
        lambda: service.create_data("k", "g", 1),
        lambda: service.find_content(),
        lambda: channel.broadcast("hi"),
        lambda: channel.listen("hi"),
        lambda: channel.fling({}),
        lambda: device.refresh(),
        lambda: device.save(),
    ]
    for call in calls:
        with pytest.raises(RuntimeError):
            await within(call())
    with pytest.raises(RuntimeError):
        service.startService()
