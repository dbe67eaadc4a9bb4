"""One logout's own fan-out in one process, without HTTP server or browser (issue 15 item 2):
what the embedded dispatcher costs when one OP session with M RPs logs out.

Each logout: one live OP session with M participants (their grants and tokens seeded in bulk,
not timed), then ``Provider.terminate_now(by_sid(...), wait=...)`` in the main thread, as
``end_session`` runs it: the termination's transaction claims the rows for this process's
dispatcher, the burst delivers them, and the call returns when the last result is recorded.
The RPs are paths of one loopback receiver process answering after ``--rp-delay`` (50 ms), so
at most the host's window of POSTs are in the air at once (``delivery_initial_concurrent_per_host``
for the first logout, widening by one per delivery up to ``delivery_max_concurrent_per_host``).

Printed per M: the first logout (cold: threads, connections and the host's window start
here; not in the median), the median logout (terminate_now with its wait), the median ``terminate()``
(the transaction's own work), and the CPU of this process per delivery while logouts ran
(every thread: signing, POSTs, recording, bookkeeping), by thread group.

    python -m bench.logout_burst [--sizes 50,200] [--seconds 10] [--db sqlite|postgresql]
        [--claim-loop] [--per-host 32] [--burst 128]

``--claim-loop`` starts the dispatcher's claim loop too (a single-process OP, or the elected
worker of ``serve``); without it the process only delivers its own logouts (every other
``serve`` worker, ``Provider.start_logout_delivery``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from .common import (
    create_pg_database,
    drop_pg_database,
    make_provider,
    rp_meta,
    seed_sessions,
    start_receiver_process,
    table,
    write_summary,
)
from .machine import print_facts


def _cpu_by_thread_group() -> dict[str, float]:
    """CPU seconds of this process's live threads, by thread name without its number."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = defaultdict(float)
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        name = names.get(int(task.name), "other").rstrip("0123456789_")
        out[name] += (int(fields[11]) + int(fields[12])) / tick
    return out


def run_size(
    url: str,
    base: str,
    m: int,
    seconds: float,
    claim_loop: bool,
    per_host: int | None,
    burst: int | None = None,
) -> dict[str, Any]:
    import oidc_logout.provider as provider_module
    from oidc_logout.demo.idp import load_clients
    from oidc_logout.termination import by_sid

    extra: dict[str, Any] = {} if burst is None else {"delivery_logout_burst": burst}
    if per_host is not None:
        extra["delivery_max_concurrent_per_host"] = per_host
    provider = make_provider(url, **extra)
    clients = [rp_meta(f"rp-{m}-{i}", f"{base}/rp-{m}-{i}") for i in range(m)]
    load_clients(provider, clients)
    if claim_loop:
        provider.start_background()
    else:
        provider.start_logout_delivery()
    terminate = provider_module.terminate
    txn: list[float] = []

    def timed_terminate(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return terminate(*args, **kwargs)
        finally:
            txn.append((time.perf_counter() - t) * 1000)

    provider_module.terminate = timed_terminate  # type: ignore[assignment]
    logouts: list[float] = []
    first_ms = 0.0
    cpu_in_logouts = 0.0
    settled = True
    try:
        # one warm-up logout (thread pool, connections, keys), not counted
        for warm in (True, False):
            deadline = time.monotonic() + (0 if warm else seconds)
            before = _cpu_by_thread_group()
            while True:
                (sid,) = seed_sessions(
                    provider.session_factory, "bench-user", 1, [c["client_id"] for c in clients]
                )
                c0, t0 = time.process_time(), time.perf_counter()
                outcome = provider.terminate_now(by_sid(sid), reason="bench", initiator="bench", wait=30)
                if warm:
                    first_ms = (time.perf_counter() - t0) * 1000
                else:
                    logouts.append((time.perf_counter() - t0) * 1000)
                    cpu_in_logouts += time.process_time() - c0
                    settled = settled and outcome.settled
                if time.monotonic() >= deadline:
                    break
            if warm:
                txn.clear()
        after = _cpu_by_thread_group()
    finally:
        provider_module.terminate = terminate
        provider.stop_background()
        provider.engine.dispose()
    n = len(logouts) * m
    return {
        "m": m,
        "logouts": len(logouts),
        "settled": settled,
        "first_ms": first_ms,
        "logout_ms": statistics.median(logouts),
        "terminate_ms": statistics.median(txn),
        "cpu_per_delivery_ms": cpu_in_logouts / n * 1000,
        "cpu_by_threads": {k: round(after[k] - before.get(k, 0.0), 3) for k in after},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="50,200", help="RPs per logout (default 50,200)")
    p.add_argument("--seconds", type=float, default=10.0, help="logouts per size for this long (default 10)")
    p.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--claim-loop", action="store_true", help="start the claim loop too")
    p.add_argument(
        "--per-host", type=int, help="delivery_max_concurrent_per_host (default: the setting's default)"
    )
    p.add_argument("--burst", type=int, help="delivery_logout_burst (default: the setting's default)")
    p.add_argument("--rp-delay", type=float, default=0.05, help="RP answer delay in s (default 0.05)")
    p.add_argument("--summary-json")
    a = p.parse_args(argv)
    print(f"command: python -m bench.logout_burst {' '.join(argv if argv is not None else sys.argv[1:])}")
    facts = print_facts(pg=a.db == "postgresql")
    receiver, base = start_receiver_process(a.rp_delay, 3600)
    tmp = Path(tempfile.mkdtemp(prefix="bench-burst-"))
    pg_name = None
    rows = []
    results = []
    try:
        for m in [int(x) for x in a.sizes.split(",") if x]:
            if a.db == "postgresql":
                pg_name, url = create_pg_database()
            else:
                url = f"sqlite:///{tmp / f'op-{m}.db'}"
            try:
                r = run_size(url, base, m, a.seconds, a.claim_loop, a.per_host, a.burst)
            finally:
                if pg_name:
                    drop_pg_database(pg_name)
                    pg_name = None
            results.append(r)
            threads = ", ".join(
                f"{k} {v:.2f} s"
                for k, v in sorted(r["cpu_by_threads"].items(), key=lambda x: -x[1])
                if v >= 0.01
            )
            rows.append(
                [
                    m,
                    r["logouts"],
                    f"{r['first_ms']:.0f}",
                    f"{r['logout_ms']:.0f}",
                    f"{r['terminate_ms']:.1f}",
                    f"{r['cpu_per_delivery_ms']:.2f}",
                    "yes" if r["settled"] else "NO",
                    threads,
                ]
            )
            print(f"  M={m}: {r['logouts']} logouts, median {r['logout_ms']:.0f} ms", flush=True)
    finally:
        receiver.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nsetup: {a.db}, {'claim loop + burst' if a.claim_loop else 'burst only (no claim loop)'}, "
        f"per-host ceiling {a.per_host or 'default'}, RPs answer after {a.rp_delay * 1000:.0f} ms"
    )
    print(
        table(
            [
                "M",
                "logouts",
                "first logout ms",
                "logout ms (median)",
                "terminate() ms",
                "CPU ms / delivery",
                "all settled",
                "CPU by threads",
            ],
            rows,
        )
    )
    failed = [r for r in results if not r["settled"]]
    if failed:
        print(f"FAILED: {len(failed)} size(s) had a logout whose deliveries did not all finish in its wait")
    summary = {"bench": "logout_burst", "facts": facts, "args": vars(a), "results": results}
    write_summary(a.summary_json, summary)
    if failed:
        raise SystemExit(1)
    return summary


if __name__ == "__main__":
    main()
