"""The package and the conformance runner stay type-checked and free of pyflakes errors."""

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


def test_mypy_finds_no_errors_in_the_package_and_the_runner():
    """mypy over oidc_logout/ and oidc_logout_conformance/ (configured in pyproject.toml)."""
    out = subprocess.run([_tool("mypy"), "oidc_logout", "oidc_logout_conformance"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:]


def test_ruff_finds_no_pyflakes_errors():
    """Unused imports and variables, undefined names, syntax errors: none anywhere."""
    out = subprocess.run([_tool("ruff"), "check", "--select", "F,E9", "--no-cache", "."], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-4000:]
