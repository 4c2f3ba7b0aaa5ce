"""
Every code block of README.md is run, so the documentation cannot rot:
Python blocks as programs (or as pytest tests when they define tests), JSON
blocks loaded as seeds, shell lines as the commands they are (C{make}
dry-run, C{twistd} started until it serves, then stopped).  C{text} blocks
are synopses and layouts, checked only against the options they name.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exp.server import load_seed
from exp.server.tap import Options as ServerOptions
from exp.tap import Options as DeviceOptions

from ._processes import TWISTD, free_port
from ._services import Engines

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```$", README, re.S | re.M)
TIMEOUT = 120.0


def blocks(language: str) -> list[str]:
    return [code for lang, code in BLOCKS if lang == language]


def test_every_block_has_a_known_language() -> None:
    """Each fenced block says what it is, so that none escapes these tests."""
    fences = re.findall(r"^```(\S*)$", README, re.M)
    openings = fences[0::2]
    assert openings and all(lang in ("python", "sh", "json", "text") for lang in openings), fences
    assert len(BLOCKS) == len(openings)


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_block_runs(index: int, tmp_path: Path) -> None:
    """A Python block of the README runs to completion (as pytest if it defines tests)."""
    code = blocks("python")[index]
    script = tmp_path / f"test_readme_block_{index}.py"
    script.write_text(code, encoding="utf-8")
    if re.search(r"^(async )?def test_", code, re.M):
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)]
    else:
        command = [sys.executable, str(script)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_json_blocks_are_seeds_the_server_loads(tmp_path: Path) -> None:
    """The seed format shown in the README is a seed the server accepts."""
    for index, code in enumerate(blocks("json")):
        document = json.loads(code)
        (tmp_path / "content").mkdir(exist_ok=True)
        path = tmp_path / f"seed{index}.json"
        path.write_text(json.dumps(document), encoding="utf-8")
        organizations = load_seed(str(path))
        assert organizations[0].name == "scala"


def shell_lines() -> list[list[str]]:
    lines = []
    for code in blocks("sh"):
        for line in code.splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(shlex.split(line))
    return lines


def test_make_lines_name_real_targets() -> None:
    """Every make command of the README is a target the Makefile has (make -n)."""
    commands = [args for args in shell_lines() if args[0] == "make"]
    assert {"demo", "test"} <= {args[1] for args in commands}
    for args in commands:
        result = subprocess.run(["make", "-n", *args[1:]], cwd=REPO, capture_output=True,
                                text=True, timeout=TIMEOUT)
        assert result.returncode == 0, result.stderr


def test_twistd_lines_parse() -> None:
    """Every twistd command of the README is accepted by its plugin's options."""
    commands = [args for args in shell_lines() if args[0] == "twistd"]
    assert commands
    env = {"UUID": "test-uuid", "SECRET": "test-secret"}
    for args in commands:
        args = [os.path.expandvars(a) if "$" not in a else env[a.strip("${}\"")] for a in args]
        assert args[1] == "-n"
        options = {"exp": DeviceOptions, "exp-server": ServerOptions}[args[2]]()
        options.parseOptions(args[3:])


def test_local_twistd_lines_serve(tmp_path: Path, engines: Engines) -> None:
    """
    The README's twistd commands that need no account start, work, and stop on
    SIGTERM (with this run's PostgreSQL and Redis for theirs).
    """
    for args in shell_lines():
        if args[0] != "twistd" or "--host" in args:
            continue
        if args[2] == "exp-server":
            port = free_port()
            args = [a.replace("9000", str(port)) for a in args]
            args = [engines.postgresql().database() if a.startswith("postgresql://") else
                    engines.redis().url if a.startswith("redis://") else a for a in args]
            ready = f"listening on IPv4Address(type='TCP', host='127.0.0.1', port={port})"
        else:
            ready = "authenticated as device test-uuid of scala"
        log = tmp_path / "twistd.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [*TWISTD, "--pidfile=", *args[1:]], cwd=REPO if args[2] == "exp" else tmp_path,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        try:
            deadline = time.monotonic() + TIMEOUT
            while ready not in log.read_text(errors="replace"):
                assert process.poll() is None, log.read_text(errors="replace")
                assert time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.1)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(TIMEOUT)
        text = log.read_text(errors="replace")
        assert "Server Shut Down." in text and "Traceback" not in text, text


def test_text_synopses_name_real_options() -> None:
    """The synopsis of twistd exp-server names only options the server has."""
    synopsis = next(code for code in blocks("text") if "twistd -n exp-server" in code)
    known = {f"--{name}" for name in ServerOptions().synonyms}
    named = set(re.findall(r"--[a-z-]+", synopsis))
    assert named and named <= known, named - known
