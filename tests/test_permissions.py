"""
Who may call what (PROTOCOL.md A3, Part B and the README's decisions): a
matrix of every REST endpoint against every kind of caller, organization
isolation, the REST side of broadcasts and responses, and pairing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, ensureDeferred
from zope.interface import implementer

from exp.protocol import consumer_app_token, device_token, encode_channel
from exp.server import demo_seed_path
from exp.server._hub import ISubscriber, Message
from exp.server.testing import DEMO, RunningServer, start_server

from ._support import Recorder, assert_error
from .conftest import Answer, Http

OTHER = {"username": "other@example.com", "password": "other-Password1",
         "organization": "other"}
PNG = b"\x89PNG\r\n\x1a\n" + b"layout"


def two_organizations() -> dict[str, Any]:
    """The demo organization (plus a feed) and a second one, 'other'."""
    with open(demo_seed_path(), encoding="utf-8") as f:
        seed = json.load(f)
    base = os.path.dirname(demo_seed_path())
    scala = seed["organizations"][0]
    scala["content"] = os.path.join(base, scala["content"])
    for location in scala["locations"]:
        location["layout"] = os.path.join(base, location["layout"])
    scala["feeds"] = [{"uuid": "demo-weather", "name": "weather",
                       "subtype": "scala:feed:weather"}]
    other = {
        "name": "other",
        "users": [{"username": OTHER["username"], "password": OTHER["password"]}],
        "devices": [{"uuid": "other-device", "secret": "other-secret", "name": "theirs"}],
        "consumerApps": [{"uuid": "other-app", "apiKey": "other-api-key"}],
        "things": [{"uuid": "other-thing", "name": "their thing"}],
        "data": [{"group": "cats", "key": "whiskers", "value": 1}],
    }
    seed["organizations"].append(other)
    return seed


@pytest_twisted.async_yield_fixture()
async def server() -> AsyncIterator[RunningServer]:
    running = await start_server(two_organizations())
    yield running
    await running.stop()


async def user_login(http: Http, who: dict[str, str]) -> dict[str, Any]:
    return await http.login(username=who["username"], password=who["password"],
                            organization=who["organization"])


#: Callers of the matrix: how each gets its token.
CALLERS = ["user", "device", "consumer", "restricted", "none", "garbage", "other", "unpaired"]


async def caller_token(http: Http, caller: str) -> str | None:
    if caller == "user":
        return await http.user_token()
    if caller == "device":
        auth = await http.login(token=device_token(DEMO["device_uuid"], DEMO["device_secret"]))
    elif caller == "consumer":
        auth = await http.login(token=consumer_app_token(DEMO["consumer_uuid"],
                                                         DEMO["api_key"]))
    elif caller == "restricted":
        return str((await user_login(http, DEMO))["restrictedToken"])
    elif caller == "none":
        return None
    elif caller == "garbage":
        return "garbage.not-a.token"
    elif caller == "other":
        auth = await user_login(http, OTHER)
    else:
        auth = await http.login(token=device_token("_", "_", allow_pairing=True))
    return str(auth["token"])


# -- the matrix ---------------------------------------------------------------------


@attrs.frozen
class Env:
    """What an endpoint call needs: the client and a user token to prepare targets."""

    http: Http
    admin: str

    async def fresh(self, path: str, document: dict[str, Any]) -> str:
        """A new document of the demo organization, created by its user; its uuid."""
        answer = await self.http.call("POST", path, document, token=self.admin)
        assert answer.code == 200, answer
        return str(answer.json["uuid"])


Call = Callable[[Env, "str | None"], Awaitable[Answer]]
RESOURCE_PATHS = {"devices": "test-uuid", "things": "demo-thing",
                  "experiences": "demo-experience", "locations": "demo-location",
                  "connectors/feeds": "demo-weather"}
CONSUMER_CHANNEL = encode_channel("scala", "matrix", consumer=True)


def _resource_calls(path: str, seeded: str) -> dict[str, Call]:
    async def find(env: Env, token: str | None) -> Answer:
        return await env.http.call("GET", f"/api/{path}", token=token)

    async def create(env: Env, token: str | None) -> Answer:
        return await env.http.call("POST", f"/api/{path}", {"name": "made"}, token=token)

    async def get(env: Env, token: str | None) -> Answer:
        return await env.http.call("GET", f"/api/{path}/{seeded}", token=token)

    async def patch(env: Env, token: str | None) -> Answer:
        uuid = await env.fresh(f"/api/{path}", {"name": "to patch"})
        return await env.http.call("PATCH", f"/api/{path}/{uuid}", {"name": "patched"},
                                   token=token)

    async def delete(env: Env, token: str | None) -> Answer:
        uuid = await env.fresh(f"/api/{path}", {"name": "to delete"})
        return await env.http.call("DELETE", f"/api/{path}/{uuid}", token=token)

    return {f"GET /api/{path}": find, f"POST /api/{path}": create,
            f"GET /api/{path}/<uuid>": get, f"PATCH /api/{path}/<uuid>": patch,
            f"DELETE /api/{path}/<uuid>": delete}


def _simple(method: str, path: str, body: Any = None, raw: bytes | None = None,
            headers: dict[str, str] | None = None) -> Call:
    async def call(env: Env, token: str | None) -> Answer:
        return await env.http.call(method, path, body, raw=raw, headers=headers, token=token)

    return call


async def _put_data(env: Env, token: str | None) -> Answer:
    return await env.http.call("PUT", "/api/data/matrix/item", {"v": 1}, token=token)


async def _delete_data(env: Env, token: str | None) -> Answer:
    await env.http.call("PUT", "/api/data/matrix/doomed", 1, token=env.admin)
    return await env.http.call("DELETE", "/api/data/matrix/doomed", token=token)


CALLS: dict[str, Call] = {}
for _path, _seeded in RESOURCE_PATHS.items():
    CALLS.update(_resource_calls(_path, _seeded))
CALLS.update({
    "GET /api/data": _simple("GET", "/api/data"),
    "GET /api/data/<group>/<key>": _simple("GET", "/api/data/cats/fluffy"),
    "PUT /api/data/<group>/<key>": _put_data,
    "DELETE /api/data/<group>/<key>": _delete_data,
    "GET /api/content": _simple("GET", "/api/content"),
    "GET /api/content/<uuid>": _simple("GET", "/api/content/root"),
    "GET /api/delivery/<path>": _simple("GET", "/api/delivery/welcome.txt"),
    "GET /api/locations/<uuid>/layout": _simple("GET", "/api/locations/demo-location/layout"),
    "PUT /api/locations/<uuid>/layout": _simple(
        "PUT", "/api/locations/demo-location/layout", raw=PNG,
        headers={"Content-Type": "image/png"}),
    "GET /api/connectors/feeds/<uuid>/data": _simple(
        "GET", "/api/connectors/feeds/demo-weather/data"),
    "POST /api/logs": _simple("POST", "/api/logs", [{"message": "matrix"}]),
    "POST /api/networks/current/broadcasts": _simple(
        "POST", "/api/networks/current/broadcasts?timeout=0",
        {"channel": CONSUMER_CHANNEL, "name": "ping", "payload": {}}),
    "POST /api/networks/current/responses": _simple(
        "POST", "/api/networks/current/responses",
        {"id": "no-such-broadcast", "channel": CONSUMER_CHANNEL, "payload": 1}),
    "POST /api/devices/pair": _simple("POST", "/api/devices/pair",
                                      {"pairingCode": "NOCODE", "name": "x"}),
    "POST /api/auth/token": _simple("POST", "/api/auth/token"),
})

_WRITES = {name for name in CALLS
           if name.split()[0] in ("POST", "PATCH", "PUT", "DELETE")
           and name not in ("POST /api/logs", "POST /api/networks/current/broadcasts",
                            "POST /api/networks/current/responses", "POST /api/auth/token")}
_SUCCESS = dict.fromkeys(CALLS, 200) | {
    # A weather feed has no provider in the local server: allowed, but unavailable.
    "GET /api/connectors/feeds/<uuid>/data": 422,
    # Nobody is waiting with that pairing code.
    "POST /api/devices/pair": 404,
}


def expected(caller: str) -> dict[str, int]:
    """The status each endpoint answers this caller (README: Permissions)."""
    if caller in ("user", "device"):
        return dict(_SUCCESS)
    if caller == "consumer":
        return {name: 403 if name in _WRITES else status for name, status in _SUCCESS.items()}
    if caller == "restricted":
        allowed = {"GET /api/delivery/<path>", "GET /api/locations/<uuid>/layout"}
        return {name: 200 if name in allowed else 403 for name in CALLS}
    if caller in ("none", "garbage"):
        return dict.fromkeys(CALLS, 401)
    if caller == "unpaired":
        return {name: 200 if name == "POST /api/auth/token" else 403 for name in CALLS}
    assert caller == "other"
    # The demo organization's uuids, data, content, layout and feed do not exist
    # in theirs (a PUT of data creates the item in their own organization) ...
    unknown = {name for name in CALLS if name.endswith(("/<uuid>", "/<path>", "/layout"))}
    unknown |= {"GET /api/data/<group>/<key>", "DELETE /api/data/<group>/<key>",
                "GET /api/connectors/feeds/<uuid>/data"}
    # ... and the demo organization's channels are not theirs.
    forbidden = {"POST /api/networks/current/broadcasts", "POST /api/networks/current/responses"}
    return {name: 404 if name in unknown else 403 if name in forbidden else status
            for name, status in _SUCCESS.items()}


#: The code of every 401/403 a caller gets, when it is the same for all endpoints.
DENIAL_CODES = {"consumer": "permission.denied", "restricted": "auth.restricted",
                "none": "auth.required", "garbage": "auth.invalid",
                "unpaired": "device.unpaired", "other": "channel.forbidden"}


@pytest.mark.parametrize("caller", CALLERS)
@pytest_twisted.ensureDeferred
async def test_permission_matrix(http: Http, caller: str) -> None:
    """Every endpoint answers each kind of caller exactly what Part B and the README allow."""
    env = Env(http, await http.user_token())
    token = await caller_token(http, caller)
    got: dict[str, int] = {}
    for name, call in CALLS.items():
        answer = await call(env, token)
        got[name] = answer.code
        if answer.code >= 400:
            assert_error(answer, answer.code)
            if answer.code in (401, 403) and caller in DENIAL_CODES:
                assert answer.json["code"] == DENIAL_CODES[caller], (name, answer)
    assert got == expected(caller)


@pytest_twisted.ensureDeferred
async def test_restricted_token_as_rt_parameter(http: Http) -> None:
    """The restricted token works as ?_rt= for delivery and layout only."""
    auth = await user_login(http, DEMO)
    rt = auth["restrictedToken"]
    answer = await http.call("GET", "/api/delivery/welcome.txt", params={"_rt": rt})
    assert answer.code == 200, answer
    answer = await http.call("GET", "/api/locations/demo-location/layout", params={"_rt": rt})
    assert answer.code == 200, answer
    assert answer.body.startswith(b"\x89PNG")
    answer = await http.call("GET", "/api/devices", params={"_rt": rt})
    assert_error(answer, 401, "auth.required")
    for bad in ("garbage", auth["token"] + "x"):
        answer = await http.call("GET", "/api/delivery/welcome.txt", params={"_rt": bad})
        assert_error(answer, 401, "auth.invalid")


# -- consumer apps -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_consumer_never_sees_device_secrets(http: Http) -> None:
    """Device documents reach consumer apps without their secret, in gets and finds."""
    consumer = await caller_token(http, "consumer")
    user = await http.user_token()
    created = await http.call("POST", "/api/devices", {"name": "new"}, token=user)
    assert created.json["secret"]
    for path in ("/api/devices", "/api/devices/test-uuid",
                 f"/api/devices/{created.json['uuid']}", "/api/devices?sort=-name",
                 "/api/devices?name=lobby"):
        answer = await http.call("GET", path, token=consumer)
        assert answer.code == 200, answer
        assert b"secret" not in answer.body, (path, answer)
        assert DEMO["device_secret"].encode() not in answer.body
        assert created.json["secret"].encode() not in answer.body
    found = await http.call("GET", "/api/devices", token=consumer)
    assert {d["uuid"] for d in found.json["results"]} == {"test-uuid", created.json["uuid"]}


@pytest_twisted.ensureDeferred
async def test_consumer_cannot_probe_device_secrets_with_filters(http: Http) -> None:
    """A find by secret tells a consumer app nothing: right and wrong secrets match alike."""
    consumer = await caller_token(http, "consumer")
    answers = []
    for secret in (DEMO["device_secret"], "wrong-guess"):
        answer = await http.call("GET", "/api/devices", token=consumer,
                                 params={"secret": secret, "limit": "0"})
        assert answer.code == 200, answer
        answers.append(answer.json)
    assert answers[0] == answers[1]


@pytest_twisted.ensureDeferred
async def test_consumer_writes_change_nothing(http: Http) -> None:
    """Refused consumer writes leave the documents and data as they were."""
    consumer = await caller_token(http, "consumer")
    user = await http.user_token()
    before = (await http.call("GET", "/api/things/demo-thing", token=user)).json
    await http.call("PATCH", "/api/things/demo-thing", {"name": "hacked"}, token=consumer)
    await http.call("DELETE", "/api/things/demo-thing", token=consumer)
    await http.call("PUT", "/api/data/cats/fluffy", "hacked", token=consumer)
    assert (await http.call("GET", "/api/things/demo-thing", token=user)).json == before
    fluffy = await http.call("GET", "/api/data/cats/fluffy", token=user)
    assert fluffy.json["value"] == {"age": 3}
    found = await http.call("GET", "/api/things", token=user, params={"name": "made"})
    assert found.json["total"] == 0


# -- organizations --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_finds_do_not_leak_across_organizations(http: Http) -> None:
    """Each organization's finds list only its own documents and data."""
    scala = await http.user_token()
    other = await caller_token(http, "other")
    answer = await http.call("GET", "/api/devices", token=other)
    assert [d["uuid"] for d in answer.json["results"]] == ["other-device"]
    assert answer.json["total"] == 1
    answer = await http.call("GET", "/api/things", token=other, params={"uuid": "demo-thing"})
    assert answer.json == {"results": [], "total": 0}
    answer = await http.call("GET", "/api/data", token=other)
    assert answer.json == {"results": [{"group": "cats", "key": "whiskers", "value": 1}],
                           "total": 1}
    answer = await http.call("GET", "/api/locations", token=other)
    assert answer.json == {"results": [], "total": 0}
    answer = await http.call("GET", "/api/things", token=scala)
    assert [d["uuid"] for d in answer.json["results"]] == ["demo-thing"]
    answer = await http.call("GET", "/api/data", token=scala, params={"group": "cats"})
    assert [d["key"] for d in answer.json["results"]] == ["fluffy"]


@pytest_twisted.ensureDeferred
async def test_other_organization_cannot_touch_documents(http: Http) -> None:
    """Another organization's uuid is 404 to get, patch and delete, and stays as it was."""
    scala = await http.user_token()
    other = await caller_token(http, "other")
    before = (await http.call("GET", "/api/things/demo-thing", token=scala)).json
    for method, body in (("GET", None), ("PATCH", {"name": "mine"}), ("DELETE", None)):
        answer = await http.call(method, "/api/things/demo-thing", body, token=other)
        assert_error(answer, 404, "resource.notFound")
    assert (await http.call("GET", "/api/things/demo-thing", token=scala)).json == before
    answer = await http.call("GET", "/api/things/other-thing", token=scala)
    assert_error(answer, 404)
    answer = await http.call("GET", "/api/data/cats/whiskers", token=scala)
    assert_error(answer, 404)


@pytest_twisted.ensureDeferred
async def test_same_uuid_and_data_key_in_two_organizations(http: Http) -> None:
    """A uuid or data key taken in one organization is free in another: each sees its own."""
    scala = await http.user_token()
    other = await caller_token(http, "other")
    answer = await http.call("POST", "/api/things", {"uuid": "demo-thing", "name": "twin"},
                             token=other)
    assert answer.json["uuid"] == "demo-thing"
    answer = await http.call("PUT", "/api/data/cats/fluffy", "theirs", token=other)
    assert answer.code == 200, answer
    assert (await http.call("GET", "/api/things/demo-thing", token=other)).json["name"] == "twin"
    mine = await http.call("GET", "/api/things/demo-thing", token=scala)
    assert mine.json["name"] == "badge reader"
    assert (await http.call("GET", "/api/data/cats/fluffy", token=other)).json["value"] == "theirs"
    mine = await http.call("GET", "/api/data/cats/fluffy", token=scala)
    assert mine.json["value"] == {"age": 3}
    await http.call("DELETE", "/api/things/demo-thing", token=other)
    assert (await http.call("GET", "/api/things/demo-thing", token=scala)).code == 200


@pytest_twisted.ensureDeferred
async def test_other_organization_device_and_app_are_confined(http: Http) -> None:
    """Devices and consumer apps of another organization see only their organization."""
    device = await http.login(token=device_token("other-device", "other-secret"))
    app = await http.login(token=consumer_app_token("other-app", "other-api-key"))
    for auth in (device, app):
        assert auth["identity"]["organization"] == "other"
        answer = await http.call("GET", "/api/devices/test-uuid", token=auth["token"])
        assert_error(answer, 404)
        answer = await http.call("GET", "/api/devices", token=auth["token"])
        assert [d["uuid"] for d in answer.json["results"]] == ["other-device"]


# -- broadcasts and responses over REST -------------------------------------------------


async def broadcast(http: Http, token: str | None, channel: Any, timeout: Any = 0,
                    name: Any = "hello", payload: Any = None) -> Answer:
    return await http.call("POST", f"/api/networks/current/broadcasts?timeout={timeout}",
                           {"channel": channel, "name": name, "payload": payload},
                           token=token)


@pytest_twisted.ensureDeferred
async def test_broadcast_without_responses_answers_empty_after_timeout(
        server: RunningServer, http: Http) -> None:
    """A broadcast is delivered to the channel's subscribers, then [] after the timeout."""
    token = await http.user_token()
    channel = encode_channel("scala", "lobby")
    recorder = Recorder()
    server.server.hub.subscribe(channel, recorder)
    started = time.monotonic()
    answer = await broadcast(http, token, channel, timeout=500, payload={"n": 1})
    elapsed = time.monotonic() - started
    assert answer.code == 200, answer
    assert answer.json == []
    assert 0.45 <= elapsed < 30
    [message] = recorder.messages
    assert message["channel"] == channel
    assert message["name"] == "hello"
    assert message["payload"] == {"n": 1}
    assert isinstance(message["id"], str) and message["id"]


@pytest_twisted.ensureDeferred
async def test_broadcast_ids_are_unique(server: RunningServer, http: Http) -> None:
    """Each delivered broadcast carries its own server-made id."""
    token = await http.user_token()
    channel = encode_channel("scala", "lobby")
    recorder = Recorder()
    server.server.hub.subscribe(channel, recorder)
    for _ in range(3):
        await broadcast(http, token, channel)
    assert len({m["id"] for m in recorder.messages}) == 3


@implementer(ISubscriber)
class Responder:
    """A subscriber that answers each broadcast with responses posted over REST, in order."""

    def __init__(self, http: Http, token: str, payloads: list[Any]) -> None:
        self.http = http
        self.token = token
        self.payloads = payloads
        self.posted: list[Deferred[list[Answer]]] = []

    def deliver(self, message: Message) -> None:
        self.posted.append(ensureDeferred(self._respond(message.body)))

    async def _respond(self, body: dict[str, Any]) -> list[Answer]:
        answers = []
        for payload in self.payloads:
            answers.append(await self.http.call(
                "POST", "/api/networks/current/responses",
                {"id": body["id"], "channel": body["channel"], "payload": payload},
                token=self.token))
        return answers


@pytest_twisted.ensureDeferred
async def test_broadcast_collects_responses_in_arrival_order(
        server: RunningServer, http: Http) -> None:
    """Responses posted during the timeout come back as the broadcast's answer, in order."""
    token = await http.user_token()
    device = await caller_token(http, "device")
    assert device is not None
    channel = encode_channel("scala", "identify-me")
    responder = Responder(http, device, [{"first": True}, "second", None])
    server.server.hub.subscribe(channel, responder)
    answer = await broadcast(http, token, channel, timeout=5000, name="identify")
    assert answer.code == 200, answer
    assert answer.json == [{"first": True}, "second", None]
    [posted] = responder.posted
    assert [a.code for a in await posted] == [200, 200, 200]
    assert all(a.body == b"" for a in await posted)


@pytest_twisted.ensureDeferred
async def test_consumer_app_broadcasts_and_responds_on_consumer_channels(
        server: RunningServer, http: Http) -> None:
    """A consumer app may broadcast on a consumer channel and respond there."""
    consumer = await caller_token(http, "consumer")
    assert consumer is not None
    channel = encode_channel("scala", "kiosk", consumer=True)
    server.server.hub.subscribe(channel, Responder(http, consumer, ["ok"]))
    answer = await broadcast(http, consumer, channel, timeout=5000)
    assert answer.code == 200, answer
    assert answer.json == ["ok"]


@pytest_twisted.ensureDeferred
async def test_response_after_timeout_is_dropped(server: RunningServer, http: Http) -> None:
    """A response to a finished (or unknown) broadcast is accepted and goes nowhere."""
    token = await http.user_token()
    channel = encode_channel("scala", "late")
    recorder = Recorder()
    server.server.hub.subscribe(channel, recorder)
    assert (await broadcast(http, token, channel, timeout=0)).json == []
    [message] = recorder.messages
    answer = await http.call("POST", "/api/networks/current/responses",
                             {"id": message["id"], "channel": channel, "payload": 1},
                             token=token)
    assert answer.code == 200, answer
    assert answer.body == b""


@pytest.mark.parametrize("caller", ["user", "device"])
@pytest_twisted.ensureDeferred
async def test_nobody_broadcasts_on_system_channels(http: Http, caller: str) -> None:
    """System channels carry server notifications only: a broadcast there is 403."""
    token = await caller_token(http, caller)
    for channel in (encode_channel("scala", "test-uuid", system=True),
                    encode_channel("scala", "x", system=True, consumer=True)):
        answer = await broadcast(http, token, channel)
        assert_error(answer, 403, "channel.forbidden")


@pytest_twisted.ensureDeferred
async def test_consumer_app_only_uses_consumer_channels(http: Http) -> None:
    """A consumer app is refused, with 403, a broadcast or response on other channels."""
    token = await caller_token(http, "consumer")
    channel = encode_channel("scala", "lobby")
    assert_error(await broadcast(http, token, channel), 403, "channel.forbidden")
    answer = await http.call("POST", "/api/networks/current/responses",
                             {"id": "x", "channel": channel, "payload": 1}, token=token)
    assert_error(answer, 403, "channel.forbidden")
    answer = await broadcast(http, token, encode_channel("scala", "lobby", consumer=True))
    assert answer.code == 200, answer


@pytest_twisted.ensureDeferred
async def test_nobody_uses_another_organizations_channel(
        server: RunningServer, http: Http) -> None:
    """Broadcasts and responses on another organization's channel are 403 and go nowhere."""
    recorder = Recorder()
    for channel in (encode_channel("other", "lobby"),
                    encode_channel("other", "lobby", consumer=True),
                    encode_channel("", "pairing-x", system=True)):
        server.server.hub.subscribe(channel, recorder)
    for caller in ("user", "device", "consumer"):
        token = await caller_token(http, caller)
        for channel in (encode_channel("other", "lobby", consumer=True),
                        encode_channel("", "lobby", consumer=True)):
            assert_error(await broadcast(http, token, channel), 403, "channel.forbidden")
            answer = await http.call("POST", "/api/networks/current/responses",
                                     {"id": "x", "channel": channel, "payload": 1},
                                     token=token)
            assert_error(answer, 403, "channel.forbidden")
    other = await caller_token(http, "other")
    answer = await broadcast(http, other, encode_channel("scala", "lobby"))
    assert_error(answer, 403, "channel.forbidden")
    assert recorder.messages == []


@pytest.mark.parametrize("channel", [
    "garbage!", "", 42, None, "bm90IGpzb24=",  # base64 of "not json"
    "WyJzY2FsYSJd",  # base64 of ["scala"]
])
@pytest_twisted.ensureDeferred
async def test_malformed_channel_id_is_400(http: Http, channel: Any) -> None:
    """A channel id that is not base64 of [org, name, system, consumer] is 400."""
    token = await http.user_token()
    assert_error(await broadcast(http, token, channel), 400, "channel.invalid")
    answer = await http.call("POST", "/api/networks/current/responses",
                             {"id": "x", "channel": channel, "payload": 1}, token=token)
    assert_error(answer, 400, "channel.invalid")


@pytest_twisted.ensureDeferred
async def test_broadcast_and_response_need_name_and_id(http: Http) -> None:
    """A broadcast without a name, or a response without an id, is 400."""
    token = await http.user_token()
    channel = encode_channel("scala", "lobby")
    for name in (None, "", 3):
        assert_error(await broadcast(http, token, channel, name=name), 400)
    for broadcast_id in (None, "", 3):
        answer = await http.call("POST", "/api/networks/current/responses",
                                 {"id": broadcast_id, "channel": channel}, token=token)
        assert_error(answer, 400)


@pytest.mark.parametrize("timeout", ["abc", "-1", "nan", "inf", "1e999"])
@pytest_twisted.ensureDeferred
async def test_invalid_broadcast_timeout_is_400(http: Http, timeout: str) -> None:
    """A timeout that is not a finite number of milliseconds >= 0 is 400."""
    token = await http.user_token()
    answer = await broadcast(http, token, encode_channel("scala", "lobby"), timeout=timeout)
    assert_error(answer, 400, "request.invalidParameter")


@pytest_twisted.ensureDeferred
async def test_broadcast_timeout_is_capped() -> None:
    """A timeout above --max-broadcast-timeout waits only for the cap."""
    running = await start_server(max_broadcast_timeout=0.2)
    try:
        http = Http(running.url)
        token = await http.user_token()
        started = time.monotonic()
        answer = await broadcast(http, token, encode_channel("scala", "lobby"),
                                 timeout=3_600_000)
        assert answer.code == 200, answer
        assert answer.json == []
        assert time.monotonic() - started < 30
    finally:
        await running.stop()


# -- pairing --------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_unpaired_device_identity(http: Http) -> None:
    """A pairing login gets an unpaired identity with a pairing code and no organization."""
    auth = await http.login(token=device_token("_", "_", allow_pairing=True))
    identity = auth["identity"]
    assert identity["type"] == "device"
    assert identity["paired"] is False
    assert identity["organization"] == ""
    assert identity["uuid"].startswith("pairing-")
    assert isinstance(identity["pairingCode"], str) and len(identity["pairingCode"]) == 6
    again = await http.login(token=device_token("_", "_", allow_pairing=True))
    assert again["identity"]["pairingCode"] != identity["pairingCode"]
    assert again["identity"]["uuid"] != identity["uuid"]


@pytest_twisted.ensureDeferred
async def test_pairing_without_allow_pairing_is_401(http: Http) -> None:
    """A '_'/'_' token that does not allow pairing is bad credentials."""
    answer = await http.call("POST", "/api/auth/login",
                             {"token": device_token("_", "_", allow_pairing=False)})
    assert_error(answer, 401, "auth.invalidCredentials")


@pytest_twisted.ensureDeferred
async def test_pairing_creates_device_and_tells_the_waiting_device(
        server: RunningServer, http: Http) -> None:
    """A user pairing the code creates the device and broadcasts its credentials to it."""
    pairing = await http.login(token=device_token("_", "_", allow_pairing=True))
    identity = pairing["identity"]
    waiting = Recorder()
    server.server.hub.subscribe(encode_channel("", identity["uuid"], system=True), waiting)
    user = await http.user_token()
    answer = await http.call("POST", "/api/devices/pair",
                             {"pairingCode": identity["pairingCode"], "name": "new screen",
                              "subtype": "scala:device:player"}, token=user)
    assert answer.code == 200, answer
    device = answer.json
    assert device["name"] == "new screen"
    assert "pairingCode" not in device
    assert isinstance(device["uuid"], str) and device["uuid"]
    assert isinstance(device["secret"], str) and device["secret"]
    assert waiting.named("paired") == [{
        "id": waiting.messages[0]["id"],
        "channel": encode_channel("", identity["uuid"], system=True),
        "name": "paired",
        "payload": {"uuid": device["uuid"], "secret": device["secret"]},
    }]
    stored = await http.call("GET", f"/api/devices/{device['uuid']}", token=user)
    assert stored.json == device
    auth = await http.login(token=device_token(device["uuid"], device["secret"]))
    assert auth["identity"] == {"type": "device", "uuid": device["uuid"],
                                "organization": "scala", "paired": True}
    answer = await http.call("GET", "/api/devices/test-uuid", token=auth["token"])
    assert answer.code == 200, answer
    answer = await http.call("POST", "/api/devices/pair",
                             {"pairingCode": identity["pairingCode"]}, token=user)
    assert_error(answer, 404, "pairing.notFound")


@pytest_twisted.ensureDeferred
async def test_pairing_into_another_organization(server: RunningServer, http: Http) -> None:
    """The device is created in the organization of the user who pairs it."""
    pairing = await http.login(token=device_token("_", "_", allow_pairing=True))
    other = await caller_token(http, "other")
    answer = await http.call("POST", "/api/devices/pair",
                             {"pairingCode": pairing["identity"]["pairingCode"]}, token=other)
    assert answer.code == 200, answer
    auth = await http.login(token=device_token(answer.json["uuid"], answer.json["secret"]))
    assert auth["identity"]["organization"] == "other"
    scala = await http.user_token()
    assert (await http.call("GET", f"/api/devices/{answer.json['uuid']}",
                            token=scala)).code == 404


@pytest_twisted.ensureDeferred
async def test_pairing_unknown_or_missing_code(http: Http) -> None:
    """An unknown pairing code is 404; a missing one is 400."""
    user = await http.user_token()
    answer = await http.call("POST", "/api/devices/pair", {"pairingCode": "ZZZZZZ"},
                             token=user)
    assert_error(answer, 404, "pairing.notFound")
    for body in ({}, {"pairingCode": ""}, {"pairingCode": 123456}):
        answer = await http.call("POST", "/api/devices/pair", body, token=user)
        assert_error(answer, 400)
    found = await http.call("GET", "/api/devices", token=user)
    assert found.json["total"] == 1


@pytest_twisted.ensureDeferred
async def test_unpaired_device_may_not_pair_itself(http: Http) -> None:
    """An unpaired device cannot use its own code (or any) to pair."""
    pairing = await http.login(token=device_token("_", "_", allow_pairing=True))
    answer = await http.call("POST", "/api/devices/pair",
                             {"pairingCode": pairing["identity"]["pairingCode"]},
                             token=pairing["token"])
    assert_error(answer, 403, "device.unpaired")
    user = await http.user_token()
    answer = await http.call("POST", "/api/devices/pair",
                             {"pairingCode": pairing["identity"]["pairingCode"]}, token=user)
    assert answer.code == 200, answer
