"""
Running C{twistd exp-server} as a child process, for the tests that need a
real process (kill -9, command-line errors).  Blocking on purpose: these
tests talk to another process, not to the reactor of the test run.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from exp.server.testing import TWISTD, free_port

#: Generous: the machine is shared and may be slow, but a hang must end.
STARTUP_TIMEOUT = 60.0


def request(method: str, url: str, body: Any = None, token: str | None = None,
            timeout: float = 30.0) -> tuple[int, Any]:
    """One JSON HTTP call: the status and the decoded body (or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None


class ServerProcess:
    """C{twistd -n exp-server} on a port of its own, logging to a file."""

    def __init__(self, directory: Path, *args: str, name: str = "server",
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.args = args
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / f"{name}.log"
        self._log = open(self.log_path, "ab")  # closed in stop()
        self.process = subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=", "exp-server",
             "--listen", f"tcp:{self.port}:interface=127.0.0.1", *args],
            cwd=directory, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_answering(self) -> None:
        """Poll until the server answers HTTP; fail if it exits or never does."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited ({self.process.returncode}):\n"
                                     + self.log())
            try:
                status, _ = request("GET", self.url + "/api/devices", timeout=5)
            except OSError:
                time.sleep(0.05)
                continue
            assert status == 401, status
            return
        raise AssertionError("the server did not answer in time:\n" + self.log())

    def stop(self) -> int:
        """Stop the process (SIGTERM, then SIGKILL if it lingers); its exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STARTUP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STARTUP_TIMEOUT)
        self._log.close()
        return self.process.returncode


class Writer(threading.Thread):
    """PUTs a stream of data items (or POSTs things) until the server goes away."""

    def __init__(self, url: str, token: str, group: str, things: bool = False) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.group, self.things = url, token, group, things
        self.acknowledged: dict[str, Any] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(1_000_000):
                key, value = f"k{i}", {"i": i, "group": self.group, "pad": "x" * (i % 300)}
                if self.things:
                    status, body = request("POST", self.url + "/api/things",
                                           dict(value, name=key), self.token)
                    if status == 200:
                        self.acknowledged[body["uuid"]] = body
                else:
                    status, body = request("PUT", f"{self.url}/api/data/{self.group}/{key}",
                                           value, self.token)
                    if status == 200:
                        self.acknowledged[key] = value
                if status != 200:
                    raise AssertionError(f"write answered {status}: {body}")
        except BaseException as e:
            self.error = e


def wait_for_writes(writers: list[Writer], count: int) -> None:
    """Block until the writers have C{count} acknowledged writes between them."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while sum(len(w.acknowledged) for w in writers) < count:
        assert time.monotonic() < deadline, "the writes did not get going"
        assert all(w.is_alive() for w in writers), [w.error for w in writers]
        time.sleep(0.01)
