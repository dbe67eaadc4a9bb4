"""The quality gates hold on the whole tree: `mypy --strict` on the package and the runner
(configured in pyproject.toml, as `make typecheck` runs it) and ruff's full rule set and
formatter (as `make lint` runs them)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (it is in the 'dev' extra)")
    return path


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_mypy_strict_finds_no_errors_in_the_package_and_the_runner() -> None:
    """`mypy --strict` as configured in pyproject.toml (oidc_logout and the runner)."""
    out = _run(_tool("mypy"))
    assert out.returncode == 0, out.stdout[-4000:]


def test_ruff_lint_passes_on_the_whole_tree() -> None:
    out = _run(_tool("ruff"), "check", "--no-cache", ".", timeout=120)
    assert out.returncode == 0, out.stdout[-4000:]


def test_ruff_format_leaves_the_whole_tree_unchanged() -> None:
    out = _run(_tool("ruff"), "format", "--check", "--no-cache", ".", timeout=120)
    assert out.returncode == 0, out.stdout[-4000:]
