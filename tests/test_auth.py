"""Login, refresh and token checks of PROTOCOL.md A2 against a real server."""

from __future__ import annotations

import time
from typing import Any

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


def js_sdk_token(claims: dict[str, Any], secret: str) -> str:
    """A login token as the official JS SDK signs it: iat, and exp 24 h later, in seconds."""
    iat = round(time.time())
    return sign({**claims, "iat": iat, "exp": iat + 86400}, secret)


def python_sdk_token(claims: dict[str, Any], secret: str) -> str:
    """A login token as the Python 1.0.x SDK signs it: exp in 30 s, in milliseconds."""
    return sign({**claims, "exp": (int(time.time()) + 30) * 1000}, secret)


@pytest_twisted.ensureDeferred
async def test_login_tokens_of_the_official_clients(http: Http) -> None:
    """Device and consumer-app logins signed as the JS and Python 1.0.x SDKs sign them work."""
    device = {"type": "device", "uuid": DEMO["device_uuid"], "allowPairing": False}
    app = {"type": "consumerApp", "uuid": DEMO["consumer_uuid"]}
    for signed in (js_sdk_token, python_sdk_token):
        auth = await http.login(token=signed(device, DEMO["device_secret"]))
        assert (auth["identity"]["type"], auth["identity"]["uuid"]) == ("device", "test-uuid")
        auth = await http.login(token=signed(app, DEMO["api_key"]))
        assert auth["identity"]["type"] == "consumerApp"


@pytest_twisted.ensureDeferred
async def test_pairing_logins_of_the_official_clients(http: Http) -> None:
    """The JS SDK's pairing login (no uuid) and the Python 1.0.x one (uuid "_", exp in ms),
    both signed with "_", get a pairing identity."""
    for token in (js_sdk_token({"type": "device", "allowPairing": True}, "_"),
                  python_sdk_token({"uuid": "_", "type": "device", "allowPairing": True}, "_")):
        auth = await http.login(token=token)
        assert auth["identity"]["paired"] is False, auth
        assert auth["identity"]["uuid"].startswith("pairing-")


@pytest_twisted.ensureDeferred
async def test_pairing_login_with_wrong_credentials_is_unpaired(http: Http) -> None:
    """With allowPairing, wrong or unknown device credentials (which the JS SDK signs its
    token with) start unpaired; right ones still log in as the device."""
    for uuid, secret in ((DEMO["device_uuid"], "wrong"), ("nobody", "whatever"), ("", "x")):
        token = js_sdk_token({"type": "device", "uuid": uuid, "allowPairing": True}, secret)
        auth = await http.login(token=token)
        assert auth["identity"]["paired"] is False, (uuid, auth)
    token = js_sdk_token({"type": "device", "uuid": DEMO["device_uuid"], "allowPairing": True},
                         DEMO["device_secret"])
    auth = await http.login(token=token)
    assert auth["identity"] == {"type": "device", "uuid": "test-uuid",
                                "organization": "scala", "paired": True}


@pytest_twisted.ensureDeferred
async def test_login_token_needs_an_exp_within_a_day(http: Http) -> None:
    """A login token without exp, or whose exp is more than 24 h (+5 min) ahead, is 401,
    in seconds and in milliseconds; a pairing token too."""
    now = int(time.time())
    for claims, secret in (({"type": "device", "uuid": DEMO["device_uuid"]},
                            DEMO["device_secret"]),
                           ({"type": "consumerApp", "uuid": DEMO["consumer_uuid"]},
                            DEMO["api_key"]),
                           ({"type": "device", "uuid": "_", "allowPairing": True}, "_")):
        for exp in (None, now + 86400 + 600, (now + 86400 + 600) * 1000, 10**13 * 5):
            token = sign(claims if exp is None else {**claims, "exp": exp}, secret)
            answer = await http.call("POST", "/api/auth/login", {"token": token})
            assert answer.code == 401, (claims, exp, answer)


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
