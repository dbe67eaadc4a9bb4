"""The real ``oidc-logout`` command as a subprocess, with a clean OIDC_LOGOUT_* environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli_env(**env: str) -> dict[str, str]:
    """The caller's environment without any OIDC_LOGOUT_* variable, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OIDC_LOGOUT_")}
    return base | {"PYTHONPATH": str(ROOT)} | env


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """``oidc-logout ARGS`` (exactly what the console script runs) in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "oidc_logout.cli", *args],
        cwd=cwd or ROOT,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_error(out: subprocess.CompletedProcess[str]) -> str:
    """The error of a failed command: one line and at most one hint, never a traceback."""
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr, out.stderr
    assert 1 <= len(lines) <= 2 and lines[0].startswith("oidc-logout: error: "), out.stderr
    assert len(lines) == 1 or lines[1].startswith("hint: "), out.stderr
    return lines[0]
