"""
Run a local EXP server inside a test, on a loopback port with a temporary
database, to test a device app or a script against it over real sockets::

    from exp.server.testing import start_server

    async def test_my_app():
        server = await start_server()           # the demo seed
        try:
            ...  # use server.url, server.demo credentials
        finally:
            await server.stop()

With pytest-twisted, decorate such tests with C{@pytest_twisted.ensureDeferred}.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import attrs
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort

from exp.server._seed import Organization, demo_seed_path, load_seed
from exp.server._server import ExpServer, ServerConfig
from exp.server._storage import SQLiteStorage

__all__ = ["DEMO", "RunningServer", "start_server"]

#: The credentials of the demo seed.
DEMO = {
    "organization": "scala",
    "username": "test@goexp.io",
    "password": "test-Password1",
    "device_uuid": "test-uuid",
    "device_secret": "test-secret",
    "consumer_uuid": "test-uuid",
    "api_key": "test-api-key",
}


@attrs.define
class RunningServer:
    """A server started by L{start_server}."""

    url: str
    server: ExpServer
    port: IListeningPort
    directory: str
    db_path: str
    _own_directory: bool

    async def stop(self) -> None:
        """Stop listening, close the storage and remove the temporary files."""
        await maybeDeferred(self.port.stopListening)
        await self.server.stop()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)


async def start_server(
    seed: str | dict[str, Any] | None = None,
    *,
    db_path: str | None = None,
    directory: str | None = None,
    reactor: Any = None,
    **config: Any,
) -> RunningServer:
    """
    Start a server on C{127.0.0.1} on a free port.

    @param seed: a seed file path, a seed as a dict (its content folders are
        relative to C{directory}), or C{None} for the demo seed.
    @param db_path: the database file; by default a new one in a temporary
        directory (give the same path again to test a restart).
    @param directory: where the database and a dict seed are written; a
        temporary directory removed by L{RunningServer.stop} by default.
    @param config: the fields of L{ServerConfig} (C{token_lifetime}, ...).
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    own = directory is None
    directory = directory or tempfile.mkdtemp(prefix="exp-server-")
    if isinstance(seed, dict):
        seed_path = os.path.join(directory, "seed.json")
        with open(seed_path, "w", encoding="utf-8") as f:
            json.dump(seed, f)
        organizations: list[Organization] = load_seed(seed_path)
    else:
        organizations = load_seed(seed or demo_seed_path())
    db_path = db_path or os.path.join(directory, "exp.sqlite3")
    server = ExpServer(SQLiteStorage(db_path, reactor), organizations,
                       ServerConfig(**config), reactor=reactor)
    await server.start()
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server.site())
    url = f"http://127.0.0.1:{port.getHost().port}"
    return RunningServer(url, server, port, directory, db_path, own)
