"""What batching concurrent revocations into one ``UPDATE`` would save on PostgreSQL (issue 15,
revocation at c=8): the lever named for "PostgreSQL revocation req/s at c=8", measured before
building it.

In a database of its own, with the tables of the fast path's statement (tokens with a unique
hash, clients with a secret hash and an auth method), every token is revoked once:

* **single**: ``--threads`` connections in autocommit, one ``UPDATE ... WHERE token_hash = ...
  AND EXISTS (client with this secret)`` per revocation: what the fast path does now;
* **batched**: ``--threads`` / ``--batch`` connections, one ``UPDATE ... FROM (VALUES ...)``
  per ``--batch`` revocations, ``RETURNING`` the rows it revoked: what a per-worker batcher
  would send (each request's row must come back for its answer).

Printed: revocations/s and CPU per revocation of this process (psycopg) and of PostgreSQL's
backends (``/proc`` of the ``postgres`` processes; the whole server, so run it on a quiet
machine). No HTTP server and no OP code: only the database's side of the trade.

    python -m bench.pg_revocation_batch [--tokens 12000] [--threads 8] [--batch 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .common import create_pg_database, drop_pg_database, proc_cpu, table
from .machine import print_facts

SINGLE = (
    "UPDATE bt_token SET revoked_at = now(), revoked_reason = 'revoked' "
    "WHERE token_hash = %s AND kind = 'access_token' AND revoked_at IS NULL AND client_id = %s "
    "AND EXISTS (SELECT 1 FROM bt_client WHERE client_id = %s AND secret_hash = %s "
    "AND (auth_method = 'client_secret_basic' OR auth_method = 'client_secret_post'))"
)


def batched(n: int) -> str:
    rows = ", ".join(["(%s, %s, %s)"] * n)
    return (
        "UPDATE bt_token t SET revoked_at = now(), revoked_reason = 'revoked' "
        f"FROM (VALUES {rows}) AS v(h, cid, sh), bt_client c "
        "WHERE t.token_hash = v.h AND t.client_id = v.cid AND c.client_id = v.cid "
        "AND c.secret_hash = v.sh AND (c.auth_method = 'client_secret_basic' "
        "OR c.auth_method = 'client_secret_post') AND t.kind = 'access_token' "
        "AND t.revoked_at IS NULL RETURNING t.token_hash, v.sh"
    )


def postgres_cpu() -> float:
    """CPU seconds of every process whose command is postgres (server and backends)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == "postgres":
                total += proc_cpu(int(proc.name))
        except OSError:
            continue
    return total


def run_case(dsn: str, first: int, tokens: int, threads: int, batch: int) -> dict[str, Any]:
    import psycopg

    lock = threading.Lock()
    cursor = [first]
    end = first + tokens
    revoked = [0]

    def take() -> range:
        with lock:
            start = cursor[0]
            cursor[0] = min(end, start + batch)
            return range(start, cursor[0])

    def work(conn: Any) -> None:
        sql = batched(batch)
        while ids := take():
            if batch == 1:
                i = ids[0]
                n = conn.execute(SINGLE, (f"h{i}", "c1", "c1", "s1")).rowcount
            else:
                args: list[str] = []
                for i in ids:
                    args += [f"h{i}", "c1", "s1"]
                statement = sql if len(ids) == batch else batched(len(ids))
                n = len(conn.execute(statement, args).fetchall())
            with lock:
                revoked[0] += n

    # Connections open before and closed after the measurement: a backend's CPU leaves /proc
    # with it.
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(max(1, threads // batch))]
    workers = [threading.Thread(target=work, args=(c,)) for c in conns]
    pg0, cpu0, t0 = postgres_cpu(), time.process_time(), time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    pg1, cpu1 = postgres_cpu(), time.process_time()
    for c in conns:
        c.close()
    return {
        "case": "single" if batch == 1 else f"batched x{batch}",
        "connections": len(conns),
        "revoked": revoked[0],
        "per_s": tokens / wall,
        "pg_ms": (pg1 - pg0) / tokens * 1000,
        "client_ms": (cpu1 - cpu0) / tokens * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=12000, help="revocations per case and round")
    p.add_argument("--threads", type=int, default=8, help="requests in flight (default 8: c=8)")
    p.add_argument("--batch", type=int, default=4, help="revocations per batched UPDATE")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of both cases")
    a = p.parse_args(argv)
    print(
        "command: python -m bench.pg_revocation_batch " + " ".join(argv if argv is not None else sys.argv[1:])
    )
    print_facts(pg=True)
    import psycopg

    name, url = create_pg_database()
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    rows: list[dict[str, Any]] = []
    try:
        total = a.tokens * 2 * a.rounds
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE bt_client (client_id text PRIMARY KEY, secret_hash text, auth_method text)"
            )
            conn.execute(
                "CREATE TABLE bt_token (id bigserial PRIMARY KEY, token_hash text UNIQUE, client_id text, "
                "kind text, revoked_at timestamptz, revoked_reason text)"
            )
            conn.execute("INSERT INTO bt_client VALUES ('c1', 's1', 'client_secret_basic')")
            conn.execute(
                "INSERT INTO bt_token (token_hash, client_id, kind) "
                "SELECT 'h' || i, 'c1', 'access_token' FROM generate_series(0, %s) AS i",
                (total - 1,),
            )
            conn.execute("VACUUM ANALYZE bt_token")
        first = 0
        for _ in range(a.rounds):
            for batch in (1, a.batch):
                rows.append(run_case(dsn, first, a.tokens, a.threads, batch))
                first += a.tokens
        missing = [r for r in rows if r["revoked"] != a.tokens]
    finally:
        drop_pg_database(name)
    print(
        table(
            ["case", "connections", "revoked", "revocations/s", "PostgreSQL CPU ms/rev", "client CPU ms/rev"],
            [
                [
                    r["case"],
                    str(r["connections"]),
                    str(r["revoked"]),
                    f"{r['per_s']:.0f}",
                    f"{r['pg_ms']:.3f}",
                    f"{r['client_ms']:.3f}",
                ]
                for r in rows
            ],
        )
    )
    if missing:
        print(f"NOT every token was revoked in {len(missing)} case(s)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
