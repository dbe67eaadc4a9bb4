"""Run every benchmark (each in its own process) and print a summary table.

    python -m bench.run_all [--quick] [--only logout_fanout,revocation]

``make bench`` runs this. Every benchmark also prints its own full tables and the machine
facts; results go into docs/performance.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import targets
from .common import ROOT, table
from .machine import print_facts

BENCHES = ("logout_fanout", "terminate_throughput", "worker_scaleout", "revocation", "against_node")
#: Seconds a benchmark may run (the side-by-side against node-oidc-provider drives a browser
#: through M = 200 sign-ins per run, three OPs).
TIMEOUTS = {"against_node": 3600}


def _wait_quiet(max_wait: float = 60.0) -> float:
    """Wait (bounded) for the 1-minute load average to drop below the core count / 2, so that
    a benchmark does not start on top of another job; returns the load average."""
    cores = os.cpu_count() or 1
    deadline = time.monotonic() + max_wait
    while os.getloadavg()[0] > cores / 2 and time.monotonic() < deadline:
        time.sleep(2)
    return os.getloadavg()[0]


def summarize(name: str, s: dict[str, Any]) -> list[list[str]]:
    out = []
    if name == "logout_fanout":
        for r in s["rows"]:
            out.append(
                [
                    name,
                    f"N={r['n']}{' + 1 hanging' if r['hanging'] else ''}",
                    f"all tokens {r['all_median'] * 1000:.0f} ms (p95 {r['all_p95'] * 1000:.0f}), "
                    f"response {r['resp_median'] * 1000:.0f} ms",
                    f"{r['all_median'] / s['ideal_s']:.2f}x ideal",
                ]
            )
    elif name == "terminate_throughput":
        for r in s["rows"]:
            out.append(
                [
                    name,
                    f"{r['alg']} {r['sessions']}x3",
                    f"txn {r['txn_s'] * 1000:.0f} ms, {r['rate']:.0f} deliveries/s",
                    f"{r['rate'] / r['ceiling']:.2f} of signing ceiling {r['ceiling']:.0f}/s",
                ]
            )
    elif name == "worker_scaleout":
        one = s["runs"][0]["rate"] if s["runs"] else 1.0
        for r in s["runs"]:
            out.append(
                [
                    name,
                    f"{r['workers']} worker(s), {r['deliveries']} rows",
                    f"{r['rate']:.0f} deliveries/s, peak RSS {max(r['hwm_kib']) / 1024:.0f} MiB",
                    f"{r['rate'] / one:.2f}x of 1 worker; {r['rate'] / s['ceiling']:.2f} of ceiling",
                ]
            )
        for i in s.get("idp") or []:
            out.append(
                [
                    name,
                    f"IdP fan-out ({i['mode']}), {i['deliveries']} rows",
                    f"IdP peak RSS {i['hwm_kib'] / 1024:.0f} MiB"
                    + (f", worker {i['worker_hwm_kib'] / 1024:.0f} MiB" if i["worker_hwm_kib"] else ""),
                    f"{i['rate']:.0f} deliveries/s",
                ]
            )
    elif name == "against_node":
        if s.get("node_skipped"):
            out.append([name, "node-oidc-provider skipped", s["node_skipped"].splitlines()[0], ""])
        headers, trows = s["table"]["headers"], s["table"]["rows"]
        for r in trows:
            figures, ratios = [], []
            for i, (h, v) in enumerate(zip(headers, r, strict=False)):
                if i == 0 or not v or v == "-":
                    continue
                if h.startswith("ratio"):
                    ratios.append(f"{headers[i - 1].removeprefix('oidc-logout ')}: {v}")
                else:
                    figures.append(f"{h}: {v}")
            out.append([name, r[0], "; ".join(figures), "; ".join(ratios)])
    elif name == "revocation":
        base = {r["concurrency"]: r["rps"] for r in s["rows"] if r["app"] == "plain Authlib (stock SQLite)"}
        for r in s["rows"]:
            out.append(
                [
                    name,
                    f"{r['app']} c={r['concurrency']}",
                    f"{r['rps']:.0f} req/s, {r['cpu_ms_per_req']:.2f} ms CPU/req",
                    f"{r['rps'] / base[r['concurrency']]:.2f}x plain (target >= 3x)"
                    if r["concurrency"] in base
                    else "",
                ]
            )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke sizes for every benchmark")
    p.add_argument("--only", help="comma-separated subset of " + ",".join(BENCHES))
    a = p.parse_args(argv)
    names = a.only.split(",") if a.only else list(BENCHES)
    print(f"== oidc_logout benchmarks ({'quick' if a.quick else 'full'}) ==")
    print(f"command: python -m bench.run_all {' '.join(argv if argv is not None else sys.argv[1:])}")
    print_facts(pg=True)
    rows: list[list[str]] = []
    summaries: dict[str, Any] = {}
    failed = []
    t_all = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        for name in names:
            load = _wait_quiet(5 if a.quick else 60)
            out = Path(tmp) / f"{name}.json"
            cmd = [
                sys.executable,
                "-m",
                f"bench.{name}",
                *(["--quick"] if a.quick else []),
                "--summary-json",
                str(out),
            ]
            print(f"\n\n######## {name} (1-min load average before: {load:.2f})", flush=True)
            t0 = time.monotonic()
            rc = subprocess.run(cmd, cwd=ROOT, timeout=TIMEOUTS.get(name, 900)).returncode
            print(f"######## {name}: exit {rc}, {time.monotonic() - t0:.0f} s", flush=True)
            if rc != 0 or not out.exists():
                failed.append(name)
                rows.append([name, "FAILED", f"exit {rc}", ""])
                continue
            summaries[name] = json.loads(out.read_text())
            rows += summarize(name, summaries[name])
    print(f"\n\n== summary ({time.monotonic() - t_all:.0f} s) ==")
    print(table(["benchmark", "case", "figures", "ratio"], rows))
    report_targets(summaries, quick=a.quick)
    return 1 if failed else 0


def report_targets(summaries: dict[str, Any], *, quick: bool) -> None:
    """Issue 15's targets from this run's figures (bench/targets.py); for a bulk-termination
    target not met, where one delivery's CPU goes (bench.profile_delivery). The fan-out and
    revocation targets were judged, and profiled when missed, by against_node itself."""
    verdicts = [targets.Verdict(**v) for v in (summaries.get("against_node") or {}).get("targets") or []]
    if "terminate_throughput" in summaries:
        verdicts += targets.bulk(summaries["terminate_throughput"])
    if not verdicts:
        return
    print("\n== issue 15 targets, judged from this run's figures ==")
    print(table(targets.HEADERS, [v.row() for v in verdicts]))
    if targets.unmet(verdicts, "bulk"):
        print("\n== bulk termination below its target: where one delivery's CPU goes ==", flush=True)
        cmd = [sys.executable, "-m", "bench.profile_delivery", "--sessions", "100" if quick else "300"]
        subprocess.run(cmd, cwd=ROOT, timeout=600)


if __name__ == "__main__":
    raise SystemExit(main())
