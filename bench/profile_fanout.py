"""Where the time of one logout fan-out goes, phase by phase, under the workload of
bench/against_node.py (issue 15 item 2: "profile first").

The driver's end_session runs (bench/against_node.py ``fanout_run``: a browser signs in to M RPs
in one OP session and logs out; every RP is a path of one loopback receiver answering after
50 ms) against the demo IdP under gunicorn (2 sync workers, embedded dispatcher), served through
bench/op_server_traced.py, which logs when each step starts and ends in every worker (wall clock).
Per logout this prints, as medians over the runs:

* the serial path to the first POST: validation, ``terminate()``, the commit, the claim, the
  thread hand-off, the first signature;
* the spread of the fan-out: when the last POST starts and ends, how many POSTs were in the air
  at once at most, the summed signing time (CPU on the critical path of one process), how many
  group commits recorded the results and when the last was done;
* end_session's bounded wait: when it returned after the last result was recorded, and the
  response.

    python -m bench.profile_fanout [--sizes 1,10,50,200] [--runs 3] [--dbs sqlite,postgresql]
        [--summary-json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .against_node import CHROMIUM, CHROMIUM_ARGS, RPReceiver, fanout_run, start_ours
from .common import median, table, write_summary
from .machine import print_facts


def _events(trace_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for f in trace_dir.glob("*.jsonl") for x in f.read_text().splitlines() if x]


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    best = cur = 0
    for _, d in edges:
        cur += d
        best = max(best, cur)
    return best


def phases(trace_dir: Path) -> list[dict[str, float]]:
    """One dict per end_session request, in ms after the request reached the app (counts are
    plain numbers). Events of the dispatchers (any worker) are attributed to the request whose
    commit precedes them and that is the latest such request."""
    events = _events(trace_dir)
    reqs = sorted((e for e in events if e["ev"] == "request"), key=lambda e: e["start"])
    out = []
    for n, r in enumerate(reqs):
        t0 = r["start"]
        end_window = reqs[n + 1]["start"] if n + 1 < len(reqs) else float("inf")
        mine = [e for e in events if e.get("req") == r["req"]]

        def ms(x: float, base: float = t0) -> float:
            return (x - base) * 1000

        rec: dict[str, float] = {"response": ms(r["end"])}
        for name, key in (("validate", "validated"),):
            e = min((e for e in mine if e["ev"] == name), key=lambda e: e["start"], default=None)
            if e:
                rec[key] = ms(e["end"])
        term = min((e for e in mine if e["ev"] == "terminate"), key=lambda e: e["start"], default=None)
        deliver = min((e for e in mine if e["ev"] == "deliver"), key=lambda e: e["start"], default=None)
        wait = min((e for e in mine if e["ev"] == "wait"), key=lambda e: e["start"], default=None)
        if term:
            rec["terminate_start"], rec["terminate_end"] = ms(term["start"]), ms(term["end"])
        if deliver is None:
            out.append(rec)
            continue
        committed = deliver["start"]
        rec["committed"] = ms(committed)
        if wait:
            rec["wait_start"], rec["wait_end"] = ms(wait["start"]), ms(wait["end"])
        # No POST can start before the commit, which follows terminate()'s end; with the rows
        # claimed in the termination's transaction, attempts may start before _deliver does.
        lower = term["end"] if term else committed
        after = [e for e in events if e.get("req") is None and lower <= e["start"] < end_window]
        # A claim that was waiting for the database during the commit takes the rows the moment
        # it ends; a claim inside the termination transaction ends before the commit.
        claims = [
            e
            for e in events
            if e["ev"] == "claim"
            and e.get("n", 1) > 0  # the idle polls of both workers claim nothing
            and (term["start"] if term else committed) <= e["end"] < end_window
        ]
        if claims:
            c = min(claims, key=lambda x: x["end"])
            rec["first_claim_start"], rec["first_claim_end"] = ms(c["start"]), ms(c["end"])
            rec["claims"] = len(claims)
        for name in ("attempt", "sign", "post", "record"):
            evs = sorted((e for e in after if e["ev"] == name), key=lambda e: e["start"])
            if not evs:
                continue
            rec[f"first_{name}_start"] = ms(evs[0]["start"])
            rec[f"first_{name}_end"] = ms(evs[0]["end"])
            rec[f"last_{name}_start"] = ms(max(e["start"] for e in evs))
            rec[f"last_{name}_end"] = ms(max(e["end"] for e in evs))
            rec[f"n_{name}"] = len(evs)
            rec[f"sum_{name}"] = sum((e["end"] - e["start"]) * 1000 for e in evs)
            rec[f"max_parallel_{name}"] = _max_overlap([(e["start"], e["end"]) for e in evs])
            rec[f"processes_{name}"] = len({e["pid"] for e in evs})
        out.append(rec)
    return out


#: (label, from key or "" for the request's arrival, to key)
PHASES = [
    ("request -> validated (Flask, id_token_hint, client, session)", "", "validated"),
    ("terminate(): sessions ended, tokens revoked, outbox rows written", "terminate_start", "terminate_end"),
    (
        "terminate() done -> rows handed to delivery (commit; claim/adopt where made)",
        "terminate_end",
        "committed",
    ),
    ("first claim done, after request start (rows in_flight)", "", "first_claim_end"),
    (
        "terminate() done -> first attempt starts (commit, wake-up, claim, hand-off)",
        "terminate_end",
        "first_attempt_start",
    ),
    ("first logout token signed (RS256)", "first_sign_start", "first_sign_end"),
    ("request -> first POST starts", "", "first_post_start"),
    ("first POST start -> last POST start (spread of the fan-out)", "first_post_start", "last_post_start"),
    ("request -> last POST starts", "", "last_post_start"),
    ("request -> last POST answered", "", "last_post_end"),
    ("last POST answered -> last result recorded", "last_post_end", "last_record_end"),
    ("last result recorded -> end_session's wait returns", "last_record_end", "wait_end"),
    ("end_session's wait returns -> response done", "wait_end", "response"),
    ("request -> response done", "", "response"),
]
COUNTS = [
    ("POSTs (attempts)", "n_post"),
    ("most POSTs in the air at once", "max_parallel_post"),
    ("processes that POSTed", "processes_post"),
    ("claims that took rows, for this logout", "claims"),
    ("signing, summed over the fan-out (ms)", "sum_sign"),
    ("group commits of results", "n_record"),
]


def summarize(recs: list[dict[str, float]]) -> tuple[list[list[str]], list[list[str]]]:
    rows = []
    for label, a, b in PHASES:
        xs = [r[b] - r.get(a, 0.0) for r in recs if b in r and (a == "" or a in r)]
        rows.append([label, f"{median(xs):.1f}" if xs else "-"])
    counts = []
    for label, key in COUNTS:
        xs = [r[key] for r in recs if key in r]
        counts.append([label, f"{median(xs):.1f}" if xs else "-"])
    return rows, counts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1,10,50,200")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--dbs", default="sqlite,postgresql")
    p.add_argument("--summary-json")
    a = p.parse_args(argv)
    sizes = [int(x) for x in a.sizes.split(",") if x]
    dbs = [d for d in a.dbs.split(",") if d]
    print("== where one logout fan-out's time goes (oidc-logout, gunicorn 2 sync workers, traced) ==")
    facts = print_facts(pg="postgresql" in dbs)
    tmp = Path(tempfile.mkdtemp(prefix="bench-fanout-prof-"))
    rx = RPReceiver()
    rx.add_rps(max(sizes))
    results: list[dict[str, Any]] = []
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                for db in dbs:
                    trace_dir = tmp / f"trace-{db}"
                    trace_dir.mkdir()
                    t = start_ours(
                        tmp,
                        rx.base,
                        max(sizes),
                        db,
                        app="bench.op_server_traced:wsgi_app()",
                        extra_env={"BENCH_TRACE_DIR": str(trace_dir)},
                    )
                    try:
                        for m in sizes:
                            fanout_run(t, browser, rx, m, False, probe=False)  # warm-up
                            for f in trace_dir.glob("*.jsonl"):
                                f.unlink()
                            rs = [fanout_run(t, browser, rx, m, False, probe=False) for _ in range(a.runs)]
                            recs = phases(trace_dir)
                            rows, counts = summarize(recs)
                            alls = median([r["all"] for r in rs if r["all"] is not None])
                            exch = median([r["exchange"] for r in rs])
                            print(
                                f"\n-- {t.name}, M={m}, {a.runs} logouts; seen by the driver: all tokens "
                                f"{alls * 1000:.0f} ms, exchange {exch * 1000:.0f} ms --\n"
                                + table(["phase (median, ms)", "ms"], rows)
                                + "\n"
                                + table(["count (median)", "value"], counts),
                                flush=True,
                            )
                            results.append(
                                {
                                    "op": t.name,
                                    "m": m,
                                    "all": alls,
                                    "exchange": exch,
                                    "phases": dict(rows),
                                    "counts": dict(counts),
                                    "timeline": recs,
                                }
                            )
                    finally:
                        t.stop()
            finally:
                browser.close()
    finally:
        rx.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {"bench": "profile_fanout", "facts": facts, "results": results}
    write_summary(a.summary_json, summary)
    return summary


if __name__ == "__main__":
    main()
