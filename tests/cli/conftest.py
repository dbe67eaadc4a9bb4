"""The real ``oidc-logout`` command as a subprocess, with a clean OIDC_LOGOUT_* environment."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

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


#: The production servers of ``oidc-logout serve`` (oidc_logout.serve.SERVERS).
SERVERS = ("granian", "gunicorn")


class Served:
    """``oidc-logout serve ARGS`` as a running child process, both output streams collected
    line by line while it runs (a worker's announcement can be waited for)."""

    def __init__(self, *args: str, cwd: Path | None = None, **env: str) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "oidc_logout.cli", "serve", *args],
            cwd=cwd or ROOT,
            env=cli_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, text: str, count: int = 1, timeout: float = 60) -> list[str]:
        """The first ``count`` lines containing ``text``, waited for."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [line for line in self.lines if text in line]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                assert left > 0 and self.proc.poll() is None, f"no {count} x {text!r} in:\n{self.output}"
                self._changed.wait(min(left, 0.5))

    def wait_until_serving(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output
            try:
                if requests.get(f"{url}/.well-known/openid-configuration", timeout=5).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.2)
        raise AssertionError(f"serve did not answer in time:\n{self.output}")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit code once every worker has stopped."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._pump.join(10)
        return code


def workers_started(server: str, output: str) -> int:
    """How many worker processes the server's own log says it started."""
    return output.count("Booting worker" if server == "gunicorn" else "Spawning worker")
