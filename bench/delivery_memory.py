"""Delivery memory (issue 17 item 4): peak RSS of the process that delivers a fan-out of N
back-channel notifications, for N = 1,000, 10,000, 100,000, on SQLite and PostgreSQL, for
the two ways of delivering:

* ``embedded``: an OP process (``Provider`` with its embedded dispatcher, default settings)
  that hands the committed termination to delivery (``Provider.dispatch``) and delivers it;
* ``worker``: one ``python -m oidc_logout.delivery.worker`` process (default settings).

The N outbox rows (one termination, 10 RPs) are written in bulk before the deliverer starts,
so the figure is the delivery's, not the termination transaction's. The RPs are paths of one
fast counting loopback receiver in its own process (answers 200 at once, keeps counts only).
Peak RSS is the deliverer's VmHWM from /proc, read when every row is final.

    python -m bench.delivery_memory [--quick] [--sizes 1000,10000,100000] [--dbs sqlite,postgresql]
        [--modes embedded,worker] [--code DIR]

``--code DIR`` runs the deliverer from another checkout (e.g. the code before a change) for a
before/after on the same data and machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from .common import (
    PYTHON,
    ROOT,
    create_pg_database,
    drop_pg_database,
    proc_status,
    start_receiver_process,
    table,
    write_summary,
)
from .machine import print_facts

RPS = 10
ISSUER = "http://127.0.0.1:9"
#: Longest a single run may take (every loop here is bounded).
MAX_SECONDS = 1800.0


def seed_outbox(url: str, n: int, receiver: str) -> str:
    """A migrated database with keys, RPS clients and ONE termination of ``n`` pending
    back-channel rows spread over them. Returns the termination id."""
    from sqlalchemy import insert
    from sqlalchemy.orm import sessionmaker

    from oidc_logout.keys import ensure_keys
    from oidc_logout.storage.models import BACKCHANNEL, Client, Delivery, Termination
    from oidc_logout.storage.schema import make_engine, upgrade

    engine = make_engine(url)
    try:
        upgrade(engine)
        factory = sessionmaker(engine)
        term_id = f"bench-{uuid.uuid4().hex[:12]}"
        now = dt.datetime.now(dt.UTC)
        with factory.begin() as db:
            ensure_keys(db, ("RS256", "ES256"))
            for i in range(RPS):
                db.add(
                    Client(
                        client_id=f"rp-{i}",
                        client_name=f"rp-{i}",
                        backchannel_logout_uri=f"{receiver}/rp-{i}",
                    )
                )
            db.add(
                Termination(
                    id=term_id, target_kind="subject", target_value="bench", reason="bench", initiator="bench"
                )
            )
        rows = (
            dict(
                termination_id=term_id,
                channel=BACKCHANNEL,
                client_id=f"rp-{k % RPS}",
                sid=f"sid-{k}",
                subject="bench",
                target_uri=f"{receiver}/rp-{k % RPS}",
                created_at=now,
                next_attempt_at=now,
            )
            for k in range(n)
        )
        chunk: list[dict[str, Any]] = []
        with factory.begin() as db:
            for row in rows:
                chunk.append(row)
                if len(chunk) == 5000:
                    db.execute(insert(Delivery), chunk)
                    chunk = []
            if chunk:
                db.execute(insert(Delivery), chunk)
        return term_id
    finally:
        engine.dispose()


def not_final(url: str, term_id: str) -> int:
    from sqlalchemy import func, select

    from oidc_logout.storage.models import Delivery
    from oidc_logout.storage.schema import make_engine
    from oidc_logout.vocabulary import FINAL_STATES

    engine = make_engine(url)
    try:
        with engine.connect() as c:
            return int(
                c.scalar(
                    select(func.count())
                    .select_from(Delivery)
                    .where(Delivery.termination_id == term_id, Delivery.state.not_in(list(FINAL_STATES)))
                )
                or 0
            )
    finally:
        engine.dispose()


#: The OP process of the embedded mode, run with ``python -c`` so that ``oidc_logout`` comes
#: from ``--code`` (nothing of bench/ is imported there). Prints ``DONE <seconds> <VmHWM KiB>``
#: once every row of the termination is final.
EMBEDDED_CHILD = """
import logging, os, sys, time
from sqlalchemy import func, select
from oidc_logout.config import Settings
from oidc_logout.provider import Provider
from oidc_logout.storage.models import Delivery
from oidc_logout.vocabulary import FINAL_STATES

url, term_id, max_seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])  # argv[4]: issuer
logging.basicConfig(level=logging.WARNING)
provider = Provider(Settings(issuer=sys.argv[4], database_url=url, dev_mode=True, expiry_sweep_interval=0))
provider.start_background()
t0 = time.monotonic()
provider.dispatch(term_id, wait=0)
left = select(func.count()).select_from(Delivery).where(
    Delivery.termination_id == term_id, Delivery.state.not_in(list(FINAL_STATES)))
while time.monotonic() < t0 + max_seconds:
    with provider.engine.connect() as c:
        if not c.scalar(left):
            break
    time.sleep(0.5)
seconds = time.monotonic() - t0
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(f"DONE {seconds:.2f} {hwm}", flush=True)
provider.stop_background()
provider.engine.dispose()
"""


def run_one(mode: str, db: str, n: int, receiver: str, code: Path, max_seconds: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-mem-"))
    pg_name = None
    if db == "sqlite":
        url = f"sqlite:///{tmp / 'op.db'}"
    else:
        pg_name, url = create_pg_database()
    try:
        term_id = seed_outbox(url, n, receiver)
        env = {
            **os.environ,
            "PYTHONPATH": str(code),
            "OIDC_LOGOUT_DATABASE_URL": url,
            "OIDC_LOGOUT_ISSUER": ISSUER,
            "OIDC_LOGOUT_DEV_MODE": "true",
        }
        t0 = time.monotonic()
        if mode == "embedded":
            out = subprocess.run(
                [PYTHON, "-c", EMBEDDED_CHILD, url, term_id, str(max_seconds), ISSUER],
                env={**env, "PYTHONPATH": str(code)},
                cwd=tmp,  # not ROOT: the cwd comes first on sys.path, before --code
                capture_output=True,
                text=True,
                timeout=max_seconds + 120,
            )
            done = [ln for ln in out.stdout.splitlines() if ln.startswith("DONE")]
            if not done:
                raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
            seconds, hwm = float(done[0].split()[1]), int(done[0].split()[2])
        else:
            proc = subprocess.Popen(
                [PYTHON, "-m", "oidc_logout.delivery.worker"],
                env=env,
                cwd=tmp,  # not ROOT: the cwd comes first on sys.path, before --code
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                deadline = t0 + max_seconds
                while time.monotonic() < deadline and not_final(url, term_id):
                    time.sleep(0.5)
                seconds = time.monotonic() - t0
                hwm = proc_status(proc.pid, "VmHWM")
            finally:
                proc.terminate()
                proc.wait(30)
        left = not_final(url, term_id)
        return {
            "mode": mode,
            "db": db,
            "n": n,
            "seconds": seconds,
            "rate": (n - left) / seconds if seconds else 0.0,
            "peak_mib": hwm / 1024,
            "unfinished": left,
        }
    finally:
        if pg_name:
            drop_pg_database(pg_name)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args_in = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1,000 rows only (smoke)")
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--dbs", default="sqlite,postgresql")
    p.add_argument("--modes", default="embedded,worker")
    p.add_argument("--code", default=str(ROOT), help="checkout whose oidc_logout delivers")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=MAX_SECONDS,
        help="stop a run after this long and report what was delivered (and the peak so far)",
    )
    p.add_argument("--summary-json")
    a = p.parse_args(args_in)
    sizes = [1000] if a.quick else [int(x) for x in a.sizes.split(",")]
    print("== delivery memory: peak RSS of the deliverer vs fan-out size ==")
    print(f"command: python -m bench.delivery_memory {' '.join(args_in)}")
    facts = print_facts(pg="postgresql" in a.dbs)
    print(
        f"setup: N pending back-channel rows (one termination, {RPS} RPs) written in bulk, then "
        f"delivered with default settings by an embedded-dispatcher OP process or one "
        f"`oidc-logout worker`; RP receiver in its own process answering 200 at once; code: {a.code}"
    )
    rec, receiver = start_receiver_process(0.0, max_seconds=MAX_SECONDS * 4)
    rows = []
    try:
        for db in a.dbs.split(","):
            for mode in a.modes.split(","):
                for n in sizes:
                    r = run_one(mode, db, n, receiver, Path(a.code), a.max_seconds)
                    rows.append(r)
                    print(
                        f"  {mode:<8} {db:<10} {n:>7}: peak RSS {r['peak_mib']:.0f} MiB, "
                        f"{r['seconds']:.1f} s ({r['rate']:.0f}/s), unfinished {r['unfinished']}",
                        flush=True,
                    )
    finally:
        rec.stop()
    print()
    print(
        table(
            ["deliverer", "database", "deliveries", "peak RSS MiB", "seconds", "deliveries/s", "unfinished"],
            [
                [
                    r["mode"],
                    r["db"],
                    r["n"],
                    f"{r['peak_mib']:.0f}",
                    f"{r['seconds']:.1f}",
                    f"{r['rate']:.0f}",
                    r["unfinished"],
                ]
                for r in rows
            ],
        )
    )
    summary = {"bench": "delivery_memory", "facts": facts, "rows": rows}
    write_summary(a.summary_json, summary)
    return summary


if __name__ == "__main__":
    main()
