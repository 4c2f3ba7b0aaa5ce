"""
The official EXP JavaScript SDK against the local server: npm's exp-sdk 5.0.0,
unmodified (pinned in tests/interop/package.json), driven in node by
tests/interop/jssdk.js, which calls everything the SDK documents against a
server with the demo seed and prints one JSON line per check.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from exp.server.tap import Options
from exp.server.testing import ServerProcess

INTEROP = Path(__file__).parent / "interop"
PROGRAM = INTEROP / "jssdk.js"

#: Seconds the whole run may take; it takes a few, each check is bounded by its own timeout.
RUN_TIMEOUT = 180.0


def _installed_sdk() -> str:
    """The node executable, once node and the pinned exp-sdk are there."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; this test needs node and npm: install them, "
                    "then run `make test`")
    wanted = json.loads((INTEROP / "package.json").read_text())["dependencies"]["exp-sdk"]
    installed = INTEROP / "node_modules" / "exp-sdk" / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != wanted:
        pytest.fail(f"tests/interop/node_modules has no exp-sdk {wanted}: run `make test`")
    return node


def _server_options() -> list[str]:
    """Options of the server: the feeds' sources are on loopback, allow them if need be."""
    if "feed-allow" in Options():
        return ["--feed-allow", "127.0.0.0/8"]
    return []


def _checks(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith('{"check"')]


@pytest.mark.slow
def test_official_js_sdk_works_unchanged() -> None:
    """Every call the official JS SDK documents works against the demo seed, unchanged."""
    node = _installed_sdk()
    with ServerProcess(*_server_options()) as server:
        try:
            run = subprocess.run(
                [node, str(PROGRAM), "--url", server.url], cwd=INTEROP,
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RUN_TIMEOUT,
            )
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ""
            pytest.fail(f"jssdk.js did not end within {RUN_TIMEOUT} s; its checks so far:\n{out}")
        log = server.log()
    checks = _checks(run.stdout)
    failed = [f"{c['check']}: {c.get('error')}" for c in checks if not c["ok"]]
    report = (f"{len(failed)} of {len(checks)} checks of the official JS SDK failed:\n"
              + "\n".join(failed)
              + f"\n\nnode's stderr:\n{run.stderr[-4000:]}\nserver log (end):\n{log[-4000:]}")
    assert checks, report
    assert not failed, report
    assert run.returncode == 0, report
