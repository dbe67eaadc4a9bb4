"""The one transaction of an RP-initiated logout, alone: ``terminate()`` of one OP session with
M participating RPs (each with a grant, an access and a refresh token) and its commit, as
``Provider.terminate_now`` runs it, on SQLite and PostgreSQL. No HTTP and no delivery (the
dispatcher is not started): what the logout's request spends before its first POST can leave.

Prints, per database and M, the statements sent (counted with a SQLAlchemy cursor event), the
median and p95 wall time and the median CPU of this process per logout. Sessions of distinct
subjects are seeded first in bulk; each logout ends one.

    python -m bench.logout_transaction [--sizes 10,50] [--logouts 60] [--dbs sqlite,postgresql]
        [--summary-json out.json]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from .common import (
    make_provider,
    median,
    p95,
    rp_meta,
    scratch_database,
    seed_sessions,
    table,
    write_summary,
)
from .machine import print_facts


def one(database_url: str, m: int, logouts: int) -> dict[str, Any]:
    from sqlalchemy import event

    from oidc_logout.demo.idp import load_clients
    from oidc_logout.termination import by_sessions

    provider = make_provider(database_url)
    try:
        clients = [rp_meta(f"rp-{i}", f"http://127.0.0.1:9/rp-{i}") for i in range(m)]
        load_clients(provider, clients)
        ids = [c["client_id"] for c in clients]
        sids = [seed_sessions(provider.session_factory, f"user-{n}", 1, ids)[0] for n in range(logouts + 5)]
        statements = [0]

        @event.listens_for(provider.engine, "before_cursor_execute")
        def _count(*_: Any) -> None:
            statements[0] += 1

        walls, cpus, counts = [], [], []
        for n, sid in enumerate(sids):
            statements[0] = 0
            c0, t0 = time.process_time(), time.perf_counter()
            outcome = provider.terminate_now(by_sessions([sid]), reason="bench", initiator="bench", wait=0)
            t1, c1 = time.perf_counter(), time.process_time()
            assert len(outcome.delivery_ids) == m, (len(outcome.delivery_ids), m)
            if n >= 5:  # the first ones warm the statement caches and the pool
                walls.append((t1 - t0) * 1000)
                cpus.append((c1 - c0) * 1000)
                counts.append(statements[0])
        return {
            "m": m,
            "statements": median(counts),
            "wall_ms": median(walls),
            "wall_p95_ms": p95(walls),
            "cpu_ms": median(cpus),
        }
    finally:
        provider.engine.dispose()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10,50")
    p.add_argument("--logouts", type=int, default=60)
    p.add_argument("--dbs", default="sqlite,postgresql")
    p.add_argument("--summary-json")
    args = p.parse_args(argv)
    print("== logout transaction: terminate() of one session with M RPs, and its commit ==")
    print_facts()
    rows, results = [], []
    for db in args.dbs.split(","):
        for m in [int(x) for x in args.sizes.split(",")]:
            with scratch_database(db, "bench-logout-txn-") as url:
                r = one(url, m, args.logouts) | {"db": db}
            results.append(r)
            rows.append(
                [
                    db,
                    m,
                    f"{r['statements']:.0f}",
                    f"{r['wall_ms']:.2f}",
                    f"{r['wall_p95_ms']:.2f}",
                    f"{r['cpu_ms']:.2f}",
                ]
            )
    print(
        table(["database", "M", "statements", "wall ms (median)", "wall ms (p95)", "CPU ms (median)"], rows)
    )
    out = {"results": results}
    write_summary(args.summary_json, out)
    return out


if __name__ == "__main__":
    main()
