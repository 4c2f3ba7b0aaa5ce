"""
Durability (README "Durability"): what the server acknowledged survives a
restart, and a kill -9 in the middle of a stream of writes loses none of
the writes it had answered 200.
"""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest
import pytest_twisted

from exp.protocol import device_token
from exp.server.testing import DEMO, start_server

from ._processes import STARTUP_TIMEOUT, ServerProcess, Writer, request, wait_for_writes
from .conftest import Http

USER = {"username": DEMO["username"], "password": DEMO["password"],
        "organization": DEMO["organization"]}


@pytest_twisted.ensureDeferred
async def test_writes_and_tokens_survive_a_restart(tmp_path: Path) -> None:
    """Documents, data, layouts and logs written through the API, and tokens, outlive a restart."""
    db_path = str(tmp_path / "exp.sqlite3")
    first = await start_server(db_path=db_path, directory=str(tmp_path))
    try:
        http = Http(first.url)
        auth = await http.login(**USER)
        token = auth["token"]
        thing = await http.call("POST", "/api/things", {"name": "new thing", "n": [1, 2]},
                                token=token)
        device = await http.call("POST", "/api/devices", {"name": "new device"}, token=token)
        doomed = await http.call("POST", "/api/things", {"name": "doomed"}, token=token)
        assert thing.code == device.code == doomed.code == 200, (thing, device, doomed)
        answer = await http.call("PATCH", "/api/locations/demo-location", {"name": "moved"},
                                 token=token)
        assert answer.code == 200, answer
        answer = await http.call("DELETE", f"/api/things/{doomed.json['uuid']}", token=token)
        assert answer.code == 200, answer
        answer = await http.call("PUT", "/api/data/g%20one/k%2Fey", {"v": "\u00e9"},
                                 token=token)
        assert answer.code == 200, answer
        answer = await http.call("PUT", "/api/locations/demo-location/layout",
                                 raw=b"\x89PNG\r\n\x1a\nnew", token=token,
                                 headers={"Content-Type": "image/png"})
        assert answer.code == 200, answer
        answer = await http.call("POST", "/api/logs", [{"level": "info", "message": "hi"}],
                                 token=token)
        assert answer.code == 200, answer
        gone = await http.call("POST", "/api/devices", {"uuid": "gone", "secret": "gone-secret"},
                               token=token)
        assert gone.code == 200, gone
        gone_token = (await http.login(token=device_token("gone", "gone-secret")))["token"]
        answer = await http.call("DELETE", "/api/devices/gone", token=token)
        assert answer.code == 200, answer
    finally:
        await first.stop()

    second = await start_server(db_path=db_path, directory=str(tmp_path))
    try:
        http = Http(second.url)
        answer = await http.call("GET", f"/api/things/{thing.json['uuid']}", token=token)
        assert answer.code == 200, answer
        assert answer.json == thing.json
        answer = await http.call("GET", f"/api/things/{doomed.json['uuid']}", token=token)
        assert answer.code == 404, answer
        answer = await http.call("GET", "/api/locations/demo-location", token=token)
        assert answer.json["name"] == "moved"
        answer = await http.call("GET", "/api/data/g%20one/k%2Fey", token=token)
        assert answer.json == {"group": "g one", "key": "k/ey", "value": {"v": "\u00e9"}}
        answer = await http.call("GET", "/api/locations/demo-location/layout",
                                 params={"_rt": auth["restrictedToken"]})
        assert answer.code == 200, answer
        assert answer.body == b"\x89PNG\r\n\x1a\nnew"
        assert await second.server.storage.count_logs(DEMO["organization"]) == 1
        # A deleted device's tokens stay refused after the restart.
        answer = await http.call("GET", "/api/devices/gone", token=gone_token)
        assert answer.code == 401, answer
        refreshed = await http.call("POST", "/api/auth/token", token=token)
        assert refreshed.code == 200, refreshed
        assert refreshed.json["identity"] == auth["identity"]
        device_auth = await http.login(
            token=device_token(device.json["uuid"], device.json["secret"]))
        assert device_auth["identity"]["uuid"] == device.json["uuid"]
    finally:
        await second.stop()


@pytest_twisted.ensureDeferred
async def test_a_new_database_has_a_new_signing_key(tmp_path: Path) -> None:
    """A token of one database is not valid on a server with another database."""
    first = await start_server(db_path=str(tmp_path / "one.sqlite3"), directory=str(tmp_path))
    try:
        token = await Http(first.url).user_token()
    finally:
        await first.stop()
    second = await start_server(db_path=str(tmp_path / "two.sqlite3"), directory=str(tmp_path))
    try:
        answer = await Http(second.url).call("GET", "/api/devices", token=token)
        assert answer.code == 401, answer
    finally:
        await second.stop()


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    """After SIGKILL mid-stream, every write answered 200 is there and the db is intact."""
    db_path = tmp_path / "exp.sqlite3"
    first = ServerProcess(tmp_path, "--db", str(db_path), name="first")
    try:
        first.wait_until_answering()
        status, auth = request("POST", first.url + "/api/auth/login", USER)
        assert status == 200, auth
        token = auth["token"]
        writers = [Writer(first.url, token, "w0"), Writer(first.url, token, "w1"),
                   Writer(first.url, token, "things", things=True)]
        for writer in writers:
            writer.start()
        wait_for_writes(writers, 150)
        first.process.kill()
        first.process.wait(STARTUP_TIMEOUT)
        for writer in writers:
            writer.join(STARTUP_TIMEOUT)
            assert not writer.is_alive()
            assert isinstance(writer.error, OSError), writer.error
    finally:
        first.stop()
    assert first.process.returncode == -9

    second = ServerProcess(tmp_path, "--db", str(db_path), name="second")
    try:
        second.wait_until_answering()
        # The token issued before the crash is still good: the key is in the database.
        for writer in writers[:2]:
            status, found = request(
                "GET", f"{second.url}/api/data?group={writer.group}", token=token)
            assert status == 200, found
            stored = {item["key"]: item["value"] for item in found["results"]}
            assert writer.acknowledged, writer.group
            missing = set(writer.acknowledged) - set(stored)
            assert not missing, f"lost acknowledged writes: {sorted(missing)}"
            for key, value in writer.acknowledged.items():
                assert stored[key] == value
        status, found = request("GET", f"{second.url}/api/things", token=token)
        assert status == 200, found
        stored_things = {doc["uuid"]: doc for doc in found["results"]}
        assert writers[2].acknowledged
        for uuid, document in writers[2].acknowledged.items():
            assert stored_things.get(uuid) == document
        db = sqlite3.connect(db_path)
        try:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            db.close()
    finally:
        assert second.stop() in (0, -signal.SIGTERM), second.log()
    assert "Server Shut Down." in second.log()
