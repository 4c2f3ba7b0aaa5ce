"""
Run a local EXP server for tests and examples, on a loopback port with a
temporary database.

In a Twisted program or a pytest-twisted test, L{start_server} runs it in
the same process and reactor::

    from exp.server.testing import start_server

    async def test_my_app():
        server = await start_server()           # the demo seed
        try:
            ...  # use server.url, server.demo credentials
        finally:
            await server.stop()

With pytest-twisted, decorate such tests with C{@pytest_twisted.ensureDeferred}.

A blocking script (C{exp.start}) runs it as a child process instead::

    from exp.server.testing import ServerProcess

    with ServerProcess() as server:
        exp.start(host=server.url, uuid="test-uuid", secret="test-secret")
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from types import TracebackType
from typing import Any

import attrs
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort

from exp.server._config import ServerConfig
from exp.server._seed import Organization, demo_seed_path, load_seed
from exp.server._server import ExpServer, make_hub, make_storage

__all__ = ["DEMO", "TEST_PASSWORD_COST", "RunningServer", "ServerProcess", "start_server"]

#: The scrypt cost (log2 of N) of passwords on the servers started here,
#: unless given: low, for fast tests, as web frameworks' test settings do.
#: A server run for real uses C{exp.server._auth.PASSWORD_COST}.
TEST_PASSWORD_COST = 12

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
    """
    A server started by L{start_server}.

    @ivar url: its URL, C{http://127.0.0.1:<port>}.
    @ivar server: the server itself, to reach its parts (storage, hub ...).
    @ivar port: the port it listens on.
    @ivar directory: the folder of its database.
    @ivar db_path: its database (a file, or a C{postgresql://} URL).
    """

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
    redis: str | None = None,
    directory: str | None = None,
    reactor: Any = None,
    port: int = 0,
    **config: Any,
) -> RunningServer:
    """
    Start a server on C{127.0.0.1} on a free port (or on C{port}).

    @param seed: a seed file path, a seed as a dict (its content folders are
        relative to C{directory}), or C{None} for the demo seed.
    @param db_path: the database file, or a C{postgresql://} URL; by
        default a new file in a temporary directory (give the same path
        again to test a restart).
    @param redis: a C{redis://} URL: the hub then spans the processes
        started with the same database and Redis.
    @param directory: where the database and a dict seed are written; a
        temporary directory removed by L{RunningServer.stop} by default.
    @param port: the port to listen on; 0 (the default) picks a free one.
        Give the port of a stopped server, with its C{db_path}, to test how
        clients live through a restart.
    @param config: the fields of L{ServerConfig} (C{token_lifetime}, ...);
        C{password_cost} is L{TEST_PASSWORD_COST} unless given.
    """
    config.setdefault("password_cost", TEST_PASSWORD_COST)
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
    server = ExpServer(make_storage(db_path, reactor), organizations,
                       ServerConfig(**config), reactor=reactor, hub=make_hub(redis, reactor))
    await server.start()
    listening = await TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(
        server.factory())
    url = f"http://127.0.0.1:{listening.getHost().port}"
    return RunningServer(url, server, listening, directory, db_path, own)


#: C{twistd}, run by this interpreter (what the C{twistd} script does).
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """
    C{twistd -n exp-server} as a child process on a free loopback port, with
    its database and log in C{directory} (a temporary one by default).  Use
    it as a context manager, or call L{start} and L{stop}.

    @param args: more C{exp-server} options, e.g. C{"--seed", path};
        C{--password-cost} is L{TEST_PASSWORD_COST} unless given.
    @param startup_timeout: seconds L{start} waits for the server to answer.
    @ivar directory: the folder of its database and log.
    @ivar args: its C{exp-server} options.
    @ivar port: the loopback port it listens on.
    @ivar url: its URL, C{http://127.0.0.1:<port>}.
    @ivar log_path: its log file.
    @ivar startup_timeout: seconds L{start} waits for the server to answer.
    @ivar process: the child process, once started.
    """

    def __init__(self, *args: str, directory: str | None = None,
                 startup_timeout: float = 60.0) -> None:
        self._own = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="exp-server-")
        if "--password-cost" not in args:
            args = ("--password-cost", str(TEST_PASSWORD_COST), *args)
        self.args = args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.directory, "exp-server.log")
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        """Start the server and wait until it answers HTTP."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*TWISTD, "-n", "--pidfile=", "exp-server",
                 "--listen", f"tcp:{self.port}:interface=127.0.0.1", *self.args],
                cwd=self.directory, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise OSError(f"exp-server exited ({self.process.returncode}):\n" + self.log())
            try:
                urllib.request.urlopen(self.url + "/api/devices", timeout=5)
            except urllib.error.HTTPError:
                return self  # it answers (401 without a token)
            except OSError:
                time.sleep(0.05)
                continue
            return self
        self.stop()
        raise OSError("exp-server did not answer in time:\n" + self.log())

    def log(self) -> str:
        """What the server has written to its log so far."""
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> int | None:
        """Stop the server (SIGTERM, then SIGKILL if it lingers); its exit code."""
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(self.startup_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(self.startup_timeout)
        if self._own:
            shutil.rmtree(self.directory, ignore_errors=True)
        return None if process is None else process.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
