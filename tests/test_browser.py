"""
The official JS SDK's browser bundle (npm C{exp-sdk} 5.0.0, C{dist/}) in
headless Chromium, on a page served from another origin than the server: it
logs in, calls REST, reads an error, listens on a channel and answers a
broadcast sent from Python, over WebSocket and over long-polling.

Chromium is Debian's (C{/usr/bin/chromium}) driven by Playwright for Python,
which downloads no browser here.  Playwright's sync API runs its own event
loop, so it runs in a thread of its own, beside pytest-twisted's reactor;
the EXP server and the page's site are child processes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from exp.protocol import encode_channel
from exp.server.testing import DEMO, TWISTD, ServerProcess, free_port

HERE = Path(__file__).parent
BUNDLE = HERE / "interop" / "node_modules" / "exp-sdk" / "dist" / "exp-sdk-5.0.0.js"
CHROMIUM = "/usr/bin/chromium"
#: The network here is closed: without these, Chromium's own connections
#: (updates, sync, QUIC probes) are refused many at a time.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT = 60.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"Debian's chromium package is not installed ({CHROMIUM})"),
]


def wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the page's site exited ({process.returncode})"
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer in time")


def call(server: ServerProcess, method: str, path: str, body: Any,
         token: str | None = None) -> Any:
    """A JSON call to the server from Python (no Origin: not subject to CORS)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(server.url + path, json.dumps(body).encode(),
                                     headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
        return json.loads(answer.read())


def access_log(server: ServerProcess) -> list[tuple[str, str, int, str]]:
    """(method, URI, status, referrer) of each request in the server's access log."""
    line = re.compile(r'"([A-Z]+) (\S+) HTTP/1\.1" (\d{3}) \S+ "([^"]*)"')
    return [(m[1], m[2], int(m[3]), m[4]) for m in line.finditer(server.log())]


class Page:
    """The test page in a Playwright page, with what its console said."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console: list[str] = []
        page.on("console", lambda message: self.console.append(message.text))
        page.on("pageerror", lambda error: self.console.append(f"page error: {error}"))

    def state(self) -> dict[str, Any]:
        return dict(self.page.evaluate("window.state || {}"))

    def wait_for(self, step: str) -> Any:
        """The value the page recorded for C{step}, failing at its first error."""
        from playwright.sync_api import TimeoutError

        try:
            self.page.wait_for_function(
                f"window.state && (window.state.error || {step!r} in state)",
                timeout=TIMEOUT * 1000)
        except TimeoutError:
            raise AssertionError(f"no {step} in time", self.state(), self.console) from None
        state = self.state()
        assert state["error"] is None, (state, self.console)
        return state[step]


def run_page(context: Any, page_url: str, server: ServerProcess, token: str,
             n: int) -> dict[str, Any]:
    """Load C{page_url}, let it work, broadcast C{n} to it; the page's state."""
    page = Page(context.new_page())
    page.page.goto(page_url)
    assert page.wait_for("listening") is True, page.console
    channel = encode_channel(DEMO["organization"], "browser-test")
    responses = call(server, "POST", "/api/networks/current/broadcasts?timeout=10000",
                     {"name": "hello", "channel": channel, "payload": {"n": n}}, token)
    assert page.wait_for("received") == {"n": n}
    state = page.state()
    state["responses"] = responses
    page.page.evaluate("window.exp.stop()")
    page.page.close()
    return state


def drive(profile: str, pages: dict[str, str], server: ServerProcess,
          token: str) -> dict[str, Any]:
    """Run in a thread of its own: Chromium through Playwright's sync API."""
    from playwright.sync_api import sync_playwright

    api = server.url
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            results = {
                transport: run_page(context, f"{pages['allowed']}/page.html?api={api}"
                                    f"&transport={transport}", server, token, n)
                for n, transport in enumerate(("websocket", "polling"), 1)
            }
            # A page of an origin not given to --cors-origin cannot even log in.
            denied = context.new_page()
            denied.goto(f"{pages['denied']}/page.html")
            results["denied"] = denied.evaluate("""async (api) => {
                try {
                    const answer = await fetch(api + '/api/auth/login', {
                        method: 'POST', headers: {'Content-Type': 'application/json'},
                        body: JSON.stringify({username: 'test@goexp.io',
                                              password: 'test-Password1',
                                              organization: 'scala'})});
                    return 'answered ' + answer.status;
                } catch (error) {
                    return error.name;
                }
            }""", api)
        finally:
            context.close()
    return results


def test_official_sdk_in_a_page_of_another_origin(tmp_path: Path) -> None:
    """The browser bundle logs in, calls REST, reads errors and answers a broadcast."""
    assert BUNDLE.exists(), f"{BUNDLE} is missing: cd tests/interop && npm ci"
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(HERE / "browser" / "page.html", site / "page.html")
    shutil.copy(BUNDLE, site / BUNDLE.name)
    ports = {"allowed": free_port(), "denied": free_port()}
    pages = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    web = subprocess.Popen(
        [*TWISTD, "-n", "--pidfile=", "--logfile", str(tmp_path / "site.log"), "web",
         "--path", str(site),
         *(f"--listen=tcp:{port}:interface=127.0.0.1" for port in ports.values())],
        cwd=tmp_path, stdin=subprocess.DEVNULL)
    try:
        for url in pages.values():
            wait_until_serving(url + "/page.html", web)
        with ServerProcess("--cors-origin", pages["allowed"]) as server:
            token = call(server, "POST", "/api/auth/login", {
                "username": DEMO["username"], "password": DEMO["password"],
                "organization": DEMO["organization"]})["token"]
            with ThreadPoolExecutor(1) as thread:
                results = thread.submit(drive, str(tmp_path / "profile"), pages, server,
                                        token).result()
            log = access_log(server)
    finally:
        web.terminate()
        web.wait(TIMEOUT)

    for n, transport in enumerate(("websocket", "polling"), 1):
        state = results[transport]
        assert state["identity"] == {"type": "user", "organization": "scala"}, state
        assert "test-uuid" in state["devices"], state
        assert state["data"] == {"origin": pages["allowed"]}, state
        assert state["notFound"] == {"status": 404, "code": "resource.notFound"}, state
        assert state["responses"] == [{"seen": n, "origin": pages["allowed"]}], state
        assert state["transport"] == transport, state
    assert results["denied"] == "TypeError", results

    # What the browser sent from the page's origin: the preflights that the
    # Authorization and JSON Content-Type headers need, answered 204, then the
    # calls; the network's polling requests; and the denied origin's preflight.
    def seen(method: str, path: str, status: int, page: str = "allowed") -> bool:
        return any(m == method and uri.split("?")[0] == path and code == status
                   and referrer.startswith(pages[page])
                   for m, uri, code, referrer in log)

    for path in ("/api/auth/login", "/api/devices", "/api/data/browser/from-" +
                 str(ports["allowed"]), "/api/networks/current/responses"):
        assert seen("OPTIONS", path, 204), (path, log)
    assert seen("POST", "/api/auth/login", 200) and seen("GET", "/api/devices", 200), log
    assert seen("GET", "/api/things/no-such-thing", 404), log
    assert seen("GET", "/socket.io/", 200) and seen("POST", "/socket.io/", 200), log
    assert seen("OPTIONS", "/api/auth/login", 403, "denied"), log
    assert not seen("POST", "/api/auth/login", 200, "denied"), log
