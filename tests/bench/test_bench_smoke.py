"""Smoke test of the benchmarks (bench/): each runs in its smallest mode and prints figures.

No timing is asserted here (performance is measured in bench/, see docs/performance.md);
this only keeps the benchmarks from rotting.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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
    "logout_burst": ["--sizes", "3", "--seconds", "0.2"],
    # exits 1 when it delivered fewer rows than it seeded (it once profiled 0 deliveries)
    "profile_delivery": ["--sessions", "3", "--batch", "4"],
    # exits 1 when a case revoked fewer tokens than it was given
    "pg_revocation_batch": ["--tokens", "40", "--rounds", "1"],
    # asserts that every logout wrote one outbox row per RP
    "logout_transaction": ["--sizes", "3", "--logouts", "2"],
}


def run(name: str, args: list[str], timeout: float = 180) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_terminate_throughput_delivers_every_row_of_a_chunked_termination(tmp_path: Path) -> None:
    """Above termination.INLINE_LIMIT sessions the commit writes no outbox row (the chunks do):
    the bench still waits for every delivery and its rate counts them all."""
    from oidc_logout.termination import INLINE_LIMIT

    out = tmp_path / "tt.json"
    sessions = INLINE_LIMIT + 20
    run(
        "terminate_throughput",
        [
            "--sessions",
            str(sessions),
            "--algs",
            "ES256",
            "--sign-seconds",
            "0.05",
            "--summary-json",
            str(out),
        ],
    )
    (row,) = json.loads(out.read_text())["rows"]
    assert row["settled"] and row["deliveries"] == row["delivered"] == 3 * sessions
    assert row["chunks_s"] is not None and row["rate"] > 0


@pytest.mark.parametrize(
    "name", ["logout_fanout", "terminate_throughput", "revocation", "logout_burst", "profile_delivery"]
)
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


@pytest.mark.postgres
def test_logout_transaction_bench_counts_the_statements_of_each_logout(tmp_path: Path) -> None:
    out_json = tmp_path / "summary.json"
    out = run("logout_transaction", [*CASES["logout_transaction"], "--summary-json", str(out_json)])
    assert "machine:" in out and "|---" in out
    results = json.loads(out_json.read_text())["results"]
    assert {r["db"] for r in results} == {"sqlite", "postgresql"}
    assert all(r["statements"] > 0 and r["wall_ms"] > 0 for r in results)


@pytest.mark.postgres
def test_revocation_batching_bench_revokes_every_token_both_ways() -> None:
    out = run("pg_revocation_batch", CASES["pg_revocation_batch"])
    assert "machine:" in out and "batched x4" in out and "|---" in out


def _against_node(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "summary.json"
    run(
        "against_node",
        [
            "--sizes",
            "2",
            "--runs",
            "1",
            "--tokens",
            "20",
            "--concurrency",
            "2",
            "--no-profile",
            *args,
            "--summary-json",
            str(out),
        ],
        timeout=600,
    )
    return dict(json.loads(out.read_text()))


def _assert_correct(summary: dict[str, Any], ops: set[str]) -> None:
    assert set(summary["ops"]) == ops
    assert {r["op"] for r in summary["fanout"]} == ops
    for r in summary["fanout"]:
        assert r["runs"] == 1 and r["missing"] == 0, r  # every RP got its logout token
        assert r["all_median"] == r["all_median"], r  # measured (not NaN)
        assert r["active_at_first"] is not None, r  # the probe ran
        if r["op"].startswith("oidc-logout"):
            # tokens die in the termination transaction, before any RP hears of the logout
            assert r["active_at_first"] == 0, r
    assert {r["op"] for r in summary["revocation"]} == ops
    for r in summary["revocation"]:
        assert r["requests"] == 20 and r["statuses"] == {"200": 20} and r["errors"] == 0, r
        assert r["active_after"] == 0, r  # every revoked token introspects inactive


@pytest.mark.node
@pytest.mark.browser
def test_against_node_driver_runs_both_ops_correctly(tmp_path: Path) -> None:
    """The one driver signs a browser in to the RPs of node-oidc-provider and of oidc-logout
    (SQLite), logs out (also with a hung RP), revokes and introspects: every RP gets its
    logout token and every revoked token is inactive, on both OPs."""
    from bench.against_node import NODE, node_missing

    reason = node_missing()
    if reason:
        pytest.skip(reason)
    summary = _against_node(tmp_path, "--hang-sizes", "2", "--dbs", "sqlite")
    _assert_correct(summary, {NODE, "oidc-logout (SQLite)"})
    # Every target of issue 15 at the sizes run is judged from the run's own figures (M = 2 and
    # c = 2 carry no target of the issue: fan-out verdicts only, none "not measured").
    verdicts = summary["targets"]
    assert {v["area"] for v in verdicts} == {"fan-out"}
    assert {v["op"] for v in verdicts} == {"oidc-logout (SQLite)"}
    assert all(v["status"] in ("met", "NOT met") and v["ratio"] > 0 for v in verdicts), verdicts
    assert {r["hang"] for r in summary["fanout"]} == {False, True}


@pytest.mark.postgres
@pytest.mark.browser
def test_against_node_driver_runs_oidc_logout_on_postgresql(tmp_path: Path) -> None:
    """The same driver against oidc-logout on PostgreSQL (gunicorn, 2 workers)."""
    summary = _against_node(tmp_path, "--hang-sizes", "", "--dbs", "postgresql", "--ops", "oidc-logout")
    _assert_correct(summary, {"oidc-logout (PostgreSQL)"})
    # Without node's figures no target can be judged: every verdict is "not measured".
    assert summary["targets"] and {v["status"] for v in summary["targets"]} == {"not measured"}
    assert summary["profile"] is None  # --no-profile


@pytest.mark.browser
def test_against_node_profile_mode_runs_and_prints_the_breakdowns() -> None:
    """``--profile`` samples our gunicorn workers with py-spy during the driver's revocation
    load and prints the end_session -> first POST timeline; revoked tokens end inactive."""
    if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
        pytest.skip("py-spy is not installed (dev extra)")
    out = run(
        "against_node",
        [
            "--profile",
            "--tokens",
            "20",
            "--sizes",
            "2",
            "--runs",
            "1",
            "--dbs",
            "sqlite",
            "--concurrency",
            "1",
        ],
        timeout=600,
    )
    assert "code path (inclusive)" in out and "still active after revocation: 0" in out
    assert "request -> first POST starts" in out
