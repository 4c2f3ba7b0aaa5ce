"""
Private PostgreSQL and Redis servers for the tests and benchmarks: started
from the Debian packages' binaries on loopback ports, in temporary
directories, and removed at the end.  C{EXP_TEST_POSTGRESQL} and
C{EXP_TEST_REDIS} name existing servers to use instead.

The PostgreSQL instance runs with C{fsync=off}: the tests kill EXP server
processes, never PostgreSQL, so what it acknowledged is still in the page
cache; durability of PostgreSQL itself is not what is tested.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Any

from exp.server.testing import free_port

STARTUP_TIMEOUT = 60.0


class ServiceMissing(RuntimeError):
    """The binaries of a server the tests need are not installed."""


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: run it as the package's user."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


def _postgresql_bin() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    if initdb is None:
        raise ServiceMissing(
            "PostgreSQL's server binaries are not installed: "
            "apt-get install postgresql (see README, Testing)")
    return os.path.dirname(initdb)


def _wait_for_port(port: int, process: subprocess.Popen[Any], what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {STARTUP_TIMEOUT:.0f} s")


class PostgreSQL:
    """One PostgreSQL server; L{database} makes an empty database on it."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[Any] | None = None
        self._directory: str | None = None
        self.url = os.environ.get("EXP_TEST_POSTGRESQL", "")

    def start(self) -> PostgreSQL:
        if self.url:
            return self
        bindir = _postgresql_bin()
        self._directory = tempfile.mkdtemp(prefix="exp-postgresql-")
        os.chmod(self._directory, 0o755)
        data = os.path.join(self._directory, "data")
        run_as = _as_postgres_user()
        if run_as:
            shutil.chown(self._directory, "postgres")
        subprocess.run(
            [*run_as, os.path.join(bindir, "initdb"), "-D", data, "-U", "exp", "-A", "trust",
             "-E", "UTF8", "--no-locale", "--no-sync"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port = free_port()
        self._process = subprocess.Popen(
            [*run_as, os.path.join(bindir, "postgres"), "-D", data, "-p", str(port),
             "-h", "127.0.0.1", "-k", self._directory, "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=300"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port(port, self._process, "postgres")
        self.url = f"postgresql://exp@127.0.0.1:{port}/postgres"
        # The port answers before the server accepts sessions.
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                self._admin("SELECT 1")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        return self

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute(sql)  # type: ignore[arg-type]

    def database(self) -> str:
        """The URL of a new, empty database."""
        name = f"exp_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        base, _, _ = self.url.rpartition("/")
        return f"{base}/{name}"

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


class Redis:
    """One Redis server, without persistence (on C{port}, or a free one)."""

    def __init__(self, port: int | None = None) -> None:
        self._process: subprocess.Popen[Any] | None = None
        self.url = "" if port else os.environ.get("EXP_TEST_REDIS", "")
        self.port = port

    def start(self) -> Redis:
        if self.url:
            return self
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceMissing(
                "redis-server is not installed: apt-get install redis-server "
                "(see README, Testing)")
        port = self.port = self.port or free_port()
        self._process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port(port, self._process, "redis-server")
        self.url = f"redis://127.0.0.1:{port}/0"
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(30)
            self._process = None


class Engines:
    """The PostgreSQL and Redis of a test session, each started on first use."""

    def __init__(self) -> None:
        self._postgresql: PostgreSQL | None = None
        self._redis: Redis | None = None

    def postgresql(self) -> PostgreSQL:
        if self._postgresql is None:
            self._postgresql = PostgreSQL().start()
        return self._postgresql

    def redis(self) -> Redis:
        if self._redis is None:
            self._redis = Redis().start()
        return self._redis

    def stop(self) -> None:
        for service in (self._postgresql, self._redis):
            if service is not None:
                service.stop()
