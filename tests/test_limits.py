"""
Budgets against guessing and flooding (issue 13, items 8 and 9): failed
logins and pairing codes per peer address, lockout of an account after
repeated failures, unpaired logins per peer, pairing codes that expire, and
password hashing on a thread pool of its own, at OWASP's cost.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from exp.protocol import device_token
from exp.server import _auth
from exp.server._query import Query
from exp.server.testing import DEMO, RunningServer, start_server

from ._support import assert_error
from .conftest import Answer, Http

USER = {"username": DEMO["username"], "password": DEMO["password"],
        "organization": DEMO["organization"]}


@pytest_twisted.async_yield_fixture()
async def limited() -> AsyncIterator[tuple[RunningServer, Http]]:
    """A demo server with small budgets: 5 failures a minute per peer, lockout after 3."""
    running = await start_server(failures_per_minute=5, lockout_failures=3,
                                 lockout_seconds=0.5, unpaired_logins_per_minute=4,
                                 pairing_code_lifetime=0.5)
    yield running, Http(running.url)
    await running.stop()


def assert_too_many(answer: Answer, code: str) -> None:
    """A 429 {code, message} that says when to try again."""
    assert_error(answer, 429, code)
    retry = answer.headers.getRawHeaders(b"retry-after")
    assert retry is not None and int(retry[0]) >= 1, answer


async def until(check: Callable[[], Any], bound: float = 30.0) -> Any:
    """Await C{check()} every 50 ms until it gives something true (fails after C{bound} s)."""
    for _ in range(int(bound / 0.05)):
        result = await check()
        if result:
            return result
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"not so within {bound} s")


@pytest_twisted.ensureDeferred
async def test_an_account_is_locked_after_repeated_failures(
        limited: tuple[RunningServer, Http]) -> None:
    """After 3 wrong passwords the account answers 429 auth.locked, even to the right one,
    until the lockout is over; a success forgets earlier failures."""
    _, http = limited
    for _ in range(2):
        answer = await http.call("POST", "/api/auth/login", dict(USER, password="wrong"))
        assert_error(answer, 401, "auth.invalidCredentials")
    await http.login(**USER)  # forgets the two failures
    for _ in range(3):
        answer = await http.call("POST", "/api/auth/login", dict(USER, password="wrong"))
        assert_error(answer, 401, "auth.invalidCredentials")
    assert_too_many(await http.call("POST", "/api/auth/login", USER), "auth.locked")

    async def unlocked() -> bool:
        return (await http.call("POST", "/api/auth/login", USER)).code == 200

    await until(unlocked)


@pytest_twisted.ensureDeferred
async def test_a_peer_has_a_budget_of_failures(limited: tuple[RunningServer, Http]) -> None:
    """Failures on many accounts (users and device secrets) from one address use up its
    budget: 429 request.rateLimited; the budget is per failure, not per login."""
    _, http = limited
    for _ in range(10):
        await http.login(**USER)  # successes cost nothing
    for i in range(5):
        body = ({**USER, "username": f"guess{i}@example.com"} if i % 2 else
                {"token": device_token(f"device-{i}", "guess")})
        assert (await http.call("POST", "/api/auth/login", body)).code == 401
    for body in ({**USER, "username": "next@example.com"},
                 {"token": device_token(DEMO["device_uuid"], DEMO["device_secret"])}):
        assert_too_many(await http.call("POST", "/api/auth/login", body),
                        "request.rateLimited")


@pytest_twisted.ensureDeferred
async def test_pairing_code_guesses_are_limited(limited: tuple[RunningServer, Http]) -> None:
    """Wrong pairing codes are 404 until the pairing account is locked: then 429."""
    _, http = limited
    token = await http.user_token()
    for code in ("AAAAAA", "BBBBBB", "CCCCCC"):
        answer = await http.call("POST", "/api/devices/pair", {"pairingCode": code},
                                 token=token)
        assert_error(answer, 404, "pairing.notFound")
    answer = await http.call("POST", "/api/devices/pair", {"pairingCode": "DDDDDD"},
                             token=token)
    assert_too_many(answer, "auth.locked")


@pytest_twisted.ensureDeferred
async def test_unpaired_logins_per_peer_are_limited(
        limited: tuple[RunningServer, Http]) -> None:
    """Each unpaired login stores a pairing code: past 4 a minute from one address, 429."""
    _, http = limited
    for _ in range(4):
        await http.login(token=device_token("_", "_", allow_pairing=True))
    answer = await http.call("POST", "/api/auth/login",
                             {"token": device_token("_", "_", allow_pairing=True)})
    assert_too_many(answer, "request.rateLimited")


@pytest_twisted.ensureDeferred
async def test_pairing_codes_expire_and_are_purged(
        limited: tuple[RunningServer, Http]) -> None:
    """Past its lifetime a pairing code cannot be paired nor its token refreshed, and the
    purge removes it from the database."""
    running, http = limited
    pairing = await http.login(token=device_token("_", "_", allow_pairing=True))
    code = pairing["identity"]["pairingCode"]
    storage = running.server.storage
    assert await storage.get("", "pairings", code) is not None
    token = await http.user_token()

    async def expired() -> bool:
        answer = await http.call("POST", "/api/auth/token", token=pairing["token"])
        return answer.code == 401

    await until(expired)
    answer = await http.call("POST", "/api/devices/pair", {"pairingCode": code}, token=token)
    assert_error(answer, 404, "pairing.notFound")
    other = await http.login(token=device_token("_", "_", allow_pairing=True))
    await running.server.pairings.purge()
    assert await storage.get("", "pairings", other["identity"]["pairingCode"]) is not None

    async def purged() -> bool:
        await running.server.pairings.purge()
        return await storage.get("", "pairings", other["identity"]["pairingCode"]) is None

    await until(purged)


@pytest_twisted.ensureDeferred
async def test_passwords_are_checked_on_a_pool_of_their_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """scrypt runs on the hashing pool's threads, never on the reactor's shared pool."""
    threads: list[str] = []
    check = _auth.check_password

    def spy(password: str, stored: str) -> bool:
        threads.append(threading.current_thread().name)
        return check(password, stored)

    monkeypatch.setattr(_auth, "check_password", spy)
    running = await start_server()
    try:
        http = Http(running.url)
        await http.login(**USER)
        answer = await http.call("POST", "/api/auth/login", dict(USER, password="wrong"))
        assert answer.code == 401
        answer = await http.call("POST", "/api/auth/login", dict(USER, username="nobody@x"))
        assert answer.code == 401
    finally:
        await running.stop()
    assert len(threads) == 3, threads
    assert all("exp-password-hashing" in name for name in threads), threads


def test_password_hashes_have_owasp_cost() -> None:
    """A server run for real hashes with scrypt N = 2**17, r = 8, p = 1 (OWASP)."""
    assert _auth.PASSWORD_COST == 17
    stored = _auth.hash_password("pw")
    assert stored.split("$")[1:4] == [str(2**17), "8", "1"]
    assert _auth.check_password("pw", stored) and not _auth.check_password("px", stored)
    assert not _auth.needs_rehash(stored) and _auth.needs_rehash(stored, 18)


@pytest_twisted.ensureDeferred
async def test_cheaper_hashes_are_redone_at_the_next_login(tmp_path: Any) -> None:
    """A hash stored at a lower cost than the server's is replaced when its user logs in."""
    db = str(tmp_path / "exp.sqlite3")

    async def stored_cost(cost: int, login: bool) -> int:
        running = await start_server(db_path=db, password_cost=cost, directory=str(tmp_path))
        try:
            if login:
                await Http(running.url).login(**USER)
            [user] = (await running.server.storage.find(
                DEMO["organization"], "users", Query()))[0]
            return int(user["passwordHash"].split("$")[1])
        finally:
            await running.stop()

    assert await stored_cost(10, login=False) == 2**10
    assert await stored_cost(11, login=False) == 2**10
    assert await stored_cost(11, login=True) == 2**11
