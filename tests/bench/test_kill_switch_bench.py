"""Smoke test of bench/kill_switch_scale.py in its smallest mode (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
def test_kill_switch_bench_runs_and_prints_figures() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.kill_switch_scale",
            "--sessions",
            "30",
            "--workers",
            "1",
            "--chunk-size",
            "10",
            "--inline-limit",
            "0",
            "--deliver-timeout",
            "60",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "machine:" in proc.stdout and "|---" in proc.stdout
    assert "| 30x3 " in proc.stdout and "| yes " in proc.stdout  # dead at commit, before any chunk
