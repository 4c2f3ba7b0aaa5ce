"""
Which devices are online (C{GET /api/devices/{uuid}/status} and the
C{status} broadcasts on a device's system channel), in one process and
across the processes of one server, also when one of them is killed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from exp.protocol import consumer_app_token
from exp.server.testing import RunningServer, start_server
from exp.twisted import ExpService

from ._processes import STARTUP_TIMEOUT, ServerProcess
from ._sdk import CONSUMER, DEVICE, USER, sleep, start, within
from ._services import Engines
from .conftest import Http


async def status(http: Http, token: str, uuid: str = "test-uuid") -> Any:
    answer = await http.call("GET", f"/api/devices/{uuid}/status", token=token)
    assert answer.code == 200, answer
    return answer.json


async def until_status(http: Http, token: str, online: bool, uuid: str = "test-uuid") -> None:
    """Poll the status until it is C{online} (the write follows the session's start)."""
    seen: list[Any] = []

    async def poll() -> None:
        seen.append(await status(http, token, uuid))

    await poll()
    while seen[-1]["online"] is not online:
        assert len(seen) < 300, seen[-1]
        await sleep(0.05)
        await poll()


@pytest_twisted.ensureDeferred
async def test_a_device_is_online_while_it_has_a_session(server: RunningServer, http: Http,
                                                         token: str) -> None:
    """Offline, online while its SDK is connected (announced), offline when it stops."""
    services: list[ExpService] = []
    try:
        assert await status(http, token) == {"uuid": "test-uuid", "online": False}
        user = start(services, server.url, **USER)
        listener = await within(user.get_channel("test-uuid", system=True).listen("status"))
        device = start(services, server.url, **DEVICE)
        await within(device.whenConnected())
        announced = await within(listener.wait(10))
        assert announced.payload == {"uuid": "test-uuid", "online": True}
        assert await status(http, token) == {"uuid": "test-uuid", "online": True}

        # A second session of the same device changes nothing; its end neither.
        second = start(services, server.url, **DEVICE)
        await within(second.whenConnected())
        await within(second.stopService())
        assert (await status(http, token))["online"] is True

        await within(device.stopService())
        announced = await within(listener.wait(10))
        assert announced.payload == {"uuid": "test-uuid", "online": False}
        assert await status(http, token) == {"uuid": "test-uuid", "online": False}
        assert await within(listener.wait(0.3)) is None
    finally:
        for service in services:
            await service.stopService()


@pytest_twisted.ensureDeferred
async def test_status_is_read_like_the_device(server: RunningServer, http: Http) -> None:
    """Consumer apps may read it; an unknown device is 404; a token is needed."""
    app = await http.login(token=_consumer_token())
    assert (await status(http, app["token"]))["online"] is False
    answer = await http.call("GET", "/api/devices/nobody/status", token=app["token"])
    assert (answer.code, answer.json["code"]) == (404, "resource.notFound")
    answer = await http.call("GET", "/api/devices/test-uuid/status")
    assert answer.code == 401


def _consumer_token() -> str:
    return consumer_app_token(CONSUMER["uuid"], CONSUMER["api_key"])


@pytest_twisted.ensureDeferred
async def test_deleting_a_connected_device_makes_it_offline(server: RunningServer, http: Http,
                                                            token: str) -> None:
    """Its sessions end with its credentials, and so does its presence."""
    services: list[ExpService] = []
    try:
        created = await http.call("POST", "/api/devices",
                                  {"uuid": "short-lived", "secret": "short-lived-secret"},
                                  token=token)
        assert created.code == 200
        device = start(services, server.url, uuid="short-lived", secret="short-lived-secret")
        await within(device.whenConnected())
        await within(until_status(http, token, True, "short-lived"))
        user = start(services, server.url, **USER)
        listener = await within(user.get_channel("short-lived", system=True).listen("status"))
        assert (await http.call("DELETE", "/api/devices/short-lived", token=token)).code == 200
        announced = await within(listener.wait(10))
        assert announced.payload == {"uuid": "short-lived", "online": False}
    finally:
        for service in services:
            await service.stopService()


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_status_holds_across_processes(engines: Engines) -> None:
    """A device on one process is online on the other; offline there when its process stops."""
    db, redis = engines.postgresql().database(), engines.redis().url
    servers = [await start_server(db_path=db, redis=redis) for _ in range(2)]
    services: list[ExpService] = []
    try:
        http = Http(servers[1].url)
        token = await http.user_token()
        user = start(services, servers[1].url, **USER)
        listener = await within(user.get_channel("test-uuid", system=True).listen("status"))
        device = start(services, servers[0].url, request_timeout=5, **DEVICE)
        await within(device.whenConnected())
        assert (await within(listener.wait(10))).payload["online"] is True
        assert (await status(http, token))["online"] is True

        await within(servers[0].stop())
        servers = servers[1:]
        assert (await within(listener.wait(10))).payload["online"] is False
        assert (await status(http, token))["online"] is False
    finally:
        for service in services:
            await service.stopService()
        for server in servers:
            await server.stop()


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_killed_process_devices_go_offline_after_its_lease(
        tmp_path: Path, engines: Engines) -> None:
    """SIGKILL leaves no one to say so: the other process does, once the lease ran out."""
    args = ("--db", engines.postgresql().database(), "--redis", engines.redis().url,
            "--no-access-log", "--presence-lease", "1.5")
    processes = [ServerProcess(tmp_path, *args, name=f"p{i}") for i in range(2)]
    services: list[ExpService] = []
    try:
        for process in processes:
            await deferToThread(process.wait_until_answering)
        http = Http(processes[1].url)
        token = await http.user_token()
        user = start(services, processes[1].url, **USER)
        listener = await within(user.get_channel("test-uuid", system=True).listen("status"))
        device = start(services, processes[0].url, request_timeout=5, **DEVICE)
        await within(device.whenConnected())
        assert (await within(listener.wait(10))).payload["online"] is True

        processes[0].process.kill()
        await deferToThread(processes[0].process.wait, STARTUP_TIMEOUT)
        assert (await within(listener.wait(30), 40)).payload["online"] is False
        assert (await status(http, token))["online"] is False
    finally:
        for service in services:
            await service.stopService()
        for process in processes:
            process.stop()
