"""``python examples/authlib_idp/run.py ...`` as a real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from .conftest import PASSWORD, Browser, client_meta, exchange, run_code_flow, verify_id_token

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "examples" / "authlib_idp" / "run.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    def __init__(self, *args: str, cwd: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "REGISTRATION_TOKEN"}
        self.proc = subprocess.Popen(
            [sys.executable, str(RUN), "--host", "127.0.0.1", "--port", str(self.port), *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.output = self._wait_for_issuer()

    def _wait_for_issuer(self) -> str:
        lines = []
        deadline = time.monotonic() + 30
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Issuer:"):
                return "".join(lines)
        self.stop()
        raise AssertionError(f"run.py did not start: {''.join(lines)}{self.proc.stderr.read()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        finally:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream:
                    stream.close()


@pytest.fixture
def clients_file(tmp_path: Path) -> Path:
    path = tmp_path / "clients.json"
    path.write_text(json.dumps([client_meta("cli-app")]))
    return path


@pytest.mark.slow
def test_run_py_serves_discovery_and_the_code_flow(
    database_url: str, clients_file: Path, tmp_path: Path
) -> None:
    """run.py prints the issuer, serves discovery, signs alice in for a client of --clients,
    and a restart on the same database keeps verifying the ID tokens issued before it."""
    args = ["--database-url", database_url, "--password", PASSWORD, "--clients", str(clients_file), "--dev"]
    idp = Process(*args, cwd=tmp_path)
    try:
        assert f"Issuer: {idp.url}" in idp.output
        doc = requests.get(f"{idp.url}/.well-known/openid-configuration", timeout=10).json()
        assert doc["issuer"] == idp.url
        meta = client_meta("cli-app")
        browser = Browser(idp.url)
        assert browser.login("alice").status_code == 303
        token = exchange(idp.url, meta, run_code_flow(browser, meta))
        assert token.status_code == 200, token.text
        id_token = token.json()["id_token"]
    finally:
        assert idp.stop() == 0

    again = Process(*args, cwd=tmp_path)
    try:
        claims = verify_id_token(again.url, id_token)
        assert claims["iss"] == idp.url
    finally:
        again.stop()


@pytest.mark.slow
def test_relative_sqlite_path_is_taken_from_the_working_directory(tmp_path: Path) -> None:
    idp = Process(
        "--database-url",
        "sqlite:///data/idp.db",
        "--password",
        PASSWORD,
        "--issuer",
        "https://idp.example.test",
        cwd=tmp_path,
    )
    try:
        assert requests.get(f"{idp.url}/oauth/jwks", timeout=10).status_code == 200
    finally:
        idp.stop()
    assert (tmp_path / "data" / "idp.db").exists()


@pytest.mark.slow
def test_a_bad_clients_file_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    path.write_text(json.dumps([client_meta("bad", scope="openid admin")]))
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--port",
            str(free_port()),
            "--database-url",
            f"sqlite:///{tmp_path / 'idp.db'}",
            "--password",
            "pw",
            "--clients",
            str(path),
            "--dev",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "invalid_client_metadata" in proc.stderr


@pytest.mark.slow
def test_outside_dev_mode_a_plain_http_issuer_refuses_to_start(tmp_path: Path) -> None:
    """The extension refuses to start outside development mode with an issuer RPs would
    reject (not https): run.py exits with the reason instead of serving."""
    port = free_port()
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--port",
            str(port),
            "--database-url",
            "sqlite:///idp.db",
            "--password",
            PASSWORD,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "is not https" in proc.stderr and "OIDC_LOGOUT_DEV_MODE" in proc.stderr
