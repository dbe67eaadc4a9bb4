"""Third-party peers for the conformance runner: node processes from tests/interop/node
(installed with `npm ci` by `make test`), each on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# The `node` marker's skip (and the CI rule that such a skip fails) is in tests/conftest.py.

NODE_DIR = Path(__file__).parent / "node"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NodeServer:
    def __init__(self, script: str, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            ["node", script, str(self.port), *args],
            cwd=NODE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "NODE_ENV": "test"},
        )
        deadline = time.monotonic() + 20
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("READY"):
                return
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"node {script} did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def node_server() -> Iterator[type[NodeServer]]:
    started: list[NodeServer] = []

    class _Tracked(NodeServer):
        def __init__(self, script: str, *args: str) -> None:
            super().__init__(script, *args)
            started.append(self)

    yield _Tracked
    for s in started:
        s.stop()
