"""
The command line (C{twistd exp-server}) and the packaging that makes it
findable: run as real processes, and from a wheel installed outside the
checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import exp

from ._processes import STARTUP_TIMEOUT, TWISTD, free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
#: Generous, so that only a hang fails on time.
TIMEOUT = 300


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = STARTUP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def test_twistd_help_lists_exp_server(tmp_path: Path) -> None:
    """twistd --help (and python -m twisted --help) list the exp-server plugin."""
    for command in (TWISTD, [sys.executable, "-m", "twisted"]):
        result = run([*command, "--help"], tmp_path)
        assert result.returncode == 0, result.stderr
        lines = [line.split() for line in result.stdout.splitlines()]
        assert ["exp-server", "Run", "the", "local", "EXP", "server."] in lines, result.stdout


def test_exp_server_help_lists_options(tmp_path: Path) -> None:
    """twistd exp-server --help documents the server's options."""
    result = run([*TWISTD, "exp-server", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    for option in ("--listen", "--db", "--seed", "--content", "--public-url",
                   "--token-lifetime", "--max-body", "--max-broadcast-timeout",
                   "--cors-origin",
                   "--max-session-queue", "--max-session-messages", "--max-subscriptions",
                   "--max-sessions-per-identity", "--max-responses", "--max-response-bytes"):
        assert option in result.stdout, option


@pytest.mark.parametrize(("plugin", "synopsis_line"), [
    ("exp", r"^ +--organization O \| --uuid U --api-key K \| --allow-pairing\)$"),
    ("exp-server", r"^ +\[--seed seed\.json\] \[--content DIR\] \[--public-url URL\]$"),
])
def test_help_is_plain_text(tmp_path: Path, plugin: str, synopsis_line: str) -> None:
    """--help of both plugins shows no epytext markup, and its synopsis line by line."""
    result = run([*TWISTD, plugin, "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    help_ = result.stdout
    assert f"{plugin}: run " in help_
    for markup in ("C{", "L{", "I{"):
        assert markup not in help_, help_
    assert not re.search("::$", help_, re.M), help_  # a literal block's marker
    assert re.search(synopsis_line, help_, re.M), help_


def start_server(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run twistd -n exp-server with C{args}, expecting it to stop by itself."""
    db = tmp_path / "exp.sqlite3"
    result = run([*TWISTD, "-n", "--pidfile=", "exp-server", "--db", str(db),
                  "--listen", f"tcp:{free_port()}:interface=127.0.0.1", *args], tmp_path)
    return result, db


@pytest.mark.parametrize(("seed", "problem"), [
    ('{"organizations": [', "is not valid JSON"),
    ({"organizations": [{"name": "a"}, {"name": "a"}]}, "organization 'a' is declared twice"),
    ({"organizations": [{"name": "a", "devices": [{"uuid": "d"}]}]},
     "a device needs a non-empty string 'secret'"),
], ids=["not json", "duplicate organization", "device without secret"])
def test_bad_seed_stops_the_server(tmp_path: Path, seed: object, problem: str) -> None:
    """A bad --seed exits non-zero at once, naming the file and the problem, never listening."""
    path = tmp_path / "bad-seed.json"
    path.write_text(seed if isinstance(seed, str) else json.dumps(seed))
    result, db = start_server(tmp_path, "--seed", str(path))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert problem in output
    assert str(path) in output
    assert "listening" not in output and "Site starting" not in output
    assert not db.exists()


def test_missing_seed_file_stops_the_server(tmp_path: Path) -> None:
    """A --seed that does not exist exits non-zero naming it."""
    result, db = start_server(tmp_path, "--seed", str(tmp_path / "absent.json"))
    assert result.returncode != 0
    assert "cannot read seed file" in result.stderr + result.stdout
    assert "absent.json" in result.stderr + result.stdout
    assert not db.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--token-lifetime", "soon"], "--token-lifetime must be a number, not 'soon'"),
    (["--token-lifetime", "0"], "--token-lifetime must be positive"),
    (["--token-lifetime", "-60"], "--token-lifetime must be positive"),
    (["--max-body", "1.5"], "--max-body must be a number, not '1.5'"),
    (["--max-broadcast-timeout", "-1"], "--max-broadcast-timeout must be positive"),
])
def test_bad_numbers_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    """A bad number option is a usage error saying which option and why."""
    result, db = start_server(tmp_path, *args)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert not db.exists()


# -- packaging --------------------------------------------------------------------

_NOT_SOURCE = shutil.ignore_patterns(
    ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "dropin.cache",
    "*.sqlite3*", ".mypy_cache", ".ruff_cache", ".pytest_cache", "node_modules",
)

#: Run from outside the checkout: drop the checkout (which the editable
#: install puts on sys.path) so that only the installed wheel can be found.
_FROM_INSTALLED_WHEEL = """
import os, sys
repo, target, command = os.path.realpath(sys.argv[1]), os.path.realpath(sys.argv[2]), sys.argv[3]
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != repo]
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from importlib.metadata import distribution
import exp.server
dist = distribution("txexp")
assert os.path.realpath(dist.locate_file("")) == target, dist.locate_file("")
assert dist.version == exp.__version__, (dist.version, exp.__version__)
[maker] = [p for p in getPlugins(IServiceMaker) if p.tapname == "exp-server"]
plugin = sys.modules["twisted.plugins.exp_plugins"].__file__
for name in (exp.server.__file__, plugin):
    assert os.path.realpath(name).startswith(target + os.sep), name
exp.server.load_seed(exp.server.demo_seed_path())
print("installed-wheel-ok", flush=True)
sys.argv = [command, "--help"]
if command == "twistd":
    from twisted.scripts.twistd import run
    run()
else:
    import runpy
    runpy.run_module("twisted", run_name="__main__")
"""


def test_wheel_ships_plugin_typing_and_demo(tmp_path: Path) -> None:
    """
    The wheel, txexp of exp's version, has the twistd plugin, py.typed and the
    demo; installed alone, it is found: exp imports, twistd lists the plugin.
    """
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    wheels = tmp_path / "wheels"
    result = run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps",
                  "--no-build-isolation", "-q", "-w", str(wheels)], source, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = wheels.glob("*.whl")
    assert wheel.name == f"txexp-{exp.__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    assert f"txexp-{exp.__version__}.dist-info/METADATA" in names
    assert {"twisted/plugins/exp_plugins.py", "exp/py.typed",
            "exp/server/demo/seed.json"} <= names
    assert "twisted/plugins/__init__.py" not in names
    assert "twisted/__init__.py" not in names
    assert not any(name.endswith("dropin.cache") for name in names)
    demo = REPO / "exp" / "server" / "demo"
    shipped = {
        path.relative_to(REPO).as_posix() for path in demo.rglob("*")
        if path.is_file() and not any(p.startswith(".") for p in path.relative_to(demo).parts)
    }
    assert "exp/server/demo/content/images/logo.small.png" in shipped
    assert shipped <= names, sorted(shipped - names)
    console = {f"exp/server/console/{name}" for name in
               ("index.html", "app.js", "network.js", "style.css")}
    assert console <= names, sorted(console - names)
    entry_points = zipfile.ZipFile(wheel).read(
        f"txexp-{exp.__version__}.dist-info/entry_points.txt").decode()
    assert "exp = exp.cli:main" in entry_points  # the exp command

    target = tmp_path / "installed"
    result = run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                  "--target", str(target), str(wheel)], tmp_path, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target))
    for command in ("twistd", "twist"):
        result = run([sys.executable, "-c", _FROM_INSTALLED_WHEEL, str(REPO), str(target),
                      command], outside, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "installed-wheel-ok" in result.stdout
        assert "exp-server" in result.stdout.split("installed-wheel-ok", 1)[1]
