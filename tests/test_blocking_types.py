"""
mypy sees the blocking face's real types: a script written against it is
type-checked, and a misspelled call or attribute, or a wrong argument, is
an error before the script ever runs.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: A script that uses the blocking face as documented: no error.
GOOD = """
import exp

instance: exp.Exp = exp.start(uuid="u", secret="s", host="http://127.0.0.1:9000")
device = exp.get_device("uuid")
if device is not None:
    name: str | None = device.name
    device.name = "lobby"
    device.document["field"] = 123
    saved: exp.api.Device = device.save()
    location: exp.api.Location | None = device.get_location()
    zones: list[exp.api.Zone] = device.get_zones()
devices = exp.api.find_devices(name="lobby")
total: int = devices.total
first: exp.api.Device = devices[0]
channel = instance.get_channel("c", consumer=True)
listener: exp.api.Listener = channel.listen("e", max_queue=10)
broadcast = listener.wait(5)
if broadcast is not None:
    broadcast.respond({"answer": broadcast.payload})
responses: list[object] = channel.broadcast(name="e", timeout=5, payload="hello")
data = exp.api.create_data(key="4", group="cats", value={"name": "fluffy"})
data.value = {"generic": 1111}
content = exp.api.get_content("root")
url: str | None = content.get_url() if content is not None else None
exp.stop()
"""

#: Each line a mistake mypy must report, with the error code it reports.
BAD = {
    'exp.get_devcie("uuid")': "attr-defined",
    'exp.api.find_devics(name="lobby")': "attr-defined",
    "device.nmae": "attr-defined",
    'device.nmae = "lobby"': "attr-defined",
    "device.get_locaton()": "attr-defined",
    'exp.api.find_devices(name="lobby").totl': "attr-defined",
    'exp.get_channel("c").listen("e").wiat(5)': "attr-defined",
    'exp.get_channel("c").broadcast(1)': "arg-type",
    'exp.get_device("uuid", "extra")': "call-arg",
    "wrong: int = device.name": "assignment",
    "exp.start(uuid='u', secret='s').get_thing(uuid=1)": "arg-type",
}


def mypy(tmp_path: Path, name: str, source: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / name
    script.write_text(source, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "cache"), "--show-error-codes", "--no-pretty",
         str(script)],
        cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_mypy_reports_misspelled_calls_and_attributes(tmp_path: Path) -> None:
    """A documented script type-checks; each misspelled name or wrong argument fails mypy."""
    good = mypy(tmp_path, "good.py", textwrap.dedent(GOOD))
    assert good.returncode == 0, good.stdout + good.stderr

    header = 'import exp\n\ndevice = exp.api.Device.__new__(exp.api.Device)\n'
    lines = list(BAD)
    bad = mypy(tmp_path, "bad.py", header + "\n".join(lines) + "\n")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    reported: dict[int, str] = {}
    for found in re.finditer(r"bad\.py:(\d+): error: .*\[([a-z-]+)\]$", bad.stdout, re.M):
        reported.setdefault(int(found.group(1)), found.group(2))
    first = header.count("\n") + 1
    expected = {first + i: code for i, code in enumerate(BAD.values())}
    assert reported == expected, bad.stdout
