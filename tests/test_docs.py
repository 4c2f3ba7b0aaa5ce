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


#: The public modules whose every call has a docstring (rendered by pydoctor).
PUBLIC = ["exp", "exp.api", "exp.errors", "exp.twisted", "exp.twisted.testing"]


def undocumented(module_name: str) -> list[str]:
    """The public classes, functions, methods and properties of a module without a docstring."""
    import importlib
    import inspect

    module = importlib.import_module(module_name)
    missing = [] if (module.__doc__ or "").strip() else [module_name]
    for name in module.__all__:
        value = getattr(module, name)
        members: list[tuple[str, object]] = [(name, value)]
        for klass in value.__mro__ if inspect.isclass(value) else ():
            if klass.__module__.startswith("exp"):
                members += [(f"{name}.{attribute}", getattr(member, "__func__", member))
                            for attribute, member in vars(klass).items()
                            if not attribute.startswith("_")]
        for label, member in members:
            documented = (member.__doc__ or "").strip() and (
                not inspect.isclass(member) or "__doc__" in vars(member))
            if (callable(member) or isinstance(member, property)) and not documented:
                missing.append(f"{module_name}.{label}")
    return missing


@pytest.mark.parametrize("module_name", PUBLIC)
def test_every_public_call_has_a_docstring(module_name: str) -> None:
    """Every public class, function, method and property of the SDK says what it does."""
    assert undocumented(module_name) == []
