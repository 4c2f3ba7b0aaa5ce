"""
The C{exp} command line, run as the console script in a subprocess against a
local server in another: every command, its exit status (0, 1 for an EXP
error, 2 for a usage error), its output as text and as JSON, and its manners.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exp.server.testing import DEMO, ServerProcess, free_port

from ._peer import PATIENCE, Peer

pytestmark = pytest.mark.slow

EXP = str(Path(sys.executable).with_name("exp"))
USER = ["--username", DEMO["username"], "--password", DEMO["password"],
        "--organization", DEMO["organization"]]
COMMANDS = ["listen", "broadcast", "get", "find", "create", "save", "delete", "data", "pair",
            "server"]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess() as running:
        yield running


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EXP_")}


def exp(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
        timeout: float = PATIENCE) -> subprocess.CompletedProcess[str]:
    """Run C{exp ARGS}; its status, stdout and stderr."""
    return subprocess.run([EXP, *args], capture_output=True, text=True, input=stdin,
                          env=env if env is not None else clean_environment(),
                          timeout=timeout)


def as_user(server: ServerProcess, *args: str, **kwargs: Any
            ) -> subprocess.CompletedProcess[str]:
    return exp(*args, "--host", server.url, *USER, **kwargs)


def test_every_command_has_help_with_examples() -> None:
    """exp --help, and --help of every command: status 0, the usage and examples."""
    top = exp("--help")
    assert top.returncode == 0, top.stderr
    for command in COMMANDS:
        assert command in top.stdout
    for command in COMMANDS:
        answer = exp(command, "--help")
        assert answer.returncode == 0, (command, answer.stderr)
        assert "examples:" in answer.stdout, command
        assert f"exp {command}" in answer.stdout, command


def test_usage_errors_are_status_2() -> None:
    """No command, an unknown one, a missing argument, contradictory credentials: 2."""
    assert exp().returncode == 2
    assert exp("frobnicate").returncode == 2
    missing = exp("get", "devices")
    assert missing.returncode == 2 and "UUID" in missing.stderr
    both = exp("find", "devices", "--host", "http://127.0.0.1:1", *USER, "--uuid", "x")
    assert both.returncode == 2
    assert "not both" in both.stderr
    assert exp("find", "devices", "--host", "ftp://nowhere").returncode == 2


def test_without_a_host_it_says_where_it_goes() -> None:
    """No --host: the default local address, named on stderr (as the demo user)."""
    answer = exp("find", "devices", env={**clean_environment(), "EXP_HOST": ""})
    assert "http://127.0.0.1:9000" in answer.stderr
    assert "demo user" in answer.stderr
    assert answer.returncode in (0, 1)  # whether or not a server runs there


def test_bad_credentials_are_status_1_with_one_line(server: ServerProcess) -> None:
    """A refused login: status 1 and the server's message on one line of stderr."""
    answer = exp("find", "devices", "--host", server.url, "--username", DEMO["username"],
                 "--password", "wrong", "--organization", DEMO["organization"])
    assert answer.returncode == 1
    assert answer.stdout == ""
    lines = answer.stderr.strip().splitlines()
    assert len(lines) == 1 and "wrong username, password or organization" in lines[0], lines


def test_credentials_come_from_the_environment(server: ServerProcess) -> None:
    """EXP_HOST, EXP_UUID and EXP_SECRET, as for twistd exp: here a device."""
    env = {**clean_environment(), "EXP_HOST": server.url, "EXP_UUID": DEMO["device_uuid"],
           "EXP_SECRET": DEMO["device_secret"]}
    answer = exp("get", "device", DEMO["device_uuid"], "--json", env=env)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["name"] == "lobby"
    assert "--host" not in answer.stderr


def test_resources_round_trip(server: ServerProcess) -> None:
    """create, get, find, save and delete a thing, in text and in JSON."""
    created = as_user(server, "create", "things", '{"uuid": "cli-thing", "name": "before"}',
                      "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout) == {"uuid": "cli-thing", "name": "before"}
    text = as_user(server, "get", "thing", "cli-thing")
    assert json.loads(text.stdout)["name"] == "before"  # readable: indented JSON
    assert "\n  " in text.stdout
    saved = as_user(server, "save", "things", "cli-thing", "-", "--json",
                    stdin='{"name": "after"}')
    assert json.loads(saved.stdout)["name"] == "after", saved.stderr
    found = as_user(server, "find", "things", "name=after")
    assert found.returncode == 0
    assert found.stdout.splitlines()[0].split() == ["uuid", "name", "subtype"]
    assert "cli-thing" in found.stdout and found.stdout.strip().endswith("1 of 1")
    listed = json.loads(as_user(server, "find", "things", "--limit", "0", "--json").stdout)
    assert listed["results"] == [] and listed["total"] >= 2
    deleted = as_user(server, "delete", "things", "cli-thing")
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    gone = as_user(server, "get", "things", "cli-thing")
    assert gone.returncode == 1
    assert gone.stderr.strip() == "exp: thing cli-thing not found"
    again = as_user(server, "delete", "things", "cli-thing")
    assert again.returncode == 1 and "does not exist" in again.stderr


def test_unknown_resource_and_invalid_json_are_usage_errors(server: ServerProcess) -> None:
    """An unknown RESOURCE, a document or value that is not JSON: status 2, saying why."""
    unknown = as_user(server, "get", "gizmos", "x")
    assert unknown.returncode == 2
    assert "unknown resource 'gizmos'" in unknown.stderr
    invalid = as_user(server, "create", "things", "{name: 1}")
    assert invalid.returncode == 2 and "not valid JSON" in invalid.stderr
    invalid = as_user(server, "data", "put", "g", "k", "[1,")
    assert invalid.returncode == 2 and "VALUE is not valid JSON" in invalid.stderr
    invalid = as_user(server, "broadcast", "ops", "ping", "nope")
    assert invalid.returncode == 2 and "PAYLOAD is not valid JSON" in invalid.stderr
    not_object = as_user(server, "create", "things", "[1]")
    assert not_object.returncode == 2 and "JSON object" in not_object.stderr
    read_only = as_user(server, "delete", "content", "root")
    assert read_only.returncode == 2


def test_consumer_apps_may_not_write(server: ServerProcess) -> None:
    """The server's refusal is an EXP error: status 1 with its message and code."""
    answer = exp("create", "things", "--host", server.url, "--uuid", DEMO["consumer_uuid"],
                 "--api-key", DEMO["api_key"])
    assert answer.returncode == 1
    assert "consumer apps can only read (403 permission.denied)" in answer.stderr


def test_data_get_put_delete(server: ServerProcess) -> None:
    """data put, get (text and JSON), find data, delete; a missing item is status 1."""
    put = as_user(server, "data", "put", "cli", "item", '{"n": [1, 2]}')
    assert put.returncode == 0, put.stderr
    got = as_user(server, "data", "get", "cli", "item")
    assert json.loads(got.stdout) == {"n": [1, 2]}
    got = as_user(server, "data", "get", "cli", "item", "--json")
    assert json.loads(got.stdout) == {"group": "cli", "key": "item", "value": {"n": [1, 2]}}
    found = as_user(server, "find", "data", "group=cli")
    assert "item" in found.stdout and found.stdout.strip().endswith("1 of 1")
    assert as_user(server, "data", "delete", "cli", "item").returncode == 0
    missing = as_user(server, "data", "get", "cli", "item")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "exp: data item cli/item not found"
    assert as_user(server, "data", "put", "cli", "item").returncode == 2  # no VALUE


def test_broadcast_prints_the_responses(server: ServerProcess) -> None:
    """An SDK listener answers; the responses are printed as JSON lines, or one array."""
    peer = Peer(server.url, listen=[{"channel": "cli-ops", "name": "ping"}],
                uuid=DEMO["device_uuid"], secret=DEMO["device_secret"])
    try:
        peer.expect("listening")
        text = as_user(server, "broadcast", "cli-ops", "ping", '{"n": 1}', "--timeout", "2")
        assert text.returncode == 0, text.stderr
        assert [json.loads(line) for line in text.stdout.splitlines()] == [
            {"from": DEMO["device_uuid"], "echo": {"n": 1}}]
        assert "1 response" in text.stderr
        as_json = as_user(server, "broadcast", "cli-ops", "ping", "--timeout", "2", "--json")
        assert json.loads(as_json.stdout) == [{"from": DEMO["device_uuid"], "echo": None}]
        quiet = as_user(server, "broadcast", "cli-ops", "nobody", "--timeout", "0", "--json")
        assert json.loads(quiet.stdout) == []
    finally:
        peer.stop()


def read_line(stream: Any, timeout: float = PATIENCE) -> str:
    """One line of a child's pipe, or a failure after C{timeout} seconds."""
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "no line in time"
    return str(stream.readline())


def test_listen_prints_a_line_per_broadcast_until_ctrl_c(server: ServerProcess) -> None:
    """Only the named broadcasts of its channel, one JSON line each; SIGINT ends it with 0."""
    listen = subprocess.Popen([EXP, "listen", "cli-listen", "hello", "--host", server.url,
                               *USER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=clean_environment())
    try:
        assert "listening" in read_line(listen.stderr)
        as_user(server, "broadcast", "cli-listen", "other", '"skipped"', "--timeout", "0")
        as_user(server, "broadcast", "elsewhere", "hello", '"skipped"', "--timeout", "0")
        sent = as_user(server, "broadcast", "cli-listen", "hello", '{"a": "ü"}',
                       "--timeout", "0")
        assert sent.returncode == 0, sent.stderr
        line = json.loads(read_line(listen.stdout))
        assert (line["name"], line["payload"]) == ("hello", {"a": "ü"})
        assert line["time"].endswith("Z") and line["id"]
        listen.send_signal(signal.SIGINT)
        assert listen.wait(PATIENCE) == 0
        assert listen.stdout is not None and listen.stdout.read() == ""  # nothing else
    finally:
        if listen.poll() is None:
            listen.kill()
            listen.wait()


def test_listen_without_a_name_takes_all_and_system_channels(server: ServerProcess) -> None:
    """Without NAME every broadcast; --system: a device's status as its SDK connects."""
    listen = subprocess.Popen([EXP, "listen", DEMO["device_uuid"], "--system", "--host",
                               server.url, *USER], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=clean_environment())
    peer = None
    try:
        assert "listening" in read_line(listen.stderr)
        peer = Peer(server.url, uuid=DEMO["device_uuid"], secret=DEMO["device_secret"])
        peer.expect("connected")
        line = json.loads(read_line(listen.stdout))
        assert (line["name"], line["payload"]) == (
            "status", {"uuid": DEMO["device_uuid"], "online": True})
        listen.send_signal(signal.SIGINT)
        assert listen.wait(PATIENCE) == 0
    finally:
        if peer is not None:
            peer.stop()
        if listen.poll() is None:
            listen.kill()
            listen.wait()


def test_listen_where_it_may_not_is_status_1(server: ServerProcess) -> None:
    """A consumer app on a channel that is not a consumer channel: refused, status 1."""
    answer = exp("listen", "private", "--host", server.url, "--uuid", DEMO["consumer_uuid"],
                 "--api-key", DEMO["api_key"])
    assert answer.returncode == 1
    assert "refused to subscribe" in answer.stderr


def test_pair_a_waiting_device(server: ServerProcess) -> None:
    """exp pair CODE --name N: the device's SDK gets its credentials; a wrong code is 1."""
    wrong = as_user(server, "pair", "NOCODE")
    assert wrong.returncode == 1
    assert "no device is waiting with that code" in wrong.stderr
    peer = Peer(server.url, allow_pairing=True)
    try:
        code = peer.expect("pairing")["code"]
        paired = as_user(server, "pair", code.lower(), "--name", "cli paired", "--json")
        assert paired.returncode == 0, paired.stderr
        device = json.loads(paired.stdout)
        assert device["name"] == "cli paired" and device["secret"]
        assert peer.expect("paired")["identity"]["uuid"] == device["uuid"]
    finally:
        peer.stop()


def test_spinner_only_on_a_terminal(server: ServerProcess) -> None:
    """While waiting, a spinner on stderr if it is a terminal; none in a pipe."""
    piped = as_user(server, "broadcast", "cli-spin", "x", "--timeout", "0.5")
    assert "\r" not in piped.stderr
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen([EXP, "broadcast", "cli-spin", "x", "--timeout", "1",
                                    "--host", server.url, *USER], stdout=subprocess.PIPE,
                                   stderr=terminal, env=clean_environment())
        os.close(terminal)
        seen = b""
        deadline = time.monotonic() + PATIENCE
        while process.poll() is None or select.select([controller], [], [], 0)[0]:
            assert time.monotonic() < deadline
            if select.select([controller], [], [], 0.1)[0]:
                try:
                    seen += os.read(controller, 1024)
                except OSError:
                    break
        assert process.wait() == 0
        assert b"\r" in seen and b"collecting responses" in seen, seen
    finally:
        os.close(controller)


def test_server_is_twistd_exp_server(tmp_path: Path) -> None:
    """exp server OPTIONS runs twistd -n exp-server OPTIONS; SIGTERM stops it as twistd."""
    port = free_port()
    process = subprocess.Popen([EXP, "server", "--listen", f"tcp:{port}:interface=127.0.0.1",
                                "--db", str(tmp_path / "db.sqlite3"), "--password-cost", "12"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=clean_environment())
    try:
        deadline = time.monotonic() + PATIENCE
        while True:
            answer = exp("find", "devices", "--host", f"http://127.0.0.1:{port}", *USER,
                         "--json")
            if answer.returncode == 0:
                break
            assert process.poll() is None and time.monotonic() < deadline, answer.stderr
            time.sleep(0.2)
        assert json.loads(answer.stdout)["total"] == 1
        process.send_signal(signal.SIGTERM)
        # twistd ends by raising the signal that stopped it again, once shut down
        assert process.wait(PATIENCE) == -signal.SIGTERM
        assert process.stdout is not None
        assert b"Server Shut Down." in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_readme_exp_lines_parse() -> None:
    """Every exp command of the README is one the command line takes."""
    from exp.cli import parser

    from .test_readme import shell_lines

    commands = [args for args in shell_lines() if args[0] == "exp"]
    assert set(COMMANDS) <= {args[1] for args in commands}
    for args in commands:
        if args[1] != "server":
            parser().parse_args(args[1:])
