"""Login, refresh and token checks of PROTOCOL.md A2 against a real server."""

from __future__ import annotations

import time

import jwt
import pytest_twisted

from exp.protocol import consumer_app_token, device_token, sign
from exp.server.testing import DEMO

from .conftest import Http

USER = {"username": DEMO["username"], "password": DEMO["password"],
        "organization": DEMO["organization"]}


@pytest_twisted.ensureDeferred
async def test_user_login_answers_auth_payload(http: Http) -> None:
    """A user login answers token, expiration in ms, identity and hosts."""
    auth = await http.login(type="user", **USER)
    assert auth["identity"]["type"] == "user"
    assert auth["identity"]["organization"] == "scala"
    assert auth["identity"]["username"] == DEMO["username"]
    assert auth["api"]["host"] == http.url
    assert auth["network"]["host"] == http.url
    assert auth["expiration"] > time.time() * 1000
    assert auth["restrictedToken"] != auth["token"]


@pytest_twisted.ensureDeferred
async def test_user_login_without_type_works(http: Http) -> None:
    """Older clients omit type: the body is still a user login."""
    auth = await http.login(**USER)
    assert auth["identity"]["type"] == "user"


@pytest_twisted.ensureDeferred
async def test_wrong_password_is_401(http: Http) -> None:
    """A wrong password, organization or unknown user is 401 with a code."""
    for body in (dict(USER, password="nope"), dict(USER, organization="other"),
                 dict(USER, username="nobody@example.com")):
        answer = await http.call("POST", "/api/auth/login", body)
        assert answer.code == 401, answer
        assert answer.json["code"] == "auth.invalidCredentials"


@pytest_twisted.ensureDeferred
async def test_incomplete_user_login_is_400(http: Http) -> None:
    """A user login missing fields names them."""
    answer = await http.call("POST", "/api/auth/login", {"username": "a"})
    assert answer.code == 400
    assert "password" in answer.json["message"]
    assert "organization" in answer.json["message"]


@pytest_twisted.ensureDeferred
async def test_device_login_seconds_and_milliseconds(http: Http) -> None:
    """Device tokens are accepted with exp in seconds and in milliseconds."""
    auth = await http.login(token=device_token(DEMO["device_uuid"], DEMO["device_secret"]))
    assert auth["identity"] == {"type": "device", "uuid": "test-uuid",
                                "organization": "scala", "paired": True}
    ms = sign({"type": "device", "uuid": DEMO["device_uuid"],
               "exp": int((time.time() + 60) * 1000)}, DEMO["device_secret"])
    auth = await http.login(token=ms)
    assert auth["identity"]["uuid"] == "test-uuid"


@pytest_twisted.ensureDeferred
async def test_expired_device_token_is_401(http: Http) -> None:
    """A login token whose exp has passed (seconds or ms) is refused."""
    for exp in (int(time.time()) - 5, int((time.time() - 5) * 1000)):
        token = sign({"type": "device", "uuid": DEMO["device_uuid"], "exp": exp},
                     DEMO["device_secret"])
        answer = await http.call("POST", "/api/auth/login", {"token": token})
        assert answer.code == 401, answer


@pytest_twisted.ensureDeferred
async def test_device_token_with_wrong_secret_is_401(http: Http) -> None:
    """A device token signed with another secret is refused."""
    answer = await http.call("POST", "/api/auth/login",
                             {"token": device_token(DEMO["device_uuid"], "wrong")})
    assert answer.code == 401
    assert answer.json["code"] == "auth.invalidCredentials"


@pytest_twisted.ensureDeferred
async def test_alg_none_token_is_refused(http: Http) -> None:
    """An unsigned (alg none) login token is refused."""
    token = jwt.encode({"type": "device", "uuid": DEMO["device_uuid"]}, None, algorithm="none")
    answer = await http.call("POST", "/api/auth/login", {"token": token})
    assert answer.code == 401


@pytest_twisted.ensureDeferred
async def test_consumer_app_login(http: Http) -> None:
    """Consumer apps log in with a token signed by their api key."""
    auth = await http.login(token=consumer_app_token(DEMO["consumer_uuid"], DEMO["api_key"]))
    assert auth["identity"]["type"] == "consumerApp"
    assert auth["identity"]["organization"] == "scala"


@pytest_twisted.ensureDeferred
async def test_refresh_gives_new_token_for_same_identity(http: Http) -> None:
    """POST /api/auth/token answers a fresh payload for the same identity."""
    auth = await http.login(**USER)
    answer = await http.call("POST", "/api/auth/token", token=auth["token"])
    assert answer.code == 200, answer
    assert answer.json["identity"] == auth["identity"]
    assert answer.json["token"] != auth["token"]


@pytest_twisted.ensureDeferred
async def test_refresh_with_bad_token_is_401(http: Http) -> None:
    """Refreshing with a missing, tampered or foreign token is 401."""
    auth = await http.login(**USER)
    head, body, signature = auth["token"].split(".")
    tampered = f"{head}.{body}.{signature[::-1]}"
    claims = {"typ": "user", "sub": "x", "org": "scala", "exp": int(time.time()) + 60}
    forged = jwt.encode(claims, "not-the-key-of-this-server-at-all!", algorithm="HS256")
    for token in (None, tampered, forged, "garbage"):
        answer = await http.call("POST", "/api/auth/token", token=token)
        assert answer.code == 401, (token, answer)


@pytest_twisted.ensureDeferred
async def test_expired_server_token_is_401(http: Http) -> None:
    """Tokens of the server expire after the configured lifetime."""
    from exp.server.testing import start_server

    short = await start_server(token_lifetime=3)
    try:
        client = Http(short.url)
        token = await client.user_token()
        assert (await client.call("GET", "/api/devices", token=token)).code == 200
        from twisted.internet import reactor, task

        await task.deferLater(reactor, 4.1, lambda: None)
        answer = await client.call("GET", "/api/devices", token=token)
        assert answer.code == 401
        assert "expired" in answer.json["message"]
    finally:
        await short.stop()


@pytest_twisted.ensureDeferred
async def test_restricted_token_only_for_delivery(http: Http) -> None:
    """The restricted token is refused on ordinary endpoints."""
    auth = await http.login(**USER)
    answer = await http.call("GET", "/api/devices", token=auth["restrictedToken"])
    assert answer.code == 403
    assert answer.json["code"] == "auth.restricted"
