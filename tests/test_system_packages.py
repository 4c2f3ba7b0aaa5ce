"""
C{tests/system-packages.sh}, which C{make test} runs first, on a simulated
machine: an empty system root, and a PATH of nothing but stand-in
C{apt-get} and C{sudo} programs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "system-packages.sh"
ALL = ["redis-server", "postgresql", "chromium"]

#: apt-get (and sudo -n apt-get) as a stand-in: each call is recorded and
#: prints errors; with C{FAIL} set every call fails, otherwise an install
#: fails until an update has run, and then puts the programs of its
#: packages where the script looks for them.
STAND_IN = """#!/bin/sh
[ "$1" = -n ] && shift && [ "$1" = apt-get ] && shift
echo "$*" >> "$CALLS"
for i in 1 2 3 4 5 6 7 8 9 10; do echo "E: stand-in error $i" >&2; done
[ -n "$FAIL" ] && exit 100
case "$*" in
*update) : > "$CALLS.updated" ;;
*install*)
    [ -e "$CALLS.updated" ] || exit 100
    for package in "$@"; do
        case "$package" in
        redis-server) : > "$BIN/redis-server" && /bin/chmod +x "$BIN/redis-server" ;;
        postgresql) /bin/mkdir -p "$ROOT/usr/lib/postgresql/17/bin" &&
            : > "$ROOT/usr/lib/postgresql/17/bin/initdb" ;;
        chromium) /bin/mkdir -p "$ROOT/usr/bin" && : > "$ROOT/usr/bin/chromium" &&
            /bin/chmod +x "$ROOT/usr/bin/chromium" ;;
        esac
    done ;;
esac
"""


class Machine:
    """A system root and a PATH, with the stand-ins, and the script run on them."""

    def __init__(self, tmp_path: Path) -> None:
        self.root, self.bin, self.calls = tmp_path / "root", tmp_path / "bin", tmp_path / "calls"
        self.log = tmp_path / "exp-system-packages.log"
        self.env = {"PATH": str(self.bin), "EXP_TEST_SYSROOT": str(self.root),
                    "TMPDIR": str(tmp_path), "ROOT": str(self.root), "BIN": str(self.bin),
                    "CALLS": str(self.calls), "FAIL": ""}
        self.root.mkdir()
        self.bin.mkdir()
        for name in ("apt-get", "sudo"):
            (self.bin / name).write_text(STAND_IN)
            (self.bin / name).chmod(0o755)

    def run(self, fail: bool = False) -> subprocess.CompletedProcess[str]:
        self.calls.unlink(missing_ok=True)
        return subprocess.run(["/bin/bash", str(SCRIPT)], env=dict(self.env, FAIL=fail * "1"),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60)

    def apt_get_calls(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


def test_cannot_install_says_what_to_install_in_one_line(tmp_path: Path) -> None:
    """When apt-get (or sudo) fails, one line names the packages, and the status is 1."""
    machine = Machine(tmp_path)
    result = machine.run(fail=True)
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert "'sudo apt-get install redis-server postgresql chromium'" in line, line
    assert f"its output is in {machine.log}" in line
    assert "E: stand-in error" in machine.log.read_text()
    packages = " ".join(ALL)
    assert machine.apt_get_calls() == [f"-q -y install {packages}", "-q -y update"]


def test_installs_after_one_update(tmp_path: Path) -> None:
    """An install that fails without an update is tried again after one."""
    machine = Machine(tmp_path)
    result = machine.run()
    packages = " ".join(ALL)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"installed Debian's {packages} (apt-get)\n"
    assert machine.apt_get_calls() == [
        f"-q -y install {packages}", "-q -y update", f"-q -y install {packages}"]


@pytest.mark.parametrize("missing", [*ALL, None])
def test_only_what_is_missing_is_installed(tmp_path: Path, missing: str | None) -> None:
    """With the programs in place, apt-get installs only what lacks, or is not run at all."""
    machine = Machine(tmp_path)
    assert machine.run().returncode == 0
    if missing == "redis-server":
        (machine.bin / "redis-server").unlink()
    elif missing == "postgresql":
        (machine.root / "usr/lib/postgresql/17/bin/initdb").unlink()
    elif missing == "chromium":
        (machine.root / "usr/bin/chromium").unlink()
    result = machine.run()
    assert result.returncode == 0, result.stderr
    if missing is None:
        assert (result.stdout, result.stderr) == ("", "")
        assert machine.apt_get_calls() == []
    else:
        assert machine.apt_get_calls() == [f"-q -y install {missing}"]


def test_an_existing_postgresql_server_is_enough(tmp_path: Path) -> None:
    """EXP_TEST_POSTGRESQL (a server the tests use instead) stands for the binaries."""
    machine = Machine(tmp_path)
    machine.env["EXP_TEST_POSTGRESQL"] = "postgresql://exp@db.example/exp"
    machine.run()
    assert machine.apt_get_calls()[-1] == "-q -y install redis-server chromium"
