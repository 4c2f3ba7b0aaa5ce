"""
Shipping a device's log to EXP: the C{twisted.logger} observer of
L{ExpService.log_observer} sends batches to C{POST /api/logs}, never
blocks or fails the program, keeps a bounded queue while the server is
away, and sends what is left when it stops.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor, task
from twisted.logger import Logger, LogLevel

from exp.server.testing import ServerProcess, start_server
from exp.twisted import ExpService

from ._sdk import DEVICE, eventually, within


@pytest_twisted.ensureDeferred
async def test_log_events_reach_the_server_in_batches() -> None:
    """Events at or above the level are stored by the server, below it are not."""
    server = await start_server()
    service = ExpService(host=server.url, enable_network=False, **DEVICE)
    service.startService()
    shipper = service.log_observer(level=LogLevel.info, interval=0.05, batch_size=2)
    log = Logger(namespace="device.app", observer=shipper)
    try:
        await within(service.whenAuthenticated())
        for i in range(5):
            log.info("reading {i}", i=i)
        log.debug("not shipped")
        counts = []

        async def count() -> int:
            counts.append(await server.server.storage.count_logs("scala"))
            return counts[-1]

        while await count() < 5 and len(counts) < 500:
            await task.deferLater(reactor, 0.02, lambda: None)
        await task.deferLater(reactor, 0.2, lambda: None)
        assert await count() == 5
    finally:
        await service.stopService()
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_server_away_never_fails_the_program_and_the_queue_is_bounded() -> None:
    """With the server gone, logging goes on; the queue keeps its newest entries only."""
    server = await start_server()
    service = ExpService(host=server.url, enable_network=False, request_timeout=1,
                         **DEVICE)
    service.startService()
    shipper = service.log_observer(interval=0.05, batch_size=10, max_queued=20)
    try:
        await within(service.whenAuthenticated())
        await server.stop()
        for i in range(50):
            shipper.add("info", f"line {i}", reactor.seconds())
        await eventually(lambda: not shipper._sending and shipper.queued <= 20,
                         "the failed batch is requeued")
        assert shipper.queued <= 20
        assert shipper.dropped >= 30
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_stopping_sends_what_is_left() -> None:
    """stopService() ships the queued entries before it closes the connections."""
    server = await start_server()
    service = ExpService(host=server.url, enable_network=False, **DEVICE)
    service.startService()
    shipper = service.log_observer(interval=3600)
    try:
        await within(service.whenAuthenticated())
        shipper.add("warn", "last words", reactor.seconds())
        await service.stopService()
        assert await server.server.storage.count_logs("scala") == 1
    finally:
        await server.stop()


BLOCKING_SCRIPT = """
import logging, sys, json, urllib.request
import exp
instance = exp.start(host=sys.argv[1], uuid="test-uuid", secret="test-secret")
logger = logging.getLogger("kiosk")
logger.setLevel(logging.INFO)
logger.addHandler(instance.log_handler())
logger.info("door %s opened", 3)
logger.debug("not shipped")
exp.stop()
print("stopped")
"""


def test_the_blocking_face_ships_stdlib_logging(tmp_path: Path) -> None:
    """instance.log_handler() ships stdlib logging records; stop() sends what is left."""
    script = tmp_path / "ship.py"
    script.write_text(BLOCKING_SCRIPT)
    with ServerProcess(directory=str(tmp_path)) as server:
        result = subprocess.run([sys.executable, str(script), server.url], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        db = sqlite3.connect(os.path.join(str(tmp_path), "exp.sqlite3"))
        entries = [json.loads(row[0]) for row in db.execute("SELECT entry FROM logs")]
        db.close()
    assert [(e["level"], e["message"], e["logger"]) for e in entries] == [
        ("info", "door 3 opened", "kiosk")]
