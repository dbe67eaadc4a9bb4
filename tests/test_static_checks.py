"""The package and the conformance runner stay type-checked and free of pyflakes errors.

The full gates are `make lint` (ruff check + ruff format --check, whole tree) and
`make typecheck` (mypy --strict, configured in pyproject.toml). Until the whole tree passes
them, this file holds the floor for everything (pyflakes, non-strict mypy) and the full gates
for the conformance runner, which already passes them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNER = "oidc_logout_conformance"


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (it is in the 'dev' extra)")
    return path


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_mypy_finds_no_errors_in_the_package_and_the_runner() -> None:
    """mypy over oidc_logout/ and the runner with the pre-strict settings (pyproject.toml is
    strict; `make typecheck` runs that)."""
    out = _run(
        _tool("mypy"),
        "--config-file=",
        "--cache-dir=.mypy_cache/non-strict",
        "--python-version=3.11",
        "--ignore-missing-imports",
        "oidc_logout",
        RUNNER,
    )
    assert out.returncode == 0, out.stdout[-4000:]


def test_mypy_strict_finds_no_errors_in_the_runner() -> None:
    """The conformance runner passes `mypy --strict` as configured in pyproject.toml."""
    out = _run(_tool("mypy"), RUNNER)
    assert out.returncode == 0, out.stdout[-4000:]


def test_ruff_finds_no_pyflakes_errors() -> None:
    """Unused imports and variables, undefined names, syntax errors: none anywhere."""
    out = _run(_tool("ruff"), "check", "--select", "F,E9", "--no-cache", ".", timeout=120)
    assert out.returncode == 0, out.stdout[-4000:]


@pytest.mark.parametrize(
    "path", [RUNNER, "tests/conformance", "tests/distribution", "tests/test_static_checks.py"]
)
def test_ruff_lint_and_format_pass_on_the_files_already_converted(path: str) -> None:
    """The full rule set and the formatter of pyproject.toml pass on these paths."""
    lint = _run(_tool("ruff"), "check", "--no-cache", path, timeout=120)
    assert lint.returncode == 0, lint.stdout[-4000:]
    fmt = _run(_tool("ruff"), "format", "--check", "--no-cache", path, timeout=120)
    assert fmt.returncode == 0, fmt.stdout[-4000:]
