"""Smoke test of ``bench/delivery_memory.py`` in its smallest mode (no timing asserted: the
figures live in docs/performance.md); keeps the benchmark from rotting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_delivery_memory_bench_runs_and_prints_figures() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.delivery_memory", "--sizes", "20", "--dbs", "sqlite"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "machine:" in out and "peak RSS MiB" in out and "|---" in out
    assert "unfinished 0" in out
