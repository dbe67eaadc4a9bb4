"""Cost of the lease heartbeat (issue 17 item 2) on PostgreSQL: one renewal ``UPDATE`` of the
N rows a worker holds, and what it costs per second at a given lease.

A worker holds at most ``2 x delivery_concurrency`` rows (32 with the defaults) and renews them
all in ONE ``UPDATE ... WHERE id IN (...) AND state = 'in_flight' AND lease_owner = :me
RETURNING id`` every ``delivery_lease_seconds / 4`` (:func:`oidc_logout.delivery.outbox.renew_leases`,
the exact call the dispatcher makes). This bench claims N rows of an outbox of ``--rows`` pending
rows, times ``--repeat`` renewals of them, and prints the median / p95 time of one renewal and
the database time per second per worker at the former default (lease 10 s, renewal every lease/3)
and the current one (lease 5 s, every lease/4).

    python -m bench.lease_renewal [--held 16,32,128,1024] [--rows 20000] [--repeat 200]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from .common import create_pg_database, drop_pg_database, median, p95, table, write_summary
from .delivery_memory import seed_outbox
from .machine import print_facts

#: (label, lease seconds, renewals per lease) of the settings compared.
SCHEDULES = (("lease 10 s, every lease/3 (before)", 10, 3), ("lease 5 s, every lease/4 (now)", 5, 4))


def server_times(engine: Any, owner: str, ids: list[int], repeat: int) -> list[float]:
    """Execution time (ms) PostgreSQL reports for the renewal UPDATE of ``ids``."""
    import datetime as dt

    from sqlalchemy import text

    from oidc_logout.storage.models import Delivery

    stmt = text(
        f"EXPLAIN (ANALYZE, FORMAT JSON) UPDATE {Delivery.__tablename__} SET lease_until = :until"
        " WHERE id = ANY(:ids) AND state = 'in_flight' AND lease_owner = :owner RETURNING id"
    )
    out = []
    for _ in range(repeat):
        until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
        with engine.begin() as conn:
            plan = conn.execute(stmt, {"until": until, "ids": ids, "owner": owner}).scalar_one()
        out.append(float(plan[0]["Execution Time"]))
    return out


def run(held: list[int], rows: int, repeat: int) -> list[dict[str, Any]]:
    from sqlalchemy.orm import sessionmaker

    from oidc_logout.delivery import outbox
    from oidc_logout.storage.schema import make_engine

    name, url = create_pg_database()
    engine = make_engine(url)
    try:
        seed_outbox(url, rows, "http://127.0.0.1:9")
        factory = sessionmaker(engine, expire_on_commit=False)
        out = []
        for n in held:
            owner = f"bench-{n}"
            claims = outbox.claim_due(factory, owner, n, 60)
            ids = [c.id for c in claims]
            assert len(ids) == n, (len(ids), n)
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                renewed, _until = outbox.renew_leases(factory, owner, ids, 60)
                times.append(time.perf_counter() - t)
                assert len(renewed) == n
            row: dict[str, Any] = {
                "held": n,
                "renewal_ms_median": median(times) * 1000,
                "renewal_ms_p95": p95(times) * 1000,
                # The server's own time for the same UPDATE (EXPLAIN ANALYZE "Execution Time"):
                # what the renewal costs PostgreSQL, without the client's scheduling waits.
                "server_ms_median": median(server_times(engine, owner, ids, max(10, repeat // 10))),
            }
            for label, lease, per in SCHEDULES:
                row[label] = median(times) * 1000 * per / lease  # ms of renewal per second
            out.append(row)
            print(row, flush=True)
        return out
    finally:
        engine.dispose()
        drop_pg_database(name)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--held", default="16,32,128,1024")
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--summary")
    args = ap.parse_args(argv)
    facts = print_facts()
    rows = run([int(x) for x in args.held.split(",")], args.rows, args.repeat)
    print(
        table(
            [
                "rows held",
                "one renewal, median ms",
                "p95 ms",
                "server ms, median",
                *(f"ms/s, {label}" for label, _l, _p in SCHEDULES),
            ],
            [
                [
                    r["held"],
                    f"{r['renewal_ms_median']:.2f}",
                    f"{r['renewal_ms_p95']:.2f}",
                    f"{r['server_ms_median']:.3f}",
                    *(f"{r[label]:.2f}" for label, _l, _p in SCHEDULES),
                ]
                for r in rows
            ],
        )
    )
    write_summary(args.summary, {"facts": facts, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
