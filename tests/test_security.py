"""
Security (issue 7): every bad token on every endpoint and handshake, the
whole channel permission table, no secret in any log, constant-time checks of
passwords, secrets and signatures, and an owner-only database file.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import inspect
import json
import os
import re
import sqlite3
import stat
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import jwt.algorithms
import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor, task
from twisted.logger import globalLogPublisher

import exp.server
import exp.server._auth as server_auth
from exp.errors import AuthenticationError
from exp.protocol import consumer_app_token, device_token, sign
from exp.server._auth import DEVICE, USER, Identity, check_password
from exp.server.testing import DEMO, RunningServer, ServerProcess, start_server
from exp.twisted import ExpService

from ._eio import (
    Clients,
    Polling,
    Refused,
    WebSocket,
    guard,
    parse_event,
    parse_open,
    subscribe,
    unframe,
)
from ._network import ORG, TRANSPORTS, channel
from ._support import Recorder, render
from .conftest import Answer, Http

USER_LOGIN = {"username": DEMO["username"], "password": DEMO["password"], "organization": ORG}
#: A JSON body every endpoint would accept if the token were good.
BODY = {"channel": "x", "name": "n", "id": "i", "pairingCode": "NOCODE", "payload": 1}


# -- tokens -------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims_of(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified."""
    return dict(json.loads(unb64url(token.split(".")[1])))


def compose(header: dict[str, Any], claims: dict[str, Any], signature: str) -> str:
    """A JWT from its parts, signed or not."""
    parts = (json.dumps(header, separators=(",", ":")).encode(),
             json.dumps(claims, separators=(",", ":")).encode())
    return f"{b64url(parts[0])}.{b64url(parts[1])}.{signature}"


def tampered(token: str, **changes: Any) -> str:
    """C{token} with its claims changed (C{None} removes one), header and signature kept."""
    head, _, signature = token.split(".")
    claims = {k: v for k, v in (claims_of(token) | changes).items() if v is not None}
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    return f"{head}.{body}.{signature}"


def unsigned(claims: dict[str, Any], alg: str = "none", signature: str = "") -> str:
    return compose({"alg": alg, "typ": "JWT"}, claims, signature)


def signed(claims: dict[str, Any], key: str, alg: str = "HS256") -> str:
    """A JWT signed by hand: PyJWT will not sign with an empty key, and warns on short ones."""
    head = compose({"alg": alg, "typ": "JWT"}, claims, "")[:-1]
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    mac = hmac.new(key.encode("utf-8"), head.encode("ascii"), digest).digest()
    return f"{head}.{b64url(mac)}"


def signature_of(token: str) -> str:
    return token.rsplit(".", 1)[1]


async def user_auth(http: Http) -> dict[str, Any]:
    return await http.login(**USER_LOGIN)


async def deleted_device(http: Http) -> tuple[dict[str, Any], str, str]:
    """The auth payload, uuid and secret of a device that logged in, then was deleted."""
    admin = (await user_auth(http))["token"]
    made = await http.call("POST", "/api/devices", {"name": "doomed"}, token=admin)
    assert made.code == 200, made
    uuid, secret = made.json["uuid"], made.json["secret"]
    auth = await http.login(token=device_token(uuid, secret))
    gone = await http.call("DELETE", f"/api/devices/{uuid}", token=admin)
    assert gone.code == 200, gone
    return auth, uuid, secret


async def bad_tokens(running: RunningServer, http: Http) -> dict[str, str]:
    """
    Server tokens that must be refused, by what is wrong with them: expired,
    tampered, unsigned, signed with another key or by another server, or of
    an identity that no longer exists.
    """
    issuer = running.server.tokens
    assert issuer is not None
    auth = await user_auth(http)
    token, restricted = auth["token"], auth["restrictedToken"]
    claims = claims_of(token)
    identity = Identity(USER, auth["identity"]["uuid"], ORG, username=DEMO["username"])
    device = Identity(DEVICE, DEMO["device_uuid"], ORG)
    expired = attrs.evolve(issuer, lifetime=-10).issue(identity, running.url)
    expired_device = attrs.evolve(issuer, lifetime=-10).issue(device, running.url)
    past = int(time.time()) - 10
    other = await start_server()
    try:
        foreign = await Http(other.url).login(**USER_LOGIN)
    finally:
        await other.stop()
    deleted, _, _ = await deleted_device(http)
    return {
        "expired": expired["token"],
        "expired restricted": expired["restrictedToken"],
        "expired device": expired_device["token"],
        "expired, exp in ms": sign(claims | {"exp": past * 1000}, issuer.key),
        "without exp": sign({k: v for k, v in claims.items() if k != "exp"}, issuer.key),
        "tampered organization": tampered(token, org="other"),
        "tampered subject": tampered(token, sub="someone-else"),
        "tampered type": tampered(token, typ="device", usr=None),
        "tampered expiry": tampered(expired["token"], exp=past + 3600),
        "tampered restriction": tampered(restricted, rt=None),
        "another token's signature": token.rsplit(".", 1)[0] + "." + signature_of(restricted),
        "signature stripped": token.rsplit(".", 1)[0] + ".",
        "alg none": unsigned(claims),
        "alg none, signature kept": unsigned(claims, signature=signature_of(token)),
        "alg None": unsigned(claims, "None"),
        "alg NONE": unsigned(claims, "NONE"),
        "alg none restricted": unsigned(claims_of(restricted)),
        "alg HS256, no signature": unsigned(claims, "HS256"),
        "alg HS512 with the server's key": signed(claims, issuer.key, "HS512"),
        "another key": sign(claims, "another key, not this server's"),
        "empty key": signed(claims, ""),
        "another server": foreign["token"],
        "another server restricted": foreign["restrictedToken"],
        "deleted device": deleted["token"],
        "deleted device restricted": deleted["restrictedToken"],
    }


#: Routes that take no token; any other route needs one (a new public route is a decision).
PUBLIC = {("POST", "/api/auth/login"), ("GET", "/api/openapi.json")}
SAMPLE_VALUES = {"uuid": "test-uuid", "group": "cats", "key": "fluffy", "path": "welcome.txt"}


def routes(running: RunningServer) -> list[tuple[str, str]]:
    """
    (method, path) of every route the server's router has, with sample
    values in the path: a new route is in the matrix without a test change.
    """
    found = []
    for method, template in running.server.router.routes():
        path = re.sub(r"\{(\w+)\*?\}", lambda m: SAMPLE_VALUES.get(m.group(1), "x"), template)
        found.append((method, path))
    return found


def assert_none(misses: list[Any]) -> None:
    """Fail with one line per miss."""
    assert not misses, f"{len(misses)} misses:\n" + "\n".join(map(str, misses))


def refusal(answer: Answer, status: int) -> str | None:
    """What is wrong with C{answer} as a refusal of C{status} with a {code, message} body."""
    if answer.code != status:
        return f"answered {answer.code}: {answer.body[:120]!r}"
    content_type = answer.headers.getRawHeaders(b"content-type", [b""])[0]
    if not content_type.startswith(b"application/json"):
        return f"content type {content_type!r}"
    body = answer.json
    if not (isinstance(body, dict) and set(body) == {"code", "message"}
            and all(isinstance(body[k], str) and body[k] for k in body)):
        return f"body {answer.body[:120]!r}"
    return None


async def refusals_on_every_route(running: RunningServer, http: Http,
                                  tokens: dict[str, str]) -> list[Any]:
    """Call every route with each token, as a bearer token and as C{?_rt=}; the misses."""
    misses = []
    for method, path in routes(running):
        if (method, path) in PUBLIC:
            continue  # the login takes credentials in its body: test_bad_login_tokens_...
        for what, bad in tokens.items():
            for how in ("Authorization", "_rt"):
                answer = await http.call(
                    method, path, BODY, token=bad if how == "Authorization" else None,
                    params={"_rt": bad} if how == "_rt" else None)
                problem = refusal(answer, 401)
                if problem is not None:
                    misses.append((method, path, what, how, problem))
    return misses


async def refusals_on_handshakes(net: Clients, tokens: dict[str, str]) -> list[Any]:
    """Open the network with each token over both transports; the sessions not refused."""
    misses = []
    for what, bad in tokens.items():
        answer = await net.polling(bad).request("GET")
        problem = refusal(answer, 401)
        if problem is not None:
            misses.append(("polling", what, problem))
        try:
            await net.websocket(bad)
        except Refused as e:
            if e.status != 401:
                misses.append(("websocket", what, str(e)))
        else:
            misses.append(("websocket", what, "opened"))
    return misses


@pytest_twisted.ensureDeferred
async def test_routes_are_taken_from_the_router(server: RunningServer) -> None:
    """The matrix sees every route of the server, the ones Part A names among them."""
    found = set(routes(server))
    assert len(found) == len(server.server.router.routes())
    for route in [("POST", "/api/auth/login"), ("POST", "/api/auth/token"),
                  ("GET", "/api/devices/test-uuid"), ("PUT", "/api/data/cats/fluffy"),
                  ("GET", "/api/delivery/welcome.txt"), ("POST", "/api/devices/pair"),
                  ("GET", "/api/locations/test-uuid/layout"),
                  ("POST", "/api/networks/current/broadcasts")]:
        assert route in found, route


@pytest_twisted.ensureDeferred
async def test_every_route_but_the_public_ones_needs_a_token(
        server: RunningServer, http: Http) -> None:
    """Without a token every route is 401 auth.required, but the login and the API description."""
    misses = []
    for method, path in routes(server):
        answer = await http.call(method, path, BODY)
        problem = refusal(answer, 401)
        if (method, path) in PUBLIC:
            if problem is None:
                misses.append((method, path, "is not public"))
        elif problem is not None or answer.json["code"] != "auth.required":
            misses.append((method, path, problem or answer.json))
    assert_none(misses)


@pytest_twisted.ensureDeferred
async def test_bad_tokens_are_refused_on_every_endpoint(
        server: RunningServer, http: Http) -> None:
    """Expired, tampered, unsigned, foreign and orphaned tokens: 401 {code, message} anywhere."""
    tokens = await bad_tokens(server, http)
    assert_none(await refusals_on_every_route(server, http, tokens))


@pytest_twisted.ensureDeferred
async def test_bad_tokens_are_refused_by_the_network(
        server: RunningServer, http: Http) -> None:
    """The same tokens are refused with 401 on the polling and the WebSocket handshake."""
    tokens = await bad_tokens(server, http)
    net = Clients(server.url)
    try:
        assert_none(await refusals_on_handshakes(net, tokens))
    finally:
        await net.close()


@pytest_twisted.ensureDeferred
async def test_tokens_that_expired_by_waiting_are_refused_everywhere() -> None:
    """Tokens of a server with a 1 s lifetime, once the second is over, open nothing."""
    running = await start_server(token_lifetime=1)
    net = Clients(running.url)
    try:
        http = Http(running.url)
        tokens = {}
        for kind, body in (
                ("user", USER_LOGIN),
                ("device", {"token": device_token(DEMO["device_uuid"], DEMO["device_secret"])}),
                ("consumer", {"token": consumer_app_token(DEMO["consumer_uuid"],
                                                          DEMO["api_key"])})):
            auth = await http.login(**body)
            tokens[kind] = auth["token"]
            tokens[f"{kind} restricted"] = auth["restrictedToken"]
        pairing = await http.login(token=device_token("_", "_", allow_pairing=True))
        tokens["unpaired"] = pairing["token"]
        deadline = max(claims_of(t)["exp"] for t in tokens.values())
        await task.deferLater(reactor, max(0.0, deadline - time.time()) + 0.2, lambda: None)
        assert_none(await refusals_on_every_route(running, http, tokens))
        assert_none(await refusals_on_handshakes(net, tokens))
    finally:
        await net.close()
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_bad_login_tokens_are_refused(server: RunningServer, http: Http) -> None:
    """Login tokens expired, tampered, unsigned or wrongly signed are 401: no identity at all."""
    auth = await user_auth(http)
    _, deleted_uuid, deleted_secret = await deleted_device(http)
    uuid, secret = DEMO["device_uuid"], DEMO["device_secret"]
    now = int(time.time())
    good = device_token(uuid, secret)
    device = claims_of(good)
    consumer = claims_of(consumer_app_token(DEMO["consumer_uuid"], DEMO["api_key"]))
    pairing = {"type": "device", "uuid": "_", "allowPairing": True, "exp": now + 60}
    expired = sign(device | {"exp": now - 10}, secret)
    tokens = {
        "expired": expired,
        "expired, exp in ms": sign(device | {"exp": (now - 10) * 1000}, secret),
        "tampered expiry": tampered(expired, exp=now + 3600),
        "tampered uuid": tampered(good, uuid="other-device"),
        "tampered type": tampered(good, type="consumerApp"),
        "alg none device": unsigned(device),
        "alg none, signature kept": unsigned(device, signature=signature_of(good)),
        "alg None device": unsigned(device, "None"),
        "alg none consumer app": unsigned(consumer),
        "alg none pairing": unsigned(pairing),
        "alg HS256, no signature": unsigned(device, "HS256"),
        "alg HS512 with the secret": signed(device, secret, "HS512"),
        "another secret": device_token(uuid, "not-the-secret"),
        "another api key": consumer_app_token(DEMO["consumer_uuid"], "not-the-api-key"),
        "empty secret": signed(device, ""),
        "expired pairing": sign(pairing | {"exp": now - 10}, "_"),
        "deleted device": device_token(deleted_uuid, deleted_secret),
        "a server token": auth["token"],
        "a restricted token": auth["restrictedToken"],
    }
    misses = []
    for what, bad in tokens.items():
        problem = refusal(await http.call("POST", "/api/auth/login", {"token": bad}), 401)
        if problem is not None:
            misses.append((what, problem))
    assert_none(misses)
    # A pairing login need not verify: whatever it is signed with, it gets an unpaired
    # identity, which may do nothing but wait to be paired.
    for unverified in (tampered(device_token("_", "_"), allowPairing=True),
                       sign(pairing, "not-underscore"),
                       tampered(good, allowPairing=True)):
        auth = await http.login(token=unverified)
        assert (auth["identity"]["paired"], auth["identity"]["organization"]) == (False, "")


@pytest_twisted.ensureDeferred
async def test_deleted_devices_session_is_closed(server: RunningServer, http: Http) -> None:
    """Deleting a device ends its open network sessions, not only its future requests."""
    admin = (await user_auth(http))["token"]
    made = await http.call("POST", "/api/devices", {"name": "connected"}, token=admin)
    auth = await http.login(token=device_token(made.json["uuid"], made.json["secret"]))
    net = Clients(server.url)
    try:
        client = await net.connect("websocket", auth["token"])
        assert isinstance(client, WebSocket)
        lobby = channel(ORG, "lobby")
        assert await subscribe(client, [lobby]) == [lobby]
        gone = await http.call("DELETE", f"/api/devices/{made.json['uuid']}", token=admin)
        assert gone.code == 200, gone
        await guard(client.wait_closed())
        answer = await http.call("GET", "/api/devices", token=auth["token"])
        assert refusal(answer, 401) is None, answer
    finally:
        await net.close()


@pytest_twisted.ensureDeferred
async def test_recreated_device_logs_in_again(server: RunningServer, http: Http) -> None:
    """A device deleted and created again under its uuid works with its new credentials,
    and its tokens from before the deletion stay refused, even with the same secret."""
    old, uuid, secret = await deleted_device(http)
    admin = (await user_auth(http))["token"]
    for new_secret in ("new-secret", secret):
        again = await http.call("POST", "/api/devices", {"uuid": uuid, "secret": new_secret},
                                token=admin)
        assert again.json["uuid"] == uuid
        fresh = await http.login(token=device_token(uuid, new_secret))
        assert (await http.call("GET", "/api/devices", token=fresh["token"])).code == 200
        for token in (old["token"], old["restrictedToken"]):
            assert refusal(await http.call("GET", "/api/devices", token=token), 401) is None
        refreshed = await http.call("POST", "/api/auth/token", token=old["token"])
        assert refusal(refreshed, 401) is None, refreshed
        if new_secret == "new-secret":
            gone = await http.call("DELETE", f"/api/devices/{uuid}", token=admin)
            assert gone.code == 200


@pytest_twisted.ensureDeferred
async def test_tokens_die_with_a_changed_secret(server: RunningServer, http: Http) -> None:
    """After a device's secret changes, its tokens are refused on REST, on refresh and on
    the network handshake, and its open sessions end; the new secret logs in."""
    admin = (await user_auth(http))["token"]
    made = await http.call("POST", "/api/devices", {"name": "rotated"}, token=admin)
    uuid, secret = made.json["uuid"], made.json["secret"]
    old = await http.login(token=device_token(uuid, secret))
    net = Clients(server.url)
    try:
        client = await net.connect("websocket", old["token"])
        patched = await http.call("PATCH", f"/api/devices/{uuid}", {"secret": "rotated-secret"},
                                  token=admin)
        assert patched.code == 200, patched
        await guard(client.wait_closed())
        for method, path in (("GET", "/api/devices"), ("POST", "/api/auth/token")):
            answer = await http.call(method, path, token=old["token"])
            assert refusal(answer, 401) is None, (path, answer)
        assert_none(await refusals_on_handshakes(net, {"old token": old["token"]}))
        assert refusal(await http.call("POST", "/api/auth/login",
                                       {"token": device_token(uuid, secret)}), 401) is None
        fresh = await http.login(token=device_token(uuid, "rotated-secret"))
        assert (await http.call("GET", "/api/devices", token=fresh["token"])).code == 200
        # The same secret again, or the whole document saved back, revokes nothing.
        same = await http.call("PATCH", f"/api/devices/{uuid}",
                               {**patched.json, "name": "renamed"}, token=admin)
        assert same.code == 200
        assert (await http.call("GET", "/api/devices", token=fresh["token"])).code == 200
        bad = await http.call("PATCH", f"/api/devices/{uuid}", {"secret": ""}, token=admin)
        assert refusal(bad, 400) is None, bad
    finally:
        await net.close()


@pytest_twisted.ensureDeferred
async def test_used_pairing_token_cannot_be_refreshed(http: Http) -> None:
    """Once its code is paired, an unpaired device's token refreshes no more."""
    pairing = await http.login(token=device_token("_", "_", allow_pairing=True))
    refreshed = await http.call("POST", "/api/auth/token", token=pairing["token"])
    assert refreshed.code == 200, refreshed
    admin = (await user_auth(http))["token"]
    paired = await http.call("POST", "/api/devices/pair",
                             {"pairingCode": pairing["identity"]["pairingCode"]}, token=admin)
    assert paired.code == 200, paired
    answer = await http.call("POST", "/api/auth/token", token=pairing["token"])
    assert refusal(answer, 401) is None, answer


# -- channels -------------------------------------------------------------------------

IDENTITIES = ["user", "device", "consumer", "unpaired", "restricted"]
ACTIONS = ["listen", "broadcast", "respond"]


@attrs.frozen
class Cell:
    """One cell of the channel table."""

    identity: str
    action: str
    organization: str  # "own" or "other"
    name: str  # "shared", or "self": the identity's own uuid
    system: bool
    consumer: bool


def cells() -> list[Cell]:
    return [Cell(identity, action, organization, name, system, consumer)
            for identity in IDENTITIES for action in ACTIONS
            for organization in ("own", "other") for name in ("shared", "self")
            for system in (False, True) for consumer in (False, True)]


def allowed(cell: Cell) -> bool:
    """What PROTOCOL.md A3 and Part B (README: Permissions) allow, written out."""
    if cell.identity == "restricted":  # only good for delivery and layout URLs
        return False
    if cell.organization != "own":  # nobody uses another organization's channels
        return False
    if cell.identity == "unpaired":  # it may only listen on its own system channel
        return cell.action == "listen" and cell.system and cell.name == "self"
    if cell.identity == "consumer" and not cell.consumer:  # consumer channels only
        return False
    if cell.action == "broadcast" and cell.system:  # server notifications only
        return False
    return True


@attrs.frozen
class Caller:
    token: str
    uuid: str
    organization: str

    def channel(self, cell: Cell) -> str:
        own = self.organization
        organization = own if cell.organization == "own" else ("other" if own else ORG)
        name = self.uuid if cell.name == "self" else "lobby"
        return channel(organization, name, cell.system, cell.consumer)


async def caller(http: Http, identity: str) -> Caller:
    if identity in ("user", "restricted"):
        auth = await user_auth(http)
    elif identity == "device":
        auth = await http.login(token=device_token(DEMO["device_uuid"], DEMO["device_secret"]))
    elif identity == "consumer":
        auth = await http.login(token=consumer_app_token(DEMO["consumer_uuid"],
                                                         DEMO["api_key"]))
    else:
        auth = await http.login(token=device_token("_", "_", allow_pairing=True))
    token = auth["restrictedToken"] if identity == "restricted" else auth["token"]
    return Caller(token, auth["identity"]["uuid"], auth["identity"]["organization"])


async def open_client(net: Clients, transport: str, token: str) -> Polling | WebSocket | None:
    """A client past the handshake, or C{None} if the handshake was refused (with 401)."""
    if transport == "websocket":
        try:
            return await net.connect(transport, token)
        except Refused as e:
            assert e.status == 401, e
            return None
    client = net.polling(token)
    answer = await client.request("GET")
    if answer.code != 200:
        assert refusal(answer, 401) is None, answer
        return None
    packets = unframe(answer.body.decode("utf-8"))
    client.handshake = parse_open(packets[0])
    client.sid = client.handshake["sid"]
    assert packets[1:] == ["40"], packets
    return client


async def next_but_status(client: Polling | WebSocket) -> str:
    """
    The next packet but the server's C{status} of a device on its own system
    channel (announced when its session has been recorded, at any time here).
    """
    while True:
        packet = await client.next()
        if packet.startswith("42") and parse_event(packet)[0] == "broadcast" and (
                parse_event(packet)[1][0]["name"] == "status"):
            continue
        return packet


async def listened(server: RunningServer, net: Clients, transport: str, who: Caller,
                   ids: list[str]) -> set[str]:
    """The channels of C{ids} that C{who} is subscribed to (and then delivered on)."""
    client = await open_client(net, transport, who.token)
    if client is None:
        return set()
    accepted = set(await subscribe(client, ids))
    for channel_id in ids:
        server.server.hub.notify(channel_id, "probe", {"to": channel_id})
    delivered = set()
    for _ in accepted:
        name, args = parse_event(await next_but_status(client))
        assert name == "broadcast", (name, args)
        delivered.add(args[0]["channel"])
    await client.send("2")
    assert await next_but_status(client) == "3"  # and nothing from the other channels
    assert delivered == accepted
    return accepted


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest_twisted.ensureDeferred
async def test_channel_matrix(server: RunningServer, http: Http, transport: str) -> None:
    """Every identity, action and channel kind succeeds exactly when A3 and Part B allow it."""
    table = cells()
    callers = {identity: await caller(http, identity) for identity in IDENTITIES}
    recorder = Recorder()
    for channel_id in {callers[c.identity].channel(c) for c in table}:
        server.server.hub.subscribe(channel_id, recorder)
    net = Clients(server.url)
    got: dict[Cell, bool] = {}
    try:
        for identity, who in callers.items():
            mine = [c for c in table if c.identity == identity and c.action == "listen"]
            accepted = await listened(server, net, transport, who,
                                      [who.channel(c) for c in mine])
            got.update({c: who.channel(c) in accepted for c in mine})
    finally:
        await net.close()
    recorder.messages.clear()
    for cell in table:
        if cell.action == "listen":
            continue
        who = callers[cell.identity]
        if cell.action == "broadcast":
            answer = await http.call(
                "POST", "/api/networks/current/broadcasts?timeout=0",
                {"channel": who.channel(cell), "name": f"matrix:{cell.identity}",
                 "payload": 1}, token=who.token)
        else:
            answer = await http.call(
                "POST", "/api/networks/current/responses",
                {"id": "matrix", "channel": who.channel(cell), "payload": 1}, token=who.token)
        got[cell] = answer.code == 200
        if answer.code != 200:
            assert refusal(answer, 403) is None, (cell, answer)
    delivered = {(m["name"], m["channel"]) for m in recorder.messages
                 if m["name"] != "status"}  # the server's, of the device's sessions
    sent = {(f"matrix:{c.identity}", callers[c.identity].channel(c))
            for c in table if c.action == "broadcast" and got[c]}
    assert delivered == sent
    expected = {cell: allowed(cell) for cell in table}
    assert 0 < sum(expected.values()) < len(table)
    assert [(c, got[c]) for c in table if got[c] != expected[c]] == []


# -- secrets in logs ------------------------------------------------------------------

JWT_LIKE = re.compile(r"eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{20,}")
WRONG = {"password": "wrong-Password2", "secret": "wrong-device-secret",
         "api_key": "wrong-api-key-42"}


class Secrets:
    """Every secret a session used or was given."""

    def __init__(self) -> None:
        self.values: set[str] = {DEMO["password"], DEMO["device_secret"], DEMO["api_key"],
                                 *WRONG.values()}

    def add(self, *values: Any) -> None:
        self.values.update(v for v in values if isinstance(v, str) and v)

    def payload(self, auth: dict[str, Any]) -> None:
        self.add(auth.get("token"), auth.get("restrictedToken"))

    def leaks(self, text: str) -> list[str]:
        found = []
        for value in self.values:
            forms = {value, quote(value, safe=""), quote(value)}
            if value.count(".") == 2:
                forms.add(signature_of(value))
            found += [f"{value[:12]}… as {form[:12]}…" for form in forms if form in text]
        found += [f"a JWT: {m[:40]}…" for m in JWT_LIKE.findall(text)]
        return found


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await task.deferLater(reactor, 0.05, lambda: None)


async def session(url: str, secrets: Secrets) -> None:
    """
    An SDK session through logins of every kind, refreshes, wrong credentials,
    device creation, pairing, broadcasts, responses and restricted-token URLs.
    The server's tokens live 4 s, so the SDK refreshes each at 2 s.
    """
    services: list[ExpService] = []
    updates: dict[int, int] = {}

    def start(**options: Any) -> ExpService:
        service = ExpService(host=url, **options)
        updates[id(service)] = 0

        def updated(payload: dict[str, Any]) -> None:
            updates[id(service)] += 1
            secrets.payload(payload)

        service.on("update", updated)
        services.append(service)
        service.startService()
        return service

    http = Http(url)
    try:
        user = start(**{k: USER_LOGIN[k] for k in ("username", "password", "organization")})
        device = start(uuid=DEMO["device_uuid"], secret=DEMO["device_secret"])
        consumer = start(uuid=DEMO["consumer_uuid"], api_key=DEMO["api_key"])
        for service in (user, device, consumer):
            await guard(service.whenConnected())
        await device.get_channel("ops").listen("ping", callback=lambda b: b.respond("pong"))
        assert await user.get_channel("ops").broadcast("ping", timeout=1) == ["pong"]
        kiosk = consumer.get_channel("kiosk", consumer=True)
        await kiosk.listen("hello", callback=lambda b: b.respond("hi"))
        assert await user.get_channel("kiosk", consumer=True).broadcast(
            "hello", timeout=1) == ["hi"]

        made = await user.create_device({"name": "made here"})
        secrets.add(made.document["secret"])
        made_service = start(uuid=made.uuid, secret=made.document["secret"])
        await guard(made_service.whenConnected())

        pairing = start(allow_pairing=True)
        await until(lambda: pairing.pairing_code is not None, "a pairing code")
        await guard(pairing.whenConnected())
        paired = await user.post("/api/devices/pair",
                                 {"pairingCode": pairing.pairing_code, "name": "paired"})
        secrets.add(paired["secret"])
        await until(lambda: pairing.identity.get("paired") is True, "the pairing")

        [location] = await user.find_locations(uuid="demo-location")
        [welcome] = await device.find_content(name="welcome.txt")
        for delivery in (location.get_layout_url(), welcome.get_url()):
            assert (await Http("").call("GET", delivery)).code == 200, delivery

        login = device_token(DEMO["device_uuid"], DEMO["device_secret"])
        secrets.add(login)
        auth = await http.login(token=login)
        secrets.payload(auth)
        refreshed = await http.call("POST", "/api/auth/token", token=auth["token"])
        assert refreshed.code == 200, refreshed
        secrets.payload(refreshed.json)
        polling = await http.call("GET", "/socket.io/", token=None, params={
            "EIO": "3", "transport": "polling", "token": auth["token"]})
        assert polling.code == 200, polling
        assert (await http.call("GET", "/socket.io/", params={
            "EIO": "3", "transport": "polling", "token": tampered(auth["token"], org="x")}
        )).code == 401

        wrong = [dict(username=DEMO["username"], password=WRONG["password"], organization=ORG),
                 dict(uuid=DEMO["device_uuid"], secret=WRONG["secret"]),
                 dict(uuid=DEMO["consumer_uuid"], api_key=WRONG["api_key"])]
        for options in wrong:
            refused = start(**options)
            with pytest.raises(AuthenticationError):
                await guard(refused.whenAuthenticated())
        for body in ({**USER_LOGIN, "password": WRONG["password"]},
                     {"token": device_token(DEMO["device_uuid"], WRONG["secret"])}):
            assert (await http.call("POST", "/api/auth/login", body)).code == 401

        for service in (user, device, consumer, made_service, pairing):
            await until(lambda s=service: updates[id(s)] >= 3, "the SDK's refreshes")
        assert await user.get_channel("ops").broadcast("ping", timeout=1) == ["pong"]
    finally:
        for service in services:
            await service.stopService()


@pytest_twisted.ensureDeferred
async def test_no_secret_in_the_logs_of_an_in_process_server() -> None:
    """Passwords, secrets, api keys and tokens never reach a twisted.logger event."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    secrets = Secrets()
    try:
        running = await start_server(token_lifetime=4)
        try:
            assert running.server.tokens is not None
            secrets.add(running.server.tokens.key)
            await session(running.url, secrets)
        finally:
            await running.stop()
    finally:
        globalLogPublisher.removeObserver(events.append)
    text = "\n".join(render(event) for event in events)
    assert "POST /api/auth/login" in text  # the access log was captured
    assert secrets.leaks(text) == []
    assert "transport=polling&token=<redacted>" in text
    assert "?_rt=<redacted>" in text


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_no_secret_in_the_log_file_of_twistd_exp_server(tmp_path: Path) -> None:
    """The log of a C{twistd exp-server} process shows no password, secret or token."""
    secrets = Secrets()
    process = ServerProcess("--token-lifetime", "4", directory=str(tmp_path)).start()
    try:
        await session(process.url, secrets)
    finally:
        process.stop()
    db = sqlite3.connect(tmp_path / "exp.sqlite3")
    try:
        [(key,)] = db.execute("SELECT value FROM settings WHERE name = 'signingKey'")
    finally:
        db.close()
    secrets.add(key)
    text = process.log()
    assert "POST /api/auth/login" in text
    assert secrets.leaks(text) == []
    assert "token=<redacted>" in text


def test_access_log_redacts_tokens_in_uri_and_referrer() -> None:
    """The access log line of a request keeps its path and drops token values."""
    from twisted.web.test.requesthelper import DummyRequest

    from exp.server._web import access_log_formatter

    request = DummyRequest([b""])
    request.uri = b"/api/delivery/a.png?variant=small&_rt=SECRET1&%5Frt=SECRET2&token=SECRET3"
    request.method = b"GET"
    request.clientproto = b"HTTP/1.1"
    request.code = 200
    request.sentLength = 5
    request.requestHeaders.setRawHeaders(b"referer", [b"http://h/app?token=SECRET4#x"])
    line = access_log_formatter("[now]", request)
    assert "SECRET" not in line
    assert "/api/delivery/a.png?variant=small&_rt=<redacted>" in line
    assert "http://h/app?token=<redacted>#x" in line


_LOG_PART = st.one_of(st.sampled_from([b"", b"-", b"GET", b"HTTP/1.1", b"it's", b'"q"', b"a\\b",
                                        b"/x?token=t&sid=s", b"/_rt=r/y", b"\xe9", b"\t"]),
                      st.binary(max_size=12))


@settings(max_examples=300, deadline=None)
@given(method=_LOG_PART, uri=_LOG_PART, protocol=_LOG_PART, referrer=st.none() | _LOG_PART,
       agent=st.none() | _LOG_PART, host=st.sampled_from(["127.0.0.1", "::1", None]))
def test_access_log_lines_are_twisted_webs_combined_format(
        method: bytes, uri: bytes, protocol: bytes, referrer: bytes | None,
        agent: bytes | None, host: str | None) -> None:
    """Whatever the request, its access log line is twisted.web's combined log format of
    the request with its tokens redacted, escaping and all."""
    from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
    from twisted.web.http import combinedLogFormatter
    from twisted.web.test.requesthelper import DummyRequest

    from exp.server._web import _Redacted, access_log_formatter

    request = DummyRequest([b""])
    request.method, request.uri, request.clientproto = method, uri, protocol
    request.code, request.sentLength = 200, 17
    for name, value in ((b"referer", referrer), (b"user-agent", agent)):
        if value is not None:
            request.requestHeaders.setRawHeaders(name, [value])
    request.client = (UNIXAddress(None) if host is None else
                      IPv6Address("TCP", host, 1) if ":" in host else IPv4Address("TCP", host, 1))
    try:
        expected = combinedLogFormatter("[now]", _Redacted(request))
    except UnicodeError:  # twisted.web's escaping takes only ASCII text
        return
    assert access_log_formatter("[now]", request) == expected


# -- constant-time comparisons ----------------------------------------------------------


class CompareSpy:
    """C{hmac.compare_digest} that remembers what it compared."""

    def __init__(self) -> None:
        self.real = hmac.compare_digest
        self.calls: list[tuple[bytes, bytes]] = []

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls.append((bytes(a, "utf-8") if isinstance(a, str) else bytes(a),
                           bytes(b, "utf-8") if isinstance(b, str) else bytes(b)))
        return self.real(a, b)

    def compared(self, value: bytes) -> bool:
        return any(value in call for call in self.calls)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> CompareSpy:
    """A spy on C{hmac.compare_digest} as the server module (and PyJWT) call it."""
    assert server_auth.hmac is hmac and jwt.algorithms.hmac is hmac
    found = CompareSpy()
    monkeypatch.setattr(server_auth.hmac, "compare_digest", found)
    return found


def test_pyjwt_checks_hmac_signatures_with_compare_digest() -> None:
    """PyJWT's HMAC verification (which checks device and server tokens) is compare_digest."""
    source = inspect.getsource(jwt.algorithms.HMACAlgorithm.verify)
    assert "hmac.compare_digest(" in source


@pytest_twisted.ensureDeferred
async def test_password_check_is_constant_time(
        server: RunningServer, http: Http, spy: CompareSpy) -> None:
    """Right, wrong and unknown-user logins all compare scrypt digests with compare_digest."""
    user = await server.server.storage.get(ORG, "users", DEMO["username"])
    assert user is not None
    stored = base64.b64decode(user["passwordHash"].split("$")[-1])
    await user_auth(http)
    assert spy.compared(stored)
    spy.calls.clear()
    answer = await http.call("POST", "/api/auth/login", {**USER_LOGIN, "password": "nope"})
    assert answer.code == 401
    assert spy.compared(stored)
    spy.calls.clear()
    answer = await http.call("POST", "/api/auth/login",
                             {**USER_LOGIN, "username": "nobody@example.com"})
    assert answer.code == 401
    assert [len(b) for _, b in spy.calls] == [len(stored)]  # the dummy hash, as long


@pytest.mark.parametrize("kind", ["device", "consumer", "server token"])
@pytest_twisted.ensureDeferred
async def test_token_signatures_are_checked_in_constant_time(
        http: Http, spy: CompareSpy, kind: str) -> None:
    """Device, consumer app and server tokens: signatures compared by compare_digest.
    (A pairing login's signature is not checked: it grants nothing.)"""
    if kind == "server token":
        token = (await user_auth(http))["token"]
        spy.calls.clear()
        assert (await http.call("GET", "/api/devices", token=token)).code == 200
    else:
        token = {"device": device_token(DEMO["device_uuid"], DEMO["device_secret"]),
                 "consumer": consumer_app_token(DEMO["consumer_uuid"], DEMO["api_key"])}[kind]
        await http.login(token=token)
    assert spy.compared(unb64url(signature_of(token)))


def test_check_password_and_same_secret_use_compare_digest(spy: CompareSpy) -> None:
    """The server's two secret comparisons go through compare_digest."""
    assert check_password("pw", server_auth.hash_password("pw"))
    assert not check_password("other", server_auth.hash_password("pw"))
    assert len(spy.calls) == 2
    assert server_auth.same_secret("abc", "abc") and not server_auth.same_secret("abc", "abd")
    assert spy.calls[2:] == [(b"abc", b"abc"), (b"abc", b"abd")]


SECRET_NAMES = re.compile(r"secret|password|api_?key|digest|signature|passwordhash|^key$",
                          re.IGNORECASE)


def _secret_operand(node: ast.expr) -> str | None:
    """The secret a comparison operand names, if it names one."""
    if isinstance(node, ast.Name) and SECRET_NAMES.search(node.id):
        return node.id
    if isinstance(node, ast.Attribute) and SECRET_NAMES.search(node.attr):
        return node.attr
    key = None
    if isinstance(node, ast.Subscript):
        key = node.slice
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr == "get" and node.args):
        key = node.args[0]
    if isinstance(key, ast.Constant) and isinstance(key.value, str) \
            and SECRET_NAMES.search(key.value):
        return key.value
    return None


def secret_comparisons(source: str) -> list[str]:
    """The ==, !=, in and not in of C{source} on a secret-looking operand."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare) or not any(
                isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
            continue
        for operand in [node.left, *node.comparators]:
            name = _secret_operand(operand)
            if name is not None:
                found.append(f"{node.lineno} compares {name}")
    return found


def test_no_secret_is_compared_with_equality() -> None:
    """No ==, !=, in or not in on a password, secret, api key, digest or signature."""
    assert len(secret_comparisons(
        "a = document['secret'] == given\nb = doc.get('apiKey') != given\n"
        "c = password in known\nd = self.signature == sig\ne = k != 'secret'\n")) == 4
    package = Path(exp.server.__file__).parent.parent
    found = [f"{source.name}:{line}"
             for source in sorted([*package.glob("server/*.py"), *package.glob("protocol/*.py")])
             for line in secret_comparisons(source.read_text("utf-8"))]
    assert found == []


# -- the database file ---------------------------------------------------------------------


@pytest.mark.slow
def test_twistd_database_is_owner_only_under_umask_0(tmp_path: Path) -> None:
    """C{twistd exp-server} under umask 0 creates its database (and WAL files) 0o600."""
    previous = os.umask(0)
    try:
        process = ServerProcess(directory=str(tmp_path)).start()
    finally:
        os.umask(previous)
    try:
        body = json.dumps(USER_LOGIN).encode()
        request = urllib.request.Request(process.url + "/api/auth/login", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
        names = [tmp_path / f"exp.sqlite3{suffix}" for suffix in ("", "-wal", "-shm")]
        modes = {name.name: stat.S_IMODE(os.stat(name).st_mode)
                 for name in names if name.exists()}
        assert "exp.sqlite3" in modes
        assert modes == dict.fromkeys(modes, 0o600)
    finally:
        process.stop()

