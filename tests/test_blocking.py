"""
The blocking face (C{import exp}), tested in subprocesses: crochet runs the
reactor in a thread of its own, which cannot share a process with
pytest-twisted.  One C{twistd exp-server} serves the whole module; each test
runs a small script against it and checks its exit code and output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exp.server.testing import DEMO

from ._processes import STARTUP_TIMEOUT, TWISTD, free_port, request

pytestmark = pytest.mark.slow

#: Generous, so that only a hang fails on time.
TIMEOUT = 120.0

#: What every script starts with: the server's URL, the demo credentials,
#: and C{report(value)}, which prints the script's result as a JSON line.
PRELUDE = f"""\
import json
import sys
import threading
import time

import exp

URL = sys.argv[1]
USER = dict(username={DEMO["username"]!r}, password={DEMO["password"]!r},
            organization={DEMO["organization"]!r}, host=URL)
DEVICE = dict(uuid={DEMO["device_uuid"]!r}, secret={DEMO["device_secret"]!r}, host=URL)
CONSUMER = dict(uuid={DEMO["consumer_uuid"]!r}, api_key={DEMO["api_key"]!r}, host=URL)


def report(value):
    print("RESULT " + json.dumps(value), flush=True)

"""


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A C{twistd -n exp-server} process with the demo seed, answering logins."""
    directory = tmp_path_factory.mktemp("blocking-server")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = directory / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=", "exp-server",
             "--listen", f"tcp:{port}:interface=127.0.0.1",
             "--db", str(directory / "exp.sqlite3"),
             "--feed-allow", "127.0.0.0/8"],  # the feed test's source is on loopback
            cwd=directory, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while True:
                assert process.poll() is None, log_path.read_text(errors="replace")
                assert time.monotonic() < deadline, log_path.read_text(errors="replace")
                try:
                    status, _ = request("POST", base + "/api/auth/login", {
                        "username": DEMO["username"], "password": DEMO["password"],
                        "organization": DEMO["organization"]}, timeout=5)
                except OSError:
                    time.sleep(0.05)
                    continue
                assert status == 200, status
                break
            yield base
        finally:
            process.terminate()
            try:
                process.wait(STARTUP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STARTUP_TIMEOUT)


def write_script(tmp_path: Path, body: str, name: str = "script.py") -> Path:
    path = tmp_path / name
    path.write_text(PRELUDE + textwrap.dedent(body), encoding="utf-8")
    return path


def environment() -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1")


def run(tmp_path: Path, url: str, body: str, *, ok: bool = True,
        timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a script (the prelude, then C{body}) with the server's URL."""
    script = write_script(tmp_path, body)
    result = subprocess.run([sys.executable, str(script), url], cwd=tmp_path,
                            env=environment(), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=timeout)
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def reported(result: subprocess.CompletedProcess[str]) -> Any:
    """The value the script passed to C{report}."""
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, result.stdout + result.stderr
    return json.loads(lines[0][len("RESULT "):])


def result_of(tmp_path: Path, url: str, body: str) -> Any:
    return reported(run(tmp_path, url, body))


def spawn(tmp_path: Path, url: str, body: str, name: str) -> subprocess.Popen[str]:
    """Start a script in the background, reading its stdout line by line."""
    script = write_script(tmp_path, body, name)
    return subprocess.Popen([sys.executable, str(script), url], cwd=tmp_path,
                            env=environment(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(process: subprocess.Popen[str], marker: str) -> list[str]:
    """Lines of the process's stdout up to and including C{marker}."""
    assert process.stdout is not None
    lines: list[str] = []
    while True:
        line = process.stdout.readline()
        if not line:
            process.kill()
            _, err = process.communicate(timeout=TIMEOUT)
            raise AssertionError(f"no {marker!r} from the script:\n{''.join(lines)}{err}")
        lines.append(line)
        if line.strip() == marker:
            return lines


def finish(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Wait for a background script (killing it if it hangs); its output."""
    try:
        return process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate(timeout=TIMEOUT)
        raise AssertionError(f"the script hung:\n{out}{err}") from None


# -- SDK_DOC.md: starting ---------------------------------------------------------


def test_start_with_each_kind_of_credentials(tmp_path: Path, url: str) -> None:
    """exp.start returns authenticated for a user, a device and a consumer app."""
    result = result_of(tmp_path, url, """
        out = {}
        for kind, options in (("user", USER), ("device", DEVICE), ("consumer", CONSUMER)):
            instance = exp.start(**options)
            identity = exp.get_auth()["identity"]
            out[kind] = [identity.get("type"), identity.get("uuid") is not None,
                         isinstance(instance, exp.Exp)]
            instance.stop()
        report(out)
    """)
    assert result == {"user": ["user", True, True], "device": ["device", True, True],
                      "consumer": ["consumerApp", True, True]}


def test_start_in_pairing_mode(tmp_path: Path, url: str) -> None:
    """exp.start(allow_pairing=True) returns with a pairing identity that a user can pair."""
    result = result_of(tmp_path, url, """
        pairing = exp.start(allow_pairing=True, host=URL)
        identity = pairing.get_auth()["identity"]
        code = identity["pairingCode"]
        out = {"paired": identity.get("paired"), "code": bool(code),
               "property": pairing.pairing_code == code}
        user = exp.start(**USER)
        device = user.post("/api/devices/pair", {"pairingCode": code, "name": "paired"})
        deadline = time.monotonic() + 30
        while pairing.get_auth()["identity"].get("paired") is False:
            assert time.monotonic() < deadline, "never paired"
            time.sleep(0.1)
        now = pairing.get_auth()["identity"]
        out["now"] = [now.get("type"), now.get("uuid") == device["uuid"]]
        out["current"] = pairing.get_current_device().name
        exp.stop()
        report(out)
    """)
    assert result == {"paired": False, "code": True, "property": True,
                      "now": ["device", True], "current": "paired"}


# -- SDK_DOC.md: the network --------------------------------------------------------


def test_get_channel(tmp_path: Path, url: str) -> None:
    """exp.get_channel takes a name and the system and consumer flags (no I/O)."""
    result = result_of(tmp_path, url, """
        exp.start(**USER)
        channel = exp.get_channel('my_channel', system=False, consumer=False)
        plain = exp.get_channel('my_channel')
        system = exp.get_channel('my_channel', system=True)
        consumer = exp.get_channel('my_channel', consumer=True)
        report([[c.name, c.system, c.consumer] for c in (channel, plain, system, consumer)])
        exp.stop()
    """)
    assert result == [["my_channel", False, False], ["my_channel", False, False],
                      ["my_channel", True, False], ["my_channel", False, True]]


def test_channel_flags_and_enable_network(tmp_path: Path, url: str) -> None:
    """Consumer apps use consumer channels only, system channels take no broadcasts,
    and enable_network=False leaves an instance unable to listen."""
    result = result_of(tmp_path, url, """
        out = {}

        def outcome(call):
            try:
                value = call()
            except exp.ExpError as e:
                return type(e).__name__
            return value if value is None or isinstance(value, (list, str)) else "ok"

        user = exp.start(**USER)
        app = exp.start(**CONSUMER)
        out["app plain broadcast"] = outcome(
            lambda: app.get_channel('flags').broadcast('x', timeout=0))
        out["app plain listen"] = outcome(lambda: app.get_channel('flags').listen('x'))
        out["user system broadcast"] = outcome(
            lambda: user.get_channel('flags', system=True).broadcast('x', timeout=0))
        heard = app.get_channel('flags', consumer=True).listen('x')
        deaf = user.get_channel('flags').listen('y')
        user.get_channel('flags', consumer=True).broadcast('x', payload='c', timeout=0)
        user.get_channel('flags').broadcast('x', payload='plain', timeout=0)
        app.get_channel('flags', consumer=True).broadcast('y', payload='c', timeout=0)
        out["app hears"] = [heard.wait(5).payload, heard.wait(0.5)]
        out["user hears consumer"] = deaf.wait(0.5)
        quiet = exp.start(enable_network=False, **USER)
        out["no network listen"] = outcome(lambda: quiet.get_channel('flags').listen('x'))
        out["connected"] = [user.is_connected, quiet.is_connected]
        out["no network get"] = quiet.get_device('test-uuid').name
        exp.stop()
        report(out)
    """)
    assert result == {
        "app plain broadcast": "ApiError", "app plain listen": "NetworkError",
        "user system broadcast": "ApiError", "app hears": ["c", None],
        "user hears consumer": None, "no network listen": "NetworkError",
        "connected": [True, False], "no network get": "lobby",
    }


def test_broadcast_and_respond_between_processes(tmp_path: Path, url: str) -> None:
    """The Responding example answers the Broadcasting example run in another process."""
    responder = spawn(tmp_path, url, """
        exp.start(**DEVICE)
        channel = exp.get_channel('doc_channel')
        listener = channel.listen(name='my_event')
        print('listening')

        while True:
          broadcast = listener.wait(5)
          if broadcast and broadcast.payload == 'hello':
            print('Responding to broadcast.')
            broadcast.respond('Nice to meet you!')
    """, "responder.py")
    try:
        read_until(responder, "listening")
        result = run(tmp_path, url, """
            exp.start(**USER)
            channel = exp.get_channel('doc_channel')
            responses = channel.broadcast(name='my_event', timeout=2, payload='hello')
            [print(response) for response in responses]
            report(responses)
        """)
    finally:
        responder.terminate()
        out, _ = finish(responder)
    assert reported(result) == ["Nice to meet you!"]
    assert "Nice to meet you!\n" in result.stdout
    assert "Responding to broadcast." in out


def test_listen_and_wait_loop(tmp_path: Path, url: str) -> None:
    """The Listening example receives a broadcast sent while it waits."""
    result = run(tmp_path, url, """
        exp.start(**USER)
        sender = exp.start(**DEVICE)

        def send():
            time.sleep(0.5)
            sender.get_channel('listen_doc').broadcast('my_event', payload={'n': 1}, timeout=0)

        channel = exp.get_channel('listen_doc')
        listener = channel.listen('my_event')
        threading.Thread(target=send).start()

        while True:
          broadcast = listener.wait(5)
          if broadcast:
            print('Message received!')
            print(broadcast.payload)
            listener.cancel()
            break
        report([broadcast.name, broadcast.payload, listener.wait(0)])
        exp.stop()
    """)
    assert "Message received!\n{'n': 1}\n" in result.stdout
    assert reported(result) == ["my_event", {"n": 1}, None]


def test_listen_max_queue(tmp_path: Path, url: str) -> None:
    """listen(max_queue=n) keeps the newest n broadcasts for wait, the oldest dropped."""
    result = run(tmp_path, url, """
        sender = exp.start(**USER, enable_network=False)
        device = exp.start(**DEVICE)
        listener = device.get_channel('flood').listen('news', max_queue=2)
        seen = []
        device.get_channel('flood').listen('news', callback=seen.append)
        for n in range(5):
            sender.get_channel('flood').broadcast('news', payload=n, timeout=0)
        deadline = time.monotonic() + 60
        while len(seen) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        report([len(seen), listener.wait(0).payload, listener.wait(0).payload,
                listener.wait(0)])
        exp.stop()
    """)
    assert reported(result) == [5, 3, 4, None]


# -- SDK_DOC.md: resources ------------------------------------------------------------


def test_api_devices(tmp_path: Path, url: str) -> None:
    """exp.api finds, gets, creates, saves and deletes devices on the server."""
    result = result_of(tmp_path, url, """
        exp.start(**USER)
        params = {'name': 'lobby'}
        devices = exp.api.find_devices(**params)
        out = {"found": [d.uuid for d in devices], "total": devices.total}
        device = exp.api.get_device('test-uuid')
        out["got"] = device.document["name"]
        out["missing"] = exp.api.get_device('no-such-device')

        device = exp.api.create_device({ "field": 'value' })
        device.document["field"] = 123
        device.save()
        print(device.document["field"])
        out["saved"] = exp.api.get_device(device.uuid).document["field"]
        device.delete()
        out["deleted"] = exp.api.get_device(device.uuid)
        exp.stop()
        report(out)
    """)
    assert result == {"found": ["test-uuid"], "total": 1, "got": "lobby", "missing": None,
                      "saved": 123, "deleted": None}


def test_a_script_written_for_the_1_0_sdk(tmp_path: Path, url: str) -> None:
    """What 1.0.x scripts do works: the create_*/get_* families on the instance exp.start
    returns, resources created with no document, getters with no uuid, a device whose
    location is {'uuid': None}, and NetworkError from listen without the network."""
    result = result_of(tmp_path, url, """
        sdk = exp.start(**USER)
        out = {}
        experience = sdk.create_experience()
        location = sdk.create_location(None)
        thing = sdk.create_thing()
        out["created"] = [[r.uuid is not None, r.name] for r in (experience, location, thing)]
        out["zones"] = [location.document["zones"], location.get_zones()]
        out["getters"] = [sdk.get_device(), sdk.get_location(None), sdk.get_thing(),
                          sdk.get_experience(), sdk.get_feed(), sdk.get_content(),
                          sdk.get_data()]
        device = sdk.create_device({"location": {"uuid": None}})
        out["nowhere"] = [device.get_location(), device.get_zones(), device.get_experience()]
        out["found"] = [d.uuid for d in sdk.find_devices({"uuid": device.uuid})]
        for resource in (experience, location, thing, device):
            resource.delete()
        quiet = exp.start(enable_network=False, **USER)
        try:
            quiet.get_channel("ops").listen("ping")
        except exp.NetworkError as e:
            out["listen"] = type(e).__name__
        exp.stop()
        report(out)
    """)
    assert result == {
        "created": [[True, ""], [True, ""], [True, ""]], "zones": [[], []],
        "getters": [None] * 7, "nowhere": [None, [], None], "found": [result["found"][0]],
        "listen": "NetworkError",
    }


def test_module_level_resource_calls(tmp_path: Path, url: str) -> None:
    """exp.get_device, exp.create_device, exp.find_devices and exp.get_experience work."""
    result = result_of(tmp_path, url, """
        exp.start(**USER)
        created = exp.create_device({'name': 'module-level'})
        out = {
            "get": exp.get_device('test-uuid').name,
            "find": [d.uuid for d in exp.find_devices(name='module-level')],
            "created": created.uuid is not None,
            "experience": exp.get_experience('demo-experience').name,
            "namespaces": [[e.name for e in exp.api.find_experiences()],
                           exp.api.get_location('demo-location').name],
        }
        out["find"] = out["find"] == [created.uuid]
        created.delete()
        exp.stop()
        report(out)
    """)
    assert result == {"get": "lobby", "find": True, "created": True, "experience": "welcome",
                      "namespaces": [["welcome"], "head office"]}


def test_data(tmp_path: Path, url: str) -> None:
    """The data example: values round-trip through the server, deletes stick."""
    result = result_of(tmp_path, url, """
        exp.start(**USER)
        exp.api.create_data(key="key1", group="group0", value={"generic": 1})

        data = exp.api.get_data("key1", "group0")
        print(data.value)
        before = data.value
        data.value = { "generic": 1111 }
        data.save()
        after = exp.api.get_data("key1", "group0").value
        data.delete()
        gone = exp.api.get_data("key1", "group0")

        data = exp.api.create_data(key="4", group="cats", value={ "name": "fluffy" })
        created = [data.key, data.group, exp.api.get_data("4", "cats").value]
        seeded = exp.api.get_data("fluffy", "cats").value
        exp.stop()
        report([before, after, gone, created, seeded])
    """)
    assert result == [{"generic": 1}, {"generic": 1111}, None,
                      ["4", "cats", {"name": "fluffy"}], {"age": 3}]


def test_content_children_and_urls(tmp_path: Path, url: str) -> None:
    """Content has children, and get_url/get_variant_url deliver its files."""
    result = result_of(tmp_path, url, """
        import urllib.request
        exp.start(**DEVICE)
        root = exp.api.get_content('root')
        children = root.get_children()
        names = sorted(child.name for child in children)
        welcome = [c for c in children if c.name == 'welcome.txt'][0]
        with urllib.request.urlopen(welcome.get_url(), timeout=30) as answer:
            text = answer.read().decode()
        images = [c for c in children if c.name == 'images'][0]
        logo = [c for c in images.get_children() if c.name == 'logo.png'][0]
        with urllib.request.urlopen(logo.get_variant_url('small'), timeout=30) as answer:
            small = answer.read()
        found = [c.uuid == welcome.uuid for c in exp.api.find_content({'name': 'welcome.txt'})]
        try:
            exp.api.create_content
        except AttributeError:
            creatable = False
        else:
            creatable = True
        exp.stop()
        report({"names": names, "text": text, "folder_url": images.get_url(),
                "logo": logo.name, "small": len(small), "found": found,
                "creatable": creatable})
    """)
    demo = Path(__file__).resolve().parent.parent / "exp" / "server" / "demo" / "content"
    assert {"welcome.txt", "images"} <= set(result["names"])
    assert result["text"] == (demo / "welcome.txt").read_text()
    assert result["folder_url"] is None
    assert result["logo"] == "logo.png"
    assert result["small"] == (demo / "images" / "logo.small.png").stat().st_size
    assert result["found"] == [True]
    assert result["creatable"] is False  # "content does not currently support creation"


def test_feed_get_data(tmp_path: Path, url: str) -> None:
    """A JSON feed's get_data returns its source's decoded document."""
    result = result_of(tmp_path, url, """
        import http.server

        class Source(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({"items": [1, 2, 3]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        source = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Source)
        threading.Thread(target=source.serve_forever, daemon=True).start()
        exp.start(**USER)
        feed = exp.api.create_feed({"name": "numbers", "subtype": "scala:feed:json",
                                    "url": "http://127.0.0.1:%d/" % source.server_port})
        data = exp.api.get_feed(feed.uuid).get_data()
        feed.delete()
        exp.stop()
        source.shutdown()
        report(data)
    """)
    assert result == {"items": [1, 2, 3]}


# -- options and errors -------------------------------------------------------------------

#: Each case: options of exp.start that are wrong before any I/O, and a word
#: the error's message must contain.
BAD_OPTIONS = [
    ({}, "no credentials"),
    ({"username": "u"}, "password"),
    ({"username": "u", "password": "p"}, "organization"),
    ({"password": "p", "organization": "o"}, "username"),
    ({"username": "u", "password": "p", "organization": "o", "uuid": "x"}, "not both"),
    ({"username": "u", "password": "p", "organization": "o", "secret": "s"}, "not both"),
    ({"username": "u", "password": "p", "organization": "o", "allow_pairing": True},
     "allow_pairing"),
    ({"uuid": "x"}, "secret"),
    ({"secret": "s"}, "uuid"),
    ({"api_key": "k"}, "uuid"),
    ({"uuid": "x", "secret": "s", "api_key": "k"}, "not both"),
    ({"uuid": "x", "api_key": "k", "allow_pairing": True}, "allow_pairing"),
    ({"uuid": "", "secret": "s"}, "uuid"),
    ({"uuid": "x", "secret": 5}, "secret"),
    ({"allow_pairing": False}, "allow_pairing=True"),
    ({"allow_pairing": "yes"}, "allow_pairing"),
    ({"uuid": "x", "secret": "s", "enable_network": "no"}, "enable_network"),
    ({"uuid": "x", "secret": "s", "colour": "red"}, "colour"),
    ({"user_name": "u", "password": "p", "organization": "o"}, "user_name"),
    ({"uuid": "x", "secret": "s", "host": "api.goexp.io"}, "host"),
    ({"uuid": "x", "secret": "s", "host": "ftp://127.0.0.1:1"}, "host"),
    ({"uuid": "x", "secret": "s", "host": "http://"}, "host"),
    ({"uuid": "x", "secret": "s", "host": "http://127.0.0.1:port"}, "port"),
    ({"uuid": "x", "secret": "s", "host": 80}, "host"),
    ({"uuid": "x", "secret": "s", "auth": "token"}, "auth"),
]


def test_bad_options_raise_runtime_error_before_any_io(tmp_path: Path, url: str) -> None:
    """Incomplete, contradictory, unknown or malformed options raise exp.RuntimeError at once."""
    result = result_of(tmp_path, url, f"""
        import builtins
        out = []
        for options, word in {BAD_OPTIONS!r}:
            options.setdefault("host", "http://127.0.0.1:1")  # refuses: a retry would hang
            started = time.monotonic()
            try:
                exp.start(**options)
            except exp.RuntimeError as e:
                out.append([word in str(e), isinstance(e, builtins.RuntimeError),
                            isinstance(e, exp.ExpError), time.monotonic() - started,
                            str(e)])
            else:
                out.append("started with %r" % (options,))
        report({{"cases": out, "reactor": exp._blocking._started,
                "threads": threading.active_count()}})
    """)
    for case, (options, word) in zip(result["cases"], BAD_OPTIONS, strict=True):
        assert isinstance(case, list), case
        mentions, builtin, exp_error, elapsed, message = case
        assert mentions and builtin and exp_error, (options, word, message)
        assert elapsed < 5, (options, elapsed)
    assert result["reactor"] is False  # not even the reactor thread was started
    assert result["threads"] == 1


def test_pairing_needs_allow_pairing_true(tmp_path: Path, url: str) -> None:
    """The documented exp.start(allow_pairing=False) explains that pairing needs True."""
    result = run(tmp_path, url, """
        exp.start(allow_pairing=False)
    """, ok=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("exp.errors.RuntimeError: "), result.stderr
    assert "allow_pairing=True" in last


#: Credentials the demo server refuses, one of each kind.
BAD_CREDENTIALS = [
    {"username": "test@goexp.io", "password": "wrong-Password1", "organization": "scala"},
    {"username": "nobody@goexp.io", "password": "test-Password1", "organization": "scala"},
    {"username": "test@goexp.io", "password": "test-Password1", "organization": "nowhere"},
    {"uuid": "test-uuid", "secret": "wrong-secret"},
    {"uuid": "no-such-device", "secret": "test-secret"},
    {"uuid": "test-uuid", "api_key": "wrong-key"},
]


def test_bad_credentials_raise_authentication_error(tmp_path: Path, url: str) -> None:
    """Credentials the server refuses make exp.start raise AuthenticationError (no hang)."""
    result = result_of(tmp_path, url, f"""
        out = []
        for options in {BAD_CREDENTIALS!r}:
            try:
                exp.start(host=URL, **options)
            except exp.AuthenticationError as e:
                out.append(["AuthenticationError", isinstance(e, exp.ExpError), str(e)])
            else:
                out.append(["started", options])
        report(out)
    """)
    assert len(result) == len(BAD_CREDENTIALS)
    for outcome, options in zip(result, BAD_CREDENTIALS, strict=True):
        assert outcome[:2] == ["AuthenticationError", True], (options, outcome)


def test_ctrl_c_interrupts_a_start_that_cannot_connect(tmp_path: Path, url: str) -> None:
    """SIGINT while exp.start retries an unreachable host ends the program quietly."""
    process = spawn(tmp_path, url, """
        print('starting')
        exp.start(uuid='test-uuid', secret='test-secret', host='http://127.0.0.1:1')
        print('started')
    """, "ctrl_c_start.py")
    read_until(process, "starting")
    time.sleep(1.0)  # into the retries
    process.send_signal(signal.SIGINT)
    out, err = finish(process)
    assert process.returncode != 0, out + err
    assert "KeyboardInterrupt" in err, err
    assert "Exception ignored" not in err and "Unhandled error" not in err, err
    assert "started" not in out.splitlines()


# -- blocking semantics ------------------------------------------------------------------------


def test_broadcast_blocks_for_its_timeout_and_returns_responses(tmp_path: Path,
                                                                 url: str) -> None:
    """broadcast(timeout=1) blocks about a second and returns a responder thread's answers."""
    result = result_of(tmp_path, url, """
        exp.start(**USER)
        channel = exp.get_channel('blocking_broadcast')
        listener = channel.listen('ask')

        def respond():
            broadcast = listener.wait(30)
            broadcast.respond({'answer': broadcast.payload * 2})

        threading.Thread(target=respond).start()
        started = time.monotonic()
        responses = channel.broadcast('ask', payload=21, timeout=1)
        elapsed = time.monotonic() - started
        started = time.monotonic()
        nobody = channel.broadcast('nobody-listens', timeout=1)
        alone = time.monotonic() - started
        exp.stop()
        report([responses, elapsed, nobody, alone])
    """)
    responses, elapsed, nobody, alone = result
    assert responses == [{"answer": 42}]
    assert nobody == []
    assert elapsed >= 0.9
    assert alone >= 0.9


def test_wait_times_out_and_returns_the_oldest_first(tmp_path: Path, url: str) -> None:
    """wait returns None after its timeout, and queued broadcasts oldest first."""
    result = result_of(tmp_path, url, """
        exp.start(**USER)
        channel = exp.get_channel('blocking_wait')
        listener = channel.listen('tick')
        started = time.monotonic()
        empty = listener.wait(0.5)
        waited = time.monotonic() - started
        immediate = listener.wait()
        for n in range(5):
            channel.broadcast('tick', payload=n, timeout=0)
            channel.broadcast('other', payload=n, timeout=0)
        time.sleep(0.5)  # all queued before the first wait
        received = [listener.wait(5).payload for n in range(5)]
        after = listener.wait(0.2)
        probe = channel.listen('aged')
        short = channel.listen('aged', max_age=0.5)
        channel.broadcast('aged', payload='old', timeout=0)
        probe.wait(10)  # arrived at both listeners
        time.sleep(1.0)
        expired = short.wait(0)
        exp.stop()
        report([empty, waited, immediate, received, after, expired])
    """)
    empty, waited, immediate, received, after, expired = result
    assert empty is None and immediate is None and after is None
    assert expired is None  # dropped from the queue after max_age
    assert waited >= 0.4
    assert received == [0, 1, 2, 3, 4]


def test_listen_returns_once_registered(tmp_path: Path, url: str) -> None:
    """A broadcast sent by another identity right after listen returns is received."""
    result = result_of(tmp_path, url, """
        exp.start(**USER)
        sender = exp.start(**DEVICE)
        got = []
        for n in range(5):
            listener = exp.get_channel('registered-%d' % n).listen('now')
            sender.get_channel('registered-%d' % n).broadcast('now', payload=n, timeout=0)
            broadcast = listener.wait(10)
            got.append(broadcast and broadcast.payload)
        exp.stop()
        report(got)
    """)
    assert result == [0, 1, 2, 3, 4]


def test_instances_side_by_side_and_stop(tmp_path: Path, url: str) -> None:
    """A user and a device run together; module-level calls go to the most recent."""
    result = result_of(tmp_path, url, """
        out = {}
        user = exp.start(**USER)
        device = exp.start(**DEVICE)
        out["current"] = exp.get_auth()["identity"]["type"]
        out["each"] = [user.get_auth()["identity"]["type"],
                       device.get_auth()["identity"]["type"]]
        out["api"] = exp.api.get_current_device() is not None  # the device's own

        listener = user.get_channel('side_by_side').listen('hi')
        device.get_channel('side_by_side').broadcast('hi', payload='from device', timeout=0)
        out["heard"] = listener.wait(10).payload

        device.stop()
        out["after_device_stop"] = exp.get_auth()["identity"]["type"]
        exp.stop()
        errors = []
        for call in (lambda: exp.get_device('test-uuid'), lambda: exp.api.find_devices(),
                     lambda: user.get_device('test-uuid'), lambda: user.get_channel('x'),
                     lambda: device.get_auth()):
            try:
                call()
            except exp.RuntimeError as e:
                errors.append(str(e))
            else:
                errors.append(None)
        out["errors"] = errors
        report(out)
    """)
    assert result["current"] == "device"
    assert result["each"] == ["user", "device"]
    assert result["api"] is True
    assert result["heard"] == "from device"
    assert result["after_device_stop"] == "user"
    assert all(result["errors"]), result["errors"]


def test_exp_start_again_after_stop(tmp_path: Path, url: str) -> None:
    """After exp.stop(), exp.start starts a fresh instance that works."""
    result = result_of(tmp_path, url, """
        exp.start(**USER)
        exp.stop()
        exp.start(**DEVICE)
        name = exp.get_device('test-uuid').name
        exp.stop()
        report(name)
    """)
    assert result == "lobby"


# -- threads and the reactor thread --------------------------------------------------------


def test_threads_call_concurrently(tmp_path: Path, url: str) -> None:
    """Eight threads making blocking calls at once each get their own right results."""
    result = result_of(tmp_path, url, """
        exp.start(**USER)
        results = {}
        errors = []

        def work(i):
            try:
                mine = []
                for round in range(5):
                    mine.append(exp.get_device('test-uuid').name)
                    exp.api.create_data(key='k%d' % i, group='threads', value=[i, round])
                    mine.append(exp.api.get_data('k%d' % i, 'threads').value)
                results[i] = mine
            except Exception as e:
                errors.append(repr(e))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        exp.stop()
        report([errors, results])
    """)
    errors, results = result
    assert errors == []
    assert len(results) == 8
    for i, values in results.items():
        expected: list[Any] = []
        for round_ in range(5):
            expected += ["lobby", [int(i), round_]]
        assert values == expected


def test_listener_callback_runs_in_a_worker_thread(tmp_path: Path, url: str) -> None:
    """A blocking listen(name, callback) calls back in a thread where blocking calls work."""
    result = result_of(tmp_path, url, """
        import queue
        exp.start(**USER)
        got = queue.Queue()

        def callback(broadcast):
            got.put([broadcast.payload, exp.get_device('test-uuid').name,
                     threading.current_thread() is not threading.main_thread()])

        channel = exp.get_channel('callback_thread')
        channel.listen('ping', callback)
        channel.broadcast('ping', payload='p', timeout=0)
        report(got.get(timeout=30))
        exp.stop()
    """)
    assert result == ["p", "lobby", True]


def test_blocking_calls_from_the_reactor_thread_raise(tmp_path: Path, url: str) -> None:
    """The blocking API called in the reactor thread raises exp.RuntimeError naming exp.twisted."""
    result = result_of(tmp_path, url, """
        import queue
        import crochet
        from twisted.internet import reactor
        instance = exp.start(**USER)
        errors = queue.Queue()

        def attempt():
            try:
                exp.get_device('test-uuid')
            except exp.RuntimeError as e:
                errors.put(str(e))
            else:
                errors.put(None)

        reactor.callFromThread(attempt)
        from_call = errors.get(timeout=30)
        crochet.run_in_reactor(attempt)().wait(30)
        from_crochet = errors.get(timeout=30)

        channel = instance.service.get_channel('reactor_thread')
        crochet.run_in_reactor(lambda: channel.listen('ping', lambda b: attempt()))().wait(30)
        exp.get_channel('reactor_thread').broadcast('ping', timeout=0)
        from_callback = errors.get(timeout=30)
        exp.stop()
        report([from_call, from_crochet, from_callback])
    """)
    for message in result:
        assert message is not None and "exp.twisted" in message, result


def test_ctrl_c_interrupts_a_wait(tmp_path: Path, url: str) -> None:
    """SIGINT during listener.wait(60) raises KeyboardInterrupt and the script exits."""
    process = spawn(tmp_path, url, """
        exp.start(**DEVICE)
        listener = exp.get_channel('ctrl_c').listen('never')
        print('waiting')
        listener.wait(60)
        print('not interrupted')
    """, "ctrl_c.py")
    read_until(process, "waiting")
    time.sleep(0.3)  # into the wait
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    out, err = finish(process)
    assert process.returncode != 0, out + err
    assert "KeyboardInterrupt" in err
    assert "not interrupted" not in out
    assert time.monotonic() - started < 50  # not the 60 s of the wait


def test_a_caught_ctrl_c_leaves_the_instance_working(tmp_path: Path, url: str) -> None:
    """After a KeyboardInterrupt in wait is caught, calls work and nothing is reported."""
    result = run(tmp_path, url, """
        import gc
        import os
        import signal
        exp.start(**DEVICE)
        listener = exp.get_channel('ctrl_c_caught').listen('never')
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            listener.wait(60)
        except KeyboardInterrupt:
            interrupted = True
        gc.collect()
        time.sleep(0.3)
        report([interrupted, exp.get_device('test-uuid').name, listener.wait(0.1)])
        exp.stop()
        gc.collect()
    """)
    assert reported(result) == [True, "lobby", None]
    assert "Unhandled error" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_a_script_that_never_stops_still_exits(tmp_path: Path, url: str) -> None:
    """A program that leaves instances and listeners running exits when it ends."""
    result = run(tmp_path, url, """
        exp.start(**USER)
        exp.start(**DEVICE)
        listener = exp.get_channel('never_stopped').listen('x')
        report(exp.get_device('test-uuid').name)
    """)
    assert reported(result) == "lobby"


# -- logging ------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_twisted_logs_under_the_exp_logger(tmp_path: Path, url: str, level: str) -> None:
    """With the exp logger at DEBUG or INFO, Twisted's log lines appear under the name exp."""
    result = run(tmp_path, url, """
        import logging
        logging.basicConfig(stream=sys.stdout, format='%(name)s|%(levelname)s|%(message)s')
        logging.getLogger('exp').setLevel(logging.{level})
        exp.start(**USER)
        exp.get_channel('logging').listen('x')
        exp.get_device('test-uuid')
        exp.stop()
    """.replace("{level}", level))
    names = {line.split("|")[0] for line in result.stdout.splitlines() if "|" in line}
    assert names == {"exp"}, result.stdout
    assert "exp|INFO|Starting factory" in result.stdout


def test_exp_logger_level_filters_twisted_lines(tmp_path: Path, url: str) -> None:
    """With the exp logger at WARNING, Twisted's info lines are not shown."""
    result = run(tmp_path, url, """
        import logging
        logging.basicConfig(stream=sys.stdout, level=logging.DEBUG,
                            format='%(name)s|%(levelname)s|%(message)s')
        logging.getLogger('exp').setLevel(logging.WARNING)
        exp.start(**USER)
        exp.get_device('test-uuid')
        exp.stop()
    """)
    assert "|INFO|" not in result.stdout, result.stdout
