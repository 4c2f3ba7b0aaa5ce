"""
Three C{twistd exp-server} processes on one PostgreSQL and one Redis: they
seed once, accept each other's tokens, carry broadcasts, responses and
system notifications between their clients, and a process killed with
SIGKILL loses no acknowledged write while the others keep serving.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from exp.errors import ApiError
from exp.protocol import device_token
from exp.server import demo_seed_path, load_seed
from exp.server.testing import start_server
from exp.twisted import ExpService

from ._processes import STARTUP_TIMEOUT, ServerProcess, Writer, request, wait_for_writes
from ._sdk import CONSUMER, DEVICE, USER, eventually, sleep, start, within
from ._services import Engines, Redis
from .conftest import Http

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path, engines: Engines) -> Iterator[list[ServerProcess]]:
    """Three processes started together on a new database."""
    args = ("--db", engines.postgresql().database(), "--redis", engines.redis().url,
            "--no-access-log")
    processes = [ServerProcess(tmp_path, *args, name=f"p{i}") for i in range(3)]
    try:
        for process in processes:
            process.wait_until_answering()
        yield processes
    finally:
        for process in processes:
            process.stop()


def login(url: str, **body: Any) -> str:
    status, auth = request("POST", url + "/api/auth/login", body)
    assert status == 200, auth
    return str(auth["token"])


def test_seed_signing_key_and_deleted_devices_are_shared(
        tmp_path: Path, cluster: list[ServerProcess]) -> None:
    """Seeded once by three processes; a token of one is good on all, until its device goes."""
    p0, p1, p2 = cluster
    token = login(p0.url, **USER)
    seeded = load_seed(demo_seed_path())[0]
    for process in cluster:
        status, found = request("GET", process.url + "/api/devices", token=token)
        assert status == 200, found
        assert found["total"] == len(seeded.devices)
        status, found = request("GET", process.url + "/api/data", token=token)
        assert found["total"] == len(seeded.data)

    status, device = request("POST", p1.url + "/api/devices",
                             {"uuid": "cluster-device", "secret": "s3cret-s3cret"}, token)
    assert status == 200, device
    device = login(p2.url, token=device_token("cluster-device", "s3cret-s3cret"))
    for process in cluster:
        status, _ = request("GET", process.url + "/api/devices/cluster-device", token=device)
        assert status == 200
    status, _ = request("DELETE", p0.url + "/api/devices/cluster-device", token=token)
    assert status == 200
    # The other processes hear of it through Redis, within milliseconds.
    deadline = time.monotonic() + 10
    for process in cluster:
        while (answer := request("GET", process.url + "/api/devices/cluster-device",
                                 token=device))[0] != 401:
            assert time.monotonic() < deadline, answer
            time.sleep(0.01)
    # Created again under its uuid with the same secret: its new tokens work everywhere,
    # its old ones nowhere.
    status, _ = request("POST", p2.url + "/api/devices",
                        {"uuid": "cluster-device", "secret": "s3cret-s3cret"}, token)
    assert status == 200
    again = login(p1.url, token=device_token("cluster-device", "s3cret-s3cret"))
    for process in cluster:
        assert request("GET", process.url + "/api/devices", token=again)[0] == 200
        assert request("GET", process.url + "/api/devices", token=device)[0] == 401
    # A process started later knows it from the database.
    late = ServerProcess(tmp_path, *p0.args, name="late")
    try:
        late.wait_until_answering()
        status, _ = request("GET", late.url + "/api/devices/cluster-device", token=device)
        assert status == 401
        assert request("GET", late.url + "/api/devices", token=again)[0] == 200
    finally:
        late.stop()


@pytest_twisted.ensureDeferred
async def test_clients_of_different_processes_talk_and_survive_a_kill(
        tmp_path: Path, cluster: list[ServerProcess]) -> None:
    """Broadcasts, responses and notifications cross processes; a killed one comes back."""
    p0, p1, p2 = cluster
    services: list[ExpService] = []
    try:
        device = start(services, p0.url, request_timeout=5, **DEVICE)
        app = start(services, p2.url, request_timeout=5, **CONSUMER)
        user = start(services, p1.url, request_timeout=5, **USER)
        for service in services:
            await within(service.whenConnected())

        # A consumer channel, so that the consumer app may listen too.
        pings = user.get_channel("cluster", consumer=True)
        await within(device.get_channel("cluster", consumer=True).listen(
            "ping", callback=lambda b: b.respond({"from": "p0", "echo": b.payload})))
        await within(app.get_channel("cluster", consumer=True).listen(
            "ping", callback=lambda b: b.respond({"from": "p2", "echo": b.payload})))
        responses = await within(pings.broadcast("ping", 1, timeout=2))
        assert sorted(r["from"] for r in responses) == ["p0", "p2"]
        assert all(r["echo"] == 1 for r in responses)

        # A system notification of a write on p1 reaches listeners on p0 and p2.
        created = await within(device.get_channel("cluster-thing", system=True).listen("create"))
        watcher = start(services, p2.url, request_timeout=5, **USER)
        also = await within(watcher.get_channel("cluster-thing", system=True).listen("create"))
        await within(user.create_thing({"uuid": "cluster-thing", "name": "announced"}))
        for listener in (created, also):
            assert (await within(listener.wait(10))).payload["name"] == "announced"

        # Writers stream to p0; it is killed mid-stream.
        token = login(p1.url, **USER)
        writers = [Writer(p0.url, token, "w0"), Writer(p0.url, token, "things", things=True)]
        for writer in writers:
            writer.start()
        await deferToThread(wait_for_writes, writers, 100)
        offline: list[None] = []
        device.on("offline", lambda: offline.append(None))
        p0.process.kill()
        p0.process.wait(STARTUP_TIMEOUT)
        for writer in writers:
            await deferToThread(writer.join, STARTUP_TIMEOUT)
            assert isinstance(writer.error, OSError), writer.error
        await eventually(lambda: bool(offline), "the device noticed p0 is gone")

        # The others keep serving, with every acknowledged write.
        responses = await within(pings.broadcast("ping", 2, timeout=1))
        assert [r["from"] for r in responses] == ["p2"]
        status, found = request("GET", p2.url + "/api/data?group=w0", token=token)
        stored = {item["key"]: item["value"] for item in found["results"]}
        assert writers[0].acknowledged.items() <= stored.items()
        for uuid, thing in writers[1].acknowledged.items():
            status, got = request("GET", f"{p2.url}/api/things/{uuid}", token=token)
            assert (status, got) == (200, thing)

        # p0 returns on its port; its device reconnects and answers again.
        online: list[None] = []
        device.on("online", lambda: online.append(None))
        restarted = ServerProcess(tmp_path, *p0.args, name="p0", port=p0.port)
        cluster[0] = restarted
        await deferToThread(restarted.wait_until_answering)
        await eventually(lambda: bool(online), "the device reconnected to p0", 30)

        async def both_answer() -> list[str]:
            got = await within(pings.broadcast("ping", 3, timeout=1))
            return sorted(r["from"] for r in got)

        deadline = time.monotonic() + 30
        while (answered := await both_answer()) != ["p0", "p2"]:
            assert time.monotonic() < deadline, answered
    finally:
        for service in services:
            await service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_redis_outage_is_503_then_heals(engines: Engines) -> None:
    """Without Redis a broadcast is 503; when Redis returns, processes hear each other again."""
    redis = Redis().start()
    db = engines.postgresql().database()
    servers = [await start_server(db_path=db, redis=redis.url) for _ in range(2)]
    services: list[ExpService] = []
    try:
        user = start(services, servers[0].url, request_timeout=5, **USER)
        device = start(services, servers[1].url, request_timeout=5, **DEVICE)
        listener = await within(device.get_channel("outage").listen("hi"))
        channel = user.get_channel("outage")
        await within(channel.broadcast("hi", "before"))
        assert (await within(listener.wait(10))).payload == "before"

        redis.stop()
        http = Http(servers[0].url)
        token = await http.user_token()
        answer = await http.call("POST", "/api/networks/current/broadcasts",
                                 {"channel": channel.id, "name": "hi", "payload": "lost"},
                                 token=token)
        assert (answer.code, answer.json["code"]) == (503, "server.unavailable"), answer

        redis = Redis(port=redis.port).start()
        deadline = time.monotonic() + 30
        while True:
            try:
                await within(channel.broadcast("hi", "after"))
            except ApiError as e:  # until the server's Redis client has reconnected
                assert e.status_code == 503, e
                broadcast = None
            else:
                broadcast = await within(listener.wait(0.5))
            if broadcast is not None:
                break
            assert time.monotonic() < deadline, "the processes never heard each other again"
            await sleep(0.1)
        assert broadcast.payload == "after"
    finally:
        for service in services:
            await service.stopService()
        for server in servers:
            await server.stop()
        redis.stop()


@pytest_twisted.ensureDeferred
async def test_responses_from_other_processes_count_against_the_caps(engines: Engines) -> None:
    """Responses that reach a broadcast through Redis are capped as local ones are:
    of three responders on the other process, max_responses=2 keeps two."""
    db = engines.postgresql().database()
    servers = [await start_server(db_path=db, redis=engines.redis().url, max_responses=2)
               for _ in range(2)]
    services: list[ExpService] = []
    try:
        responders = [start(services, servers[1].url, request_timeout=5, **who)
                      for who in (DEVICE, CONSUMER, USER)]
        asker = start(services, servers[0].url, request_timeout=5, **USER)
        for service in services:
            await within(service.whenConnected())
        for n, responder in enumerate(responders):
            await within(responder.get_channel("capped", consumer=True).listen(
                "ask", callback=lambda b, n=n: b.respond(n)))
        responses = await within(
            asker.get_channel("capped", consumer=True).broadcast("ask", timeout=5))
        assert len(responses) == 2 and set(responses) <= {0, 1, 2}, responses
    finally:
        for service in services:
            await service.stopService()
        for server in servers:
            await server.stop()
