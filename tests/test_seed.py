"""
Seed files (PROTOCOL.md Part B): a bad seed is refused with a message naming
the problem, loading the same seed twice changes nothing, and what the
database keeps of it (passwords, the signing key) is kept safely.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from exp.server import SeedError, load_seed
from exp.server.testing import start_server

from .conftest import Http

PASSWORD = "Plain-Zebra-Passw0rd-7f3e"
ORG = "acme"
USER = {"username": "ann@acme.test", "password": PASSWORD, "organization": ORG}


def write_seed(directory: Path, seed: Any) -> str:
    path = directory / "seed.json"
    path.write_text(seed if isinstance(seed, str) else json.dumps(seed), encoding="utf-8")
    return str(path)


def org(**fields: Any) -> dict[str, Any]:
    return {"organizations": [dict({"name": ORG}, **fields)]}


BAD_SEEDS = [
    ("not json", '{"organizations": [', r"is not valid JSON"),
    ("empty object", {}, r"top level must be an object with an 'organizations' list"),
    ("organizations not a list", {"organizations": {"name": "a"}},
     r"'organizations' list"),
    ("a list at the top", [{"name": "a"}], r"'organizations' list"),
    ("organization not an object", {"organizations": ["acme"]},
     r"organizations\[0\] must be an object"),
    ("organization without name", {"organizations": [{"users": []}]},
     r"organizations\[0\] needs a non-empty string 'name'"),
    ("organization with empty name", {"organizations": [{"name": ""}]},
     r"organizations\[0\] needs a non-empty string 'name'"),
    ("duplicate organization", {"organizations": [{"name": "acme"}, {"name": "acme"}]},
     r"organization 'acme' is declared twice"),
    ("device without secret", org(devices=[{"uuid": "d1"}]),
     r"organization 'acme': a device needs a non-empty string 'secret'"),
    ("device without uuid", org(devices=[{"secret": "s"}]),
     r"organization 'acme': a device needs a non-empty string 'uuid'"),
    ("user without password", org(users=[{"username": "ann"}]),
     r"organization 'acme': a user needs a non-empty string 'password'"),
    ("consumer app without api key", org(consumerApps=[{"uuid": "a1"}]),
     r"organization 'acme': a consumer app needs a non-empty string 'apiKey'"),
    ("users not a list of objects", org(users=["ann"]),
     r"organization 'acme'\.users must be a list of objects"),
    ("missing content folder", org(content="no-such-folder"),
     r"organization 'acme': content folder .*no-such-folder does not exist"),
    ("missing layout image", org(locations=[{"name": "hq", "layout": "nope.png"}]),
     r"organization 'acme': layout image .*nope\.png does not exist"),
    ("data item without value", org(data=[{"group": "g", "key": "k"}]),
     r"organization 'acme': data item g/k has no value"),
    ("unknown key", org(devcies=[], colour="red"),
     r"organization 'acme' has unknown keys: colour, devcies"),
]


@pytest.mark.parametrize(("seed", "message"), [case[1:] for case in BAD_SEEDS],
                         ids=[case[0] for case in BAD_SEEDS])
def test_bad_seed_names_the_problem(tmp_path: Path, seed: Any, message: str) -> None:
    """load_seed raises SeedError naming the file and what is wrong with it."""
    path = write_seed(tmp_path, seed)
    with pytest.raises(SeedError, match=message) as raised:
        load_seed(path)
    assert path in str(raised.value)


def test_missing_seed_file(tmp_path: Path) -> None:
    """A seed file that does not exist is a SeedError naming it."""
    path = str(tmp_path / "absent.json")
    with pytest.raises(SeedError, match=r"cannot read seed file .*absent\.json"):
        load_seed(path)


def test_good_seed_loads(tmp_path: Path) -> None:
    """A complete seed loads, with paths resolved against the seed file's folder."""
    (tmp_path / "content").mkdir()
    (tmp_path / "hq.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    [loaded] = load_seed(write_seed(tmp_path, full_seed()))
    assert loaded.name == ORG
    assert loaded.content == str(tmp_path / "content")
    assert [d["uuid"] for d in loaded.devices] == ["d-1"]
    assert list(loaded.layouts.values()) == [str(tmp_path / "hq.png")]
    assert "layout" not in loaded.resources["locations"][0]


# -- applying a seed -------------------------------------------------------------


def full_seed() -> dict[str, Any]:
    return org(
        users=[{"username": USER["username"], "password": PASSWORD, "role": "admin"}],
        devices=[{"uuid": "d-1", "secret": "d-secret", "name": "lobby", "extra": [1, 2]}],
        consumerApps=[{"uuid": "app-1", "apiKey": "app-key", "name": "kiosk"}],
        things=[{"name": "badge reader", "subtype": "scala:thing:rfid"},
                {"uuid": "t-2", "name": "scanner"}],
        experiences=[{"name": "welcome"}],
        locations=[{"name": "hq", "layout": "hq.png", "zones": [{"key": "a", "name": "A"}]}],
        feeds=[{"name": "news", "subtype": "scala:feed:rss", "url": "http://127.0.0.1:9/"}],
        data=[{"group": "cats", "key": "fluffy", "value": {"age": 3}},
              {"key": "no-group", "value": None}],
        content="content",
    )


def prepare(tmp_path: Path) -> tuple[dict[str, Any], str]:
    (tmp_path / "content").mkdir(exist_ok=True)
    (tmp_path / "content" / "a.txt").write_text("a")
    (tmp_path / "hq.png").write_bytes(b"\x89PNG\r\n\x1a\nHQ")
    return full_seed(), str(tmp_path / "exp.sqlite3")


def db_rows(db_path: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the database holds, in storage order."""
    db = sqlite3.connect(db_path)
    try:
        return {
            "documents": db.execute(
                "SELECT seq, organization, collection, uuid, body FROM documents ORDER BY seq"
            ).fetchall(),
            "blobs": db.execute("SELECT * FROM blobs ORDER BY organization, name").fetchall(),
            "settings": db.execute("SELECT * FROM settings ORDER BY name").fetchall(),
        }
    finally:
        db.close()


async def api_view(http: Http) -> dict[str, Any]:
    """What a user of the organization sees through the API."""
    token = str((await http.login(**USER))["token"])
    view: dict[str, Any] = {}
    for path in ("devices", "things", "experiences", "locations", "connectors/feeds",
                 "data", "content"):
        answer = await http.call("GET", f"/api/{path}", token=token)
        assert answer.code == 200, answer
        view[path] = answer.json
    return view


@pytest_twisted.ensureDeferred
async def test_same_seed_twice_changes_nothing(tmp_path: Path) -> None:
    """Restarting on the same database with the same seed adds and changes nothing."""
    seed, db_path = prepare(tmp_path)
    first = await start_server(seed, db_path=db_path, directory=str(tmp_path))
    try:
        before = await api_view(Http(first.url))
    finally:
        await first.stop()
    rows = db_rows(db_path)
    assert before["things"]["total"] == 2
    assert before["data"]["total"] == 2
    assert len([r for r in rows["documents"] if r[2] == "users"]) == 1

    second = await start_server(seed, db_path=db_path, directory=str(tmp_path))
    try:
        after = await api_view(Http(second.url))
    finally:
        await second.stop()
    assert after == before
    assert db_rows(db_path) == rows


@pytest_twisted.ensureDeferred
async def test_resources_without_uuid_get_the_same_uuid(tmp_path: Path) -> None:
    """A seeded resource without a uuid gets the same one in every database."""
    seed, db_path = prepare(tmp_path)
    uuids = []
    for path in (db_path, str(tmp_path / "other.sqlite3")):
        running = await start_server(seed, db_path=path, directory=str(tmp_path))
        try:
            view = await api_view(Http(running.url))
        finally:
            await running.stop()
        uuids.append({doc["name"]: doc["uuid"] for doc in view["things"]["results"]})
    assert uuids[0] == uuids[1]
    assert uuids[0]["scanner"] == "t-2"
    assert uuids[0]["badge reader"]


@pytest_twisted.ensureDeferred
async def test_reseeding_keeps_changes_and_deletions(tmp_path: Path) -> None:
    """A restart keeps changes made through the API; seeded documents deleted stay deleted."""
    seed, db_path = prepare(tmp_path)
    first = await start_server(seed, db_path=db_path, directory=str(tmp_path))
    try:
        http = Http(first.url)
        token = str((await http.login(**USER))["token"])
        answer = await http.call("PATCH", "/api/devices/d-1", {"name": "renamed"}, token=token)
        assert answer.code == 200, answer
        answer = await http.call("PUT", "/api/data/cats/fluffy", {"age": 4}, token=token)
        assert answer.code == 200, answer
        answer = await http.call("DELETE", "/api/things/t-2", token=token)
        assert answer.code == 200, answer
    finally:
        await first.stop()

    second = await start_server(seed, db_path=db_path, directory=str(tmp_path))
    try:
        http = Http(second.url)
        token = str((await http.login(**USER))["token"])
        answer = await http.call("GET", "/api/devices/d-1", token=token)
        assert answer.json["name"] == "renamed"
        assert answer.json["secret"] == "d-secret"
        answer = await http.call("GET", "/api/data/cats/fluffy", token=token)
        assert answer.json["value"] == {"age": 4}
        answer = await http.call("GET", "/api/things/t-2", token=token)
        assert answer.code == 404, answer
    finally:
        await second.stop()


def database_files(db_path: str) -> dict[str, bytes]:
    return {
        name: open(name, "rb").read()
        for name in (db_path, db_path + "-wal", db_path + "-shm", db_path + "-journal")
        if os.path.exists(name)
    }


def assert_no_plain_password(db_path: str) -> None:
    files = database_files(db_path)
    assert db_path in files
    for name, data in files.items():
        assert PASSWORD.encode() not in data, name
        assert PASSWORD.encode("utf-16-le") not in data, name


@pytest_twisted.ensureDeferred
async def test_passwords_are_stored_hashed(tmp_path: Path) -> None:
    """The plain password of a seeded user is nowhere in the database files."""
    seed, db_path = prepare(tmp_path)
    running = await start_server(seed, db_path=db_path, directory=str(tmp_path))
    try:
        await Http(running.url).login(**USER)
        assert_no_plain_password(db_path)
    finally:
        await running.stop()
    assert_no_plain_password(db_path)
    db = sqlite3.connect(db_path)
    try:
        dump = "\n".join(db.iterdump())
        [(body,)] = db.execute(
            "SELECT body FROM documents WHERE collection = 'users'").fetchall()
    finally:
        db.close()
    assert PASSWORD not in dump
    user = json.loads(body)
    assert "password" not in user
    assert user["passwordHash"].startswith("scrypt$")
    assert user["role"] == "admin"


@pytest_twisted.ensureDeferred
async def test_database_is_created_owner_only(tmp_path: Path) -> None:
    """The database file (it holds the signing key) is created with mode 0o600."""
    seed, db_path = prepare(tmp_path)
    previous = os.umask(0)
    try:
        running = await start_server(seed, db_path=db_path, directory=str(tmp_path))
    finally:
        os.umask(previous)
    try:
        await Http(running.url).login(**USER)
        for name in database_files(db_path):
            assert stat.S_IMODE(os.stat(name).st_mode) == 0o600, name
    finally:
        await running.stop()
    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o600
