"""
The programs in C{examples/}, each run as its documented command in a child
process against a local server, checked by what they did: the broadcasts
answered, the data written, the page served, the device paired.  The test's
own calls are plain HTTP.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest

from exp.protocol import device_token, encode_channel
from exp.server.testing import DEMO, ServerProcess

from ._processes import TWISTD, free_port, request

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
DEMO_CONTENT = REPO / "exp" / "server" / "demo" / "content"
#: Generous, so that only a hang fails on time.
TIMEOUT = 120.0
#: The C{twistd} console script, as the examples' docstrings run it.
TWISTD_SCRIPT = (
    [str(Path(sys.executable).with_name("twistd"))]
    if Path(sys.executable).with_name("twistd").exists() else TWISTD
)

T = TypeVar("T")


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """A C{twistd exp-server} child process with the demo seed."""
    with ServerProcess() as server:
        yield server.url


def environment(**extra: str) -> dict[str, str]:
    """This environment without C{EXP_*} variables, plus C{extra}."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXP_")}
    return dict(env, PYTHONUNBUFFERED="1", **extra)


def run(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> str:
    """Run C{python examples/...}; its output, once it exited 0."""
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env or environment(),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=TIMEOUT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output, output
    return result.stdout


class Program:
    """A long-running example in a child process, its output in a file."""

    def __init__(self, args: list[str], log: Path, cwd: Path = REPO,
                 env: dict[str, str] | None = None) -> None:
        self.log_path = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                args, cwd=cwd, env=env or environment(), stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def until(self, what: str, check: Callable[[], T | None]) -> T:
        """Poll C{check} until it returns something; fail if the program exits first."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"exited while waiting for {what}:\n{self.log()}"
            value = check()
            if value is not None:
                return value
            time.sleep(0.1)
        raise AssertionError(f"no {what} within {TIMEOUT} s:\n{self.log()}")

    def terminate(self) -> None:
        """
        SIGTERM: the program must stop by itself, cleanly: status 0, or (for
        twistd, which ends by re-sending itself the signal once shut down)
        killed by SIGTERM after logging its clean shutdown.
        """
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(TIMEOUT)
            raise AssertionError("did not stop on SIGTERM:\n" + self.log()) from None
        assert code == 0 or (code == -signal.SIGTERM and "Server Shut Down." in self.log()), (
            code, self.log())
        assert "Traceback" not in self.log() and "Unhandled" not in self.log(), self.log()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)


def user_token(url: str) -> str:
    status, auth = request("POST", url + "/api/auth/login", {
        "username": DEMO["username"], "password": DEMO["password"],
        "organization": DEMO["organization"]})
    assert status == 200, auth
    return str(auth["token"])


def broadcast(url: str, token: str, channel: str, name: str, payload: Any = None,
              timeout_ms: int = 0, consumer: bool = False) -> list[Any]:
    """A broadcast over REST; the responses collected in C{timeout_ms}."""
    body = {"channel": encode_channel(DEMO["organization"], channel, consumer=consumer),
            "name": name, "payload": payload}
    status, responses = request(
        "POST", f"{url}/api/networks/current/broadcasts?timeout={timeout_ms}", body, token)
    assert status == 200, responses
    return list(responses)


def get(url: str, path: str, token: str) -> Any:
    """A GET's decoded JSON body, or C{None} on 404."""
    status, body = request("GET", url + path, token=token)
    assert status in (200, 404), (status, body)
    return body if status == 200 else None


def fetch(address: str) -> bytes:
    with urllib.request.urlopen(address, timeout=TIMEOUT) as response:
        return bytes(response.read())


# -- walkthrough.py ------------------------------------------------------------


def test_walkthrough_against_a_server(url: str) -> None:
    """The blocking walkthrough does every documented step against a given server."""
    output = run("examples/walkthrough.py", url)
    lines = output.splitlines()
    assert "broadcast my_event 'hello' got responses: ['Nice to meet you!', 'hello back']" \
        in lines, output
    assert "received my_event 'hello'; responding" in lines
    assert "listener cancelled; listener.wait(1) -> None" in lines
    assert "find_devices(name='lobby'): ['lobby'] (total 1)" in lines
    assert "saved; field is 123" in lines
    assert "deleted; get_device -> None" in lines
    assert "get_data('fluffy', 'cats').value: {'age': 3}" in lines
    assert "saved; value is {'name': 'whiskers', 'age': 2}" in lines
    assert "deleted; get_data('4', 'cats') -> None" in lines
    assert "homepage url: https://www.goexp.io/" in lines
    assert lines[-2:] == ["exp.stop()", "done"], output
    # the delivery URLs it printed deliver the demo content
    urls = dict(line.split(" url: ", 1) for line in lines if " url: " in line)
    assert fetch(urls["logo.png"]) == (DEMO_CONTENT / "images" / "logo.png").read_bytes()
    assert fetch(urls["logo.png small"]) == (
        DEMO_CONTENT / "images" / "logo.small.png").read_bytes()
    # and it cleaned up after itself
    token = user_token(url)
    found = get(url, "/api/devices?" + "name=" + quote("walkthrough device"), token)
    assert found["total"] == 0, found
    assert get(url, "/api/data/cats/4", token) is None


def test_walkthrough_starts_its_own_server() -> None:
    """Without a host the walkthrough runs its own local server process, and ends."""
    output = run("examples/walkthrough.py")
    assert output.startswith("started a local EXP server on http://127.0.0.1:"), output
    assert "broadcast my_event 'hello' got responses: ['Nice to meet you!', 'hello back']" \
        in output
    assert output.splitlines()[-1] == "done"
    assert re.search(r"^web console: http://127\.0\.0\.1:\d+/console/ \(sign in as "
                     r"test@goexp\.io, password test-Password1, organization scala\)$",
                     output, re.M), output


def test_demo_keep_leaves_the_server_up_until_ctrl_c() -> None:
    """DEMO_KEEP=1 (make demo DEMO_KEEP=1): after the walk, the console is served until SIGINT."""
    process = subprocess.Popen([sys.executable, "examples/walkthrough.py"], cwd=REPO,
                               env=environment(DEMO_KEEP="1"), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + TIMEOUT
        while not lines or "Ctrl-C stops it" not in lines[-1]:
            assert time.monotonic() < deadline and process.poll() is None, lines
            lines.append(process.stdout.readline())
        console = re.search(r"open (http://\S+/console/)", lines[-1])
        assert console, lines[-1]
        with urllib.request.urlopen(console.group(1), timeout=30) as answer:
            assert answer.status == 200 and b"EXP console" in answer.read()
        process.send_signal(signal.SIGINT)
        assert process.wait(TIMEOUT) == 0
        assert process.stdout.read().splitlines()[-1] == "done"
        with pytest.raises(OSError):
            urllib.request.urlopen(console.group(1), timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# -- device_app.py ---------------------------------------------------------------


def exercise_device_app(program: Program, url: str) -> None:
    """The device app answers ping on ops and keeps status/test-uuid current."""
    token = user_token(url)
    path = "/api/data/status/" + DEMO["device_uuid"]
    first = program.until("status data item", lambda: get(url, path, token))
    assert first["value"]["online"] is True, first
    # it listens before it reports status: a ping is answered by now
    responses = broadcast(url, token, "ops", "ping", {"from": "test"}, timeout_ms=2000)
    assert responses == [{"name": "pong", "uuid": DEMO["device_uuid"]}], responses
    # and it keeps the status up to date
    program.until("a newer status", lambda: (
        True if get(url, path, token)["value"]["updated"] > first["value"]["updated"]
        else None))
    program.terminate()


def test_device_app_against_a_server(url: str, tmp_path: Path) -> None:
    """twistd -n exp --app examples.device_app:main, credentials from EXP_* variables."""
    program = Program(
        [*TWISTD_SCRIPT, "-n", "--pidfile=", "exp", "--app", "examples.device_app:main"],
        tmp_path / "device_app.log",
        env=environment(EXP_HOST=url, EXP_UUID=DEMO["device_uuid"],
                        EXP_SECRET=DEMO["device_secret"], STATUS_INTERVAL="0.2"),
    )
    try:
        exercise_device_app(program, url)
    finally:
        program.kill()
    assert f"answering ping on channel ops as {DEMO['device_uuid']}" in program.log()


def test_device_app_of_ones_own_with_embedded_server(tmp_path: Path) -> None:
    """A copy of the device app run from its own directory, on the embedded server."""
    shutil.copy(EXAMPLES / "device_app.py", tmp_path / "my_device_app.py")
    program = Program(
        [*TWISTD_SCRIPT, "-n", "--pidfile=", "exp", "--app", "my_device_app:main"],
        tmp_path / "device_app.log", cwd=tmp_path,
        env=environment(STATUS_INTERVAL="0.2"),
    )
    try:
        found = program.until("the embedded server", lambda: re.search(
            r"embedded local EXP server on (http://\S+)", program.log()))
        exercise_device_app(program, found.group(1))
    finally:
        program.kill()


# -- status_page.py ----------------------------------------------------------------


@pytest.mark.parametrize("embedded", [True, False], ids=["embedded server", "--host"])
def test_status_page(url: str, tmp_path: Path, embedded: bool) -> None:
    """The status page serves the service's state and counts broadcasts; SIGTERM ends it."""
    port = free_port()
    args = [sys.executable, "examples/status_page.py", "--port", str(port)]
    env = environment()
    if not embedded:
        args += ["--host", url]
        env.update(EXP_UUID=DEMO["device_uuid"], EXP_SECRET=DEMO["device_secret"])
    program = Program(args, tmp_path / "status_page.log", env=env)

    def page() -> dict[str, Any] | None:
        try:
            state = json.loads(fetch(f"http://127.0.0.1:{port}/"))
        except OSError:
            return None
        return dict(state)

    try:
        state = program.until("a connected, listening page", lambda: (
            s if (s := page()) is not None and s["is_connected"] and s["listening"]
            else None))
        assert state["identity"]["uuid"] == DEMO["device_uuid"], state
        assert state["broadcasts"] == 0, state
        host = state["host"]
        assert (host != url) if embedded else (host == url), state
        token = user_token(host)
        broadcast(host, token, "ops", "hello", "one")
        broadcast(host, token, "ops", "other", "not counted")
        broadcast(host, token, "ops", "hello", "two")
        program.until("two broadcasts counted", lambda: (
            True if (s := page()) is not None and s["broadcasts"] == 2 else None))
        program.terminate()
    finally:
        program.kill()


# -- consumer_app.py -----------------------------------------------------------------


def test_consumer_app(url: str) -> None:
    """The consumer app hears itself on a consumer channel and is refused the others."""
    output = run("examples/consumer_app.py", "--host", url)
    lines = output.splitlines()
    assert lines[0] == f"logged in as consumerApp {DEMO['consumer_uuid']}", output
    assert "heard hello 'visitor' on consumer channel kiosk" in lines
    assert "responses on consumer channel kiosk: [{'welcome': 'visitor'}]" in lines
    assert any(line.startswith("listening on non-consumer channel kiosk refused:"
                               " NetworkError:") for line in lines), output
    assert "broadcasting on non-consumer channel kiosk refused: ApiError 403" \
        " channel.forbidden" in lines
    assert lines[-1] == "done"


def test_consumer_app_with_embedded_server() -> None:
    """Without --host the consumer app runs on an embedded server."""
    output = run("examples/consumer_app.py")
    assert output.startswith("embedded local EXP server on http://127.0.0.1:"), output
    assert output.splitlines()[-1] == "done"


# -- pairing.py -------------------------------------------------------------------------


def test_pairing_as_two_programs(url: str, tmp_path: Path) -> None:
    """A device pairs by code with a user's help, stores credentials, and starts paired."""
    credentials = tmp_path / "device.json"
    device_args = [sys.executable, str(EXAMPLES / "pairing.py"), "--host", url,
                   "--credentials", str(credentials)]
    device = Program(device_args, tmp_path / "device.log")
    try:
        found = device.until("a pairing code", lambda: re.search(
            r"^pairing code: (\S+)$", device.log(), re.M))
        user = run(str(EXAMPLES / "pairing.py"), "--host", url, "--pair", found.group(1),
                   "--name", "paired by test")
        assert f"user {DEMO['username']} paired code {found.group(1)}: device" in user, user
        assert device.process.wait(TIMEOUT) == 0, device.log()
    finally:
        device.kill()
    stored = json.loads(credentials.read_text())
    assert f"paired: logged in as device {stored['uuid']};" in device.log(), device.log()
    assert stored["uuid"] in user
    # the stored credentials log in, as the device the user named
    status, auth = request("POST", url + "/api/auth/login",
                           {"token": device_token(stored["uuid"], stored["secret"])})
    assert status == 200, auth
    assert auth["identity"]["uuid"] == stored["uuid"]
    document = get(url, "/api/devices/" + stored["uuid"], auth["token"])
    assert document["name"] == "paired by test"
    # a second start with the file is paired at once
    again = run(*device_args[1:])
    assert again.splitlines() == [f"started paired, as device {stored['uuid']}"], again


def test_pairing_in_one_process() -> None:
    """Without --host, pairing and the paired restart happen against an embedded server."""
    output = run("examples/pairing.py")
    paired = re.search(r"^paired: logged in as device (\S+);", output, re.M)
    assert paired is not None, output
    assert output.splitlines()[-1] == f"started paired, as device {paired.group(1)}", output
