"""The API reference builds from the docstrings with no broken reference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_pydoctor_builds_without_warnings(tmp_path: Path) -> None:
    """`make docs`'s pydoctor run, with warnings as errors, succeeds."""
    result = subprocess.run(
        [sys.executable, "-m", "pydoctor", "--project-name=exp", "--project-base-dir=.",
         f"--html-output={tmp_path}", "--docformat=epytext", "--warnings-as-errors", "-q",
         "exp"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "exp.twisted.ExpService.html").exists()
