"""Smoke test of the benchmarks (bench/): each runs in its smallest mode and prints figures.

No timing is asserted here (performance is measured in bench/, see docs/performance.md);
this only keeps the benchmarks from rotting.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip(
    "gunicorn", reason="the revocation benchmark serves through gunicorn (pip install gunicorn)"
)

CASES = {
    "logout_fanout": ["--sizes", "2", "--runs", "1", "--wait-bound", "0.5", "--no-hang"],
    "terminate_throughput": ["--sessions", "5", "--algs", "ES256", "--sign-seconds", "0.05"],
    "worker_scaleout": ["--deliveries", "20", "--workers", "1", "--idp-sessions", "0"],
    "revocation": ["--requests", "10", "--concurrency", "2", "--workers", "1", "--profile", "20"],
}


def run(name: str, args: list[str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *args], cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("name", ["logout_fanout", "terminate_throughput", "revocation"])
def test_bench_runs_and_prints_figures(name: str) -> None:
    out = run(name, CASES[name])
    assert "machine:" in out and "python" in out
    assert "|---" in out  # a table of figures


def test_fastpath_ab_runs_and_prints_figures() -> None:
    """The in-process A/B of the revocation fast path (old revision from git vs now) runs."""
    out = run(
        "revocation", ["--fastpath-ab", "HEAD", "--ab-calls", "20", "--ab-rounds", "1", "--ab-dbs", "sqlite"]
    )
    assert "machine:" in out and "statement" in out and "|---" in out


@pytest.mark.postgres
def test_worker_bench_runs_and_prints_figures() -> None:
    out = run("worker_scaleout", CASES["worker_scaleout"])
    assert "machine:" in out and "deliveries/s" in out and "|---" in out
