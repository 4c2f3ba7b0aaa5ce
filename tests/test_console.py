"""
The web console (C{/console/}) in a real browser: Debian's Chromium, headless,
driven by Playwright, against a local server in a child process and SDK
instances in others (L{tests._peer}).  Each test saves screenshots into the
folder named by C{EXP_SCREENSHOTS} (C{make test} names it), so that a person
can look; one of them becomes the README's (C{docs/console.png}) when
C{EXP_README_SCREENSHOT} is set (C{make readme-screenshot}), so that a test run
leaves the checkout as it was.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from exp.server.testing import DEMO, ServerProcess

from ._peer import REPO, Peer

pytestmark = pytest.mark.slow

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = "/usr/bin/chromium"
#: This machine's network is closed: Chromium's own connections are turned off.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: Generous bound (milliseconds) on what the page should show soon: only against hangs.
PATIENCE = 30_000
README_SCREENSHOT = REPO / "docs" / "console.png"
WIDE = {"width": 1280, "height": 800}
NARROW = {"width": 390, "height": 800}

expect.set_options(timeout=PATIENCE)


@pytest.fixture(scope="module")
def shots() -> Path:
    """Where screenshots go: C{$EXP_SCREENSHOTS}, else C{test-screenshots/} here."""
    folder = Path(os.environ.get("EXP_SCREENSHOTS") or REPO / "test-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess() as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert os.path.exists(CHROMIUM), "Debian's chromium is needed: apt-get install chromium"
    with playwright_api.sync_playwright() as playwright:
        # A fresh temporary profile per launch; no browser is downloaded.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A new browser context (empty sessionStorage); no script error may happen in it."""
    context = browser.new_context(viewport=WIDE)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == []


def sign_in(page: Any, server: ServerProcess, password: str = DEMO["password"]) -> None:
    page.goto(server.url + "/")
    page.get_by_label("Username").fill(DEMO["username"])
    page.get_by_label("Password").fill(password)
    page.get_by_label("Organization").fill(DEMO["organization"])
    page.get_by_role("button", name="Sign in").click()


def signed_in(page: Any, server: ServerProcess) -> None:
    sign_in(page, server)
    expect(page.get_by_role("heading", name="Devices")).to_be_visible()
    expect(page.locator("body")).to_have_attribute("data-network", "online")


def badge(page: Any, uuid: str) -> Any:
    return page.locator(f'tr[data-uuid="{uuid}"] [data-status]')


def go(page: Any, screen: str) -> None:
    page.get_by_role("navigation").get_by_role("link", name=screen, exact=True).click()
    expect(page.locator("body")).to_have_attribute("data-screen", screen.lower())


def unlabelled_controls(page: Any) -> list[str]:
    """The form controls that no label names."""
    return list(page.evaluate("""() => [...document.querySelectorAll(
        'input:not([type=hidden]), textarea, select')]
        .filter((e) => !e.labels.length && !e.getAttribute('aria-label'))
        .map((e) => e.outerHTML)"""))


def monitor(page: Any, channel: str) -> None:
    """Listen on C{channel} in the monitor."""
    go(page, "Monitor")
    page.get_by_label("Channel name").fill(channel)
    page.get_by_role("button", name="Listen").click()
    expect(page.get_by_text(f"Listening on {channel}.")).to_be_visible()


def send(page: Any, name: str, payload: str, timeout: str = "2") -> None:
    page.get_by_label("Event name").fill(name)
    page.get_by_label("Payload (JSON)").fill(payload)
    page.get_by_label("Timeout (seconds)").fill(timeout)
    page.get_by_role("button", name="Send").click()


# -- the server's side of the console ---------------------------------------------------


def fetch(server: ServerProcess, path: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection(urlsplit(server.url).netloc, timeout=30)
    connection.request("GET", path)
    return connection.getresponse()


def test_console_files_and_their_headers(server: ServerProcess) -> None:
    """/ redirects to /console/; its files have a strict policy of their own, not a sandbox."""
    root = fetch(server, "/")
    assert (root.status, root.getheader("location")) == (302, "/console/")
    page = fetch(server, "/console/")
    assert page.status == 200
    assert page.getheader("content-type") == "text/html; charset=utf-8"
    assert page.getheader("x-content-type-options") == "nosniff"
    policy = page.getheader("content-security-policy")
    assert "default-src 'self'" in policy and "connect-src 'self' ws: wss:" in policy
    assert "img-src 'self' data:" in policy and "sandbox" not in policy
    assert "<script" in page.read().decode() and "unsafe-inline" not in policy
    script = fetch(server, "/console/network.js")
    assert script.getheader("content-type").startswith("text/javascript")
    missing = fetch(server, "/console/nothing.js")
    assert missing.status == 404
    assert json.loads(missing.read())["code"] == "route.notFound"
    # The console's own files only: no third-party code, nothing from elsewhere.
    folder = REPO / "exp" / "server" / "console"
    assert sorted(p.name for p in folder.iterdir()) == [
        "app.js", "index.html", "network.js", "style.css"]
    for path in folder.iterdir():
        assert not re.search(r"(src|href)=\"(https?:)?//", path.read_text()), path


# -- in the browser ---------------------------------------------------------------------


def test_sign_in_after_a_bad_password(page: Any, server: ServerProcess, shots: Path) -> None:
    """The server's refusal is shown; then signed in, kept on reload, and signed out."""
    sign_in(page, server, password="not-the-password")
    expect(page.get_by_role("alert")).to_have_text("wrong username, password or organization")
    assert page.url.endswith("/console/#/signin") or page.url.endswith("/console/")
    page.screenshot(path=shots / "sign-in-refused.png")
    page.get_by_label("Password").fill(DEMO["password"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Devices")).to_be_visible()
    expect(page.get_by_text(f"{DEMO['username']} · {DEMO['organization']}")).to_be_visible()
    stored = page.evaluate("() => JSON.parse(sessionStorage.getItem('exp.console.auth'))")
    assert stored["identity"]["username"] == DEMO["username"]
    page.reload()
    expect(page.get_by_role("heading", name="Devices")).to_be_visible()
    page.screenshot(path=shots / "signed-in.png")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("() => sessionStorage.getItem('exp.console.auth')") is None
    assert unlabelled_controls(page) == []


def test_a_device_goes_online_and_offline(page: Any, server: ServerProcess,
                                          shots: Path) -> None:
    """Live, with no reload: online when its ExpService connects, offline when it stops."""
    signed_in(page, server)
    status = badge(page, DEMO["device_uuid"])
    expect(status).to_have_text("offline")
    peer = Peer(server.url, uuid=DEMO["device_uuid"], secret=DEMO["device_secret"])
    try:
        peer.expect("connected")
        expect(status).to_have_text("online")
        page.screenshot(path=shots / "device-online.png")
        if os.environ.get("EXP_README_SCREENSHOT"):  # make readme-screenshot
            README_SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copyfile(shots / "device-online.png", README_SCREENSHOT)
    finally:
        peer.stop()
    expect(status).to_have_text("offline")
    page.screenshot(path=shots / "device-offline.png")


def test_pairing_a_device_by_its_code(page: Any, server: ServerProcess, shots: Path) -> None:
    """A wrong code is refused; the right one pairs the SDK, which then answers as the device."""
    peer = Peer(server.url, allow_pairing=True, listen=[{"channel": "pair-check",
                                                         "name": "hello"}])
    try:
        code = peer.expect("pairing")["code"]
        signed_in(page, server)
        go(page, "Pair")
        page.get_by_label("Pairing code").fill("WRONG1")
        page.get_by_role("button", name="Pair").click()
        expect(page.get_by_role("alert")).to_have_text("no device is waiting with that code")
        page.get_by_label("Pairing code").fill(code)
        page.get_by_label("Device name").fill("paired in the browser")
        page.get_by_role("button", name="Pair").click()
        expect(page.get_by_text("Paired paired in the browser as device")).to_be_visible()
        page.screenshot(path=shots / "paired.png")
        uuid = peer.expect("paired")["identity"]["uuid"]
        peer.expect("listening")

        monitor(page, "pair-check")
        send(page, "hello", '{"who": "are you?"}', timeout="3")
        responses = page.locator(".responses")
        expect(responses).to_contain_text("1 response")
        expect(responses).to_contain_text(f'"from": "{uuid}"')
        page.screenshot(path=shots / "paired-device-answers.png")
    finally:
        peer.stop()


def test_the_monitor_shows_a_broadcast_of_an_sdk_instance(page: Any, server: ServerProcess,
                                                          shots: Path) -> None:
    """Name, payload and time of a broadcast that an ExpService sends."""
    peer = Peer(server.url, uuid=DEMO["device_uuid"], secret=DEMO["device_secret"])
    try:
        peer.expect("connected")
        signed_in(page, server)
        monitor(page, "monitor-test")
        peer.send(broadcast={"channel": "monitor-test", "name": "hello",
                             "payload": {"from": "the sdk", "n": 1}, "timeout": 0})
        row = page.locator("table.log tbody tr").first
        expect(row).to_contain_text("hello")
        expect(row).to_contain_text('"from": "the sdk"')
        expect(row.locator("td").first).to_have_text(re.compile(r"^\d\d:\d\d:\d\d\.\d{3}$"))
        page.screenshot(path=shots / "monitor.png")
    finally:
        peer.stop()


def test_a_broadcast_from_the_console_is_answered(page: Any, server: ServerProcess,
                                                  shots: Path) -> None:
    """An SDK listener answers the console's broadcast; the response is shown."""
    peer = Peer(server.url, uuid=DEMO["device_uuid"], secret=DEMO["device_secret"],
                listen=[{"channel": "console-test", "name": "ping"}])
    try:
        peer.expect("listening")
        signed_in(page, server)
        monitor(page, "console-test")
        send(page, "ping", "not json")
        expect(page.get_by_role("alert")).to_contain_text("The payload is not valid JSON")
        send(page, "ping", '{"x": 1}')
        responses = page.locator(".responses")
        expect(responses).to_contain_text("1 response")
        expect(responses).to_contain_text('"echo": {')
        assert peer.expect("received")["payload"] == {"x": 1}
        expect(page.get_by_role("alert")).to_be_hidden()
        page.screenshot(path=shots / "broadcast-answered.png")
        # A system channel is the server's: its refusal is shown.
        page.get_by_label("System").check()
        page.get_by_role("button", name="Listen").click()
        send(page, "ping", "1")
        expect(page.get_by_role("alert")).to_have_text(
            "this identity may not use that channel")
    finally:
        peer.stop()


def test_a_data_edit_is_read_back_through_the_sdk(page: Any, server: ServerProcess,
                                                  shots: Path) -> None:
    """Edit a value as JSON (invalid JSON is refused with a message); the SDK reads it."""
    signed_in(page, server)
    go(page, "Data")
    page.get_by_role("button", name="Open cats / fluffy").click()
    editor = page.get_by_role("form", name="Data item cats / fluffy")
    value = editor.get_by_label("Value (JSON)")
    expect(value).to_have_value(re.compile(r'"age": \d+'))
    value.fill('{"age": ')
    editor.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_contain_text("The value is not valid JSON")
    value.fill('{"age": 7, "edited": "in the browser"}')
    editor.get_by_role("button", name="Save").click()
    expect(editor.get_by_role("status")).to_contain_text("Saved at")
    page.screenshot(path=shots / "data-edited.png")
    peer = Peer(server.url, uuid=DEMO["device_uuid"], secret=DEMO["device_secret"])
    try:
        peer.expect("connected")
        peer.send(get_data={"group": "cats", "key": "fluffy"})
        assert peer.expect("data")["value"] == {"age": 7, "edited": "in the browser"}
    finally:
        peer.stop()
    # A new item, then deleted.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_label("Group").fill("console")
    page.get_by_label("Key").fill("new")
    page.get_by_role("form", name="New item").get_by_label("Value (JSON)").fill("[1, 2]")
    page.get_by_role("button", name="Create").click()
    created = page.get_by_role("form", name="Data item console / new")
    expect(created.get_by_label("Value (JSON)")).to_have_value("[\n  1,\n  2\n]")
    created.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("button", name="Open console / new")).to_have_count(0)


def test_content_locations_things_and_experiences(page: Any, server: ServerProcess,
                                                  shots: Path) -> None:
    """Image previews and variants load, apps and URLs are linked, zones list their
    devices and things, documents are edited as JSON; every control is labelled."""
    signed_in(page, server)
    assert unlabelled_controls(page) == []
    go(page, "Content")
    page.locator("summary", has_text="images").click()
    original = page.get_by_role("img", name="Preview of logo.png", exact=True)
    variant = page.get_by_role("img", name="Preview of logo.png, variant small")
    for image in (original, variant):
        expect(image).to_be_visible()
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                               arg=image.element_handle(), timeout=PATIENCE)
    page.locator("summary", has_text="apps").click()
    app = page.get_by_role("link", name="Open the app")
    expect(app).to_have_attribute(
        "href", re.compile(r"^/api/delivery/apps/hello/index\.html\?_rt="))
    expect(page.get_by_role("link", name="https://www.goexp.io/")).to_have_count(1)
    page.screenshot(path=shots / "content.png", full_page=True)

    go(page, "Locations")
    layout = page.get_by_role("img", name="Layout of head office")
    expect(layout).to_be_visible()
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                           arg=layout.element_handle(), timeout=PATIENCE)
    entrance = page.locator('[data-zone="entrance"]')
    expect(entrance).to_contain_text("lobby")
    expect(entrance).to_contain_text("badge reader")
    expect(page.locator('[data-zone="cafe"]')).to_contain_text("No devices")
    page.screenshot(path=shots / "locations.png", full_page=True)

    go(page, "Things")
    page.get_by_role("button", name="Edit badge reader").click()
    document = page.get_by_label("Document (JSON)")
    expect(document).to_have_value(re.compile(r'"uuid": "demo-thing"'))
    edited = json.loads(document.input_value())
    edited["note"] = "set in the console"
    document.fill(json.dumps(edited))
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status").filter(has_text="Saved at")).to_be_visible()
    assert unlabelled_controls(page) == []
    page.screenshot(path=shots / "things.png", full_page=True)

    go(page, "Experiences")
    expect(page.get_by_role("cell", name="welcome", exact=True)).to_be_visible()
    page.get_by_role("button", name="New experience").click()
    page.get_by_label("Document (JSON)").fill('{"name": "from the console"}')
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("cell", name="from the console", exact=True)).to_be_visible()
    for screen in ("Devices", "Pair", "Monitor", "Data"):
        go(page, screen)
        assert unlabelled_controls(page) == [], screen


def test_the_narrow_layout(browser: Any, server: ServerProcess, shots: Path) -> None:
    """At 390 px wide nothing is wider than the screen, and every section is reachable."""
    context = browser.new_context(viewport=NARROW)
    page = context.new_page()
    try:
        signed_in(page, server)
        for screen in ("Devices", "Monitor", "Data", "Content", "Locations", "Things"):
            go(page, screen)
            page.wait_for_load_state("networkidle")
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= NARROW["width"], (screen, width)
            page.screenshot(path=shots / f"narrow-{screen.lower()}.png", full_page=True)
        expect(badge(page, DEMO["device_uuid"])).to_have_count(0)  # not on this screen
        go(page, "Devices")
        expect(badge(page, DEMO["device_uuid"])).to_be_visible()
    finally:
        context.close()


def test_a_lost_connection_shows_a_banner_and_reconnects(browser: Any, tmp_path: Path,
                                                         shots: Path) -> None:
    """The server goes away: a banner says so; it comes back: the console reconnects."""
    first = ServerProcess(directory=str(tmp_path)).start()
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    try:
        signed_in(page, first)
        first.stop()
        banner = page.get_by_role("status").filter(has_text="connection to the server was lost")
        expect(banner).to_be_visible()
        page.screenshot(path=shots / "connection-lost.png")
        again = ServerProcess(directory=str(tmp_path))
        again.port, again.url = first.port, first.url
        again.start()
        try:
            expect(page.locator("body")).to_have_attribute("data-network", "online")
            expect(banner).to_be_hidden()
            expect(badge(page, DEMO["device_uuid"])).to_have_text("offline")
        finally:
            again.stop()
    finally:
        context.close()


def test_channel_ids_are_the_servers(page: Any, server: ServerProcess) -> None:
    """The console's channel ids (A3) are Python's, past ASCII and with both flags."""
    from exp.protocol import ChannelId

    page.goto(server.url + "/console/")
    cases = [("scala", "ops", False, False), ("scala", "ü, ☃ and 😀", True, False),
             ("org \"q\"", "data:cats:fluffy", False, True), ("", "\\n\t", True, True)]
    got = page.evaluate("""async (cases) => {
        const { channelId } = await import("/console/network.js");
        return cases.map((c) => channelId(...c));
    }""", cases)
    assert got == [ChannelId(*case).encode() for case in cases]
