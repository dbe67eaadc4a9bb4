"""Terminate-by-subject throughput (issue 3): one subject with S OP sessions, each shared by 3
RPs (a grant with an access and a refresh token per participant), ended by one
``provider.terminate_now(by_subject(...), wait=0)``, then delivered by the embedded dispatcher
to RPs that answer at once.

Measured, per signing algorithm of the RPs (RS256 and ES256, a fresh SQLite file each):

* the termination transaction: ``terminate_now`` from start to commit. Up to
  ``termination.INLINE_LIMIT`` sessions it ends the sessions, revokes the tokens and writes the
  3xS outbox rows itself; above it, it commits the subject's cut-off and the dispatcher's loop
  does that per-row work in chunks after the commit (issue 17), timed as "chunks done";
* deliveries per second: 3xS / (time from commit until the termination is complete and every
  one of its deliveries is final);
* the ceiling: logout tokens signed per second by one thread with the same key, exactly as a
  delivery attempt signs them (jwcrypto), measured in the same run.

The RP receiver runs in its own process so it does not share this process's GIL.

    python -m bench.terminate_throughput [--quick] [--sessions 1000] [--algs RS256,ES256]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import (
    make_provider,
    proc_cpu,
    receiver_count,
    rp_meta,
    seed_sessions,
    signing_rate,
    start_receiver_process,
    table,
    write_summary,
)
from .machine import print_facts

RPS = 3


def one(alg: str, sessions: int, receiver: str, sign_seconds: float, receiver_pid: int) -> dict[str, Any]:
    from sqlalchemy import func, select

    from oidc_logout.demo.idp import load_clients
    from oidc_logout.storage.models import Delivery
    from oidc_logout.termination import by_subject

    tmp = Path(tempfile.mkdtemp(prefix="bench-term-"))
    provider = make_provider(f"sqlite:///{tmp / 'op.db'}")
    try:
        clients = [rp_meta(f"rp-{alg.lower()}-{i}", f"{receiver}/rp-{i}", alg=alg) for i in range(RPS)]
        load_clients(provider, clients)
        t = time.perf_counter()
        seed_sessions(provider.session_factory, "bench-user", sessions, [c["client_id"] for c in clients])
        seed_s = time.perf_counter() - t
        ceiling, signed = signing_rate(provider.keyring.signing_key(alg), sign_seconds, 20_000)
        provider.start_background()
        before = receiver_count(receiver)
        cpu0, rp_cpu0 = time.process_time(), proc_cpu(receiver_pid)
        t0 = time.perf_counter()
        outcome = provider.terminate_now(by_subject("bench-user"), reason="bench", initiator="bench", wait=0)
        t1 = time.perf_counter()
        # Above termination.INLINE_LIMIT sessions the commit writes the cut-off only and the
        # dispatcher's loop writes the outbox in chunks after it (issue 17): wait for the
        # termination to be complete and every one of its deliveries final, not for the ids
        # the commit returned (none then).
        ok, t_chunks = _settle(provider, outcome.termination_id, RPS * sessions, timeout=170.0)
        t2 = time.perf_counter()
        # CPU of this process (every thread: dispatcher, signing, the settle loop) and of the
        # RP receiver while the termination ran: what bounds the rate on a 2-core machine.
        cpu, rp_cpu = time.process_time() - cpu0, proc_cpu(receiver_pid) - rp_cpu0
        stats = dict(provider.dispatcher.stats)
        provider.stop_background()
        with provider.session_factory() as db:
            delivered = (
                db.scalar(select(func.count()).select_from(Delivery).where(Delivery.state == "delivered"))
                or 0
            )
        received = receiver_count(receiver) - before
        n = RPS * sessions
        return {
            "alg": alg,
            "sessions": sessions,
            "deliveries": n,
            "seed_s": seed_s,
            "txn_s": t1 - t0,
            "chunks_s": (t_chunks - t1) if t_chunks else None,
            "deliver_s": t2 - t1,
            "settled": ok,
            "delivered": delivered,
            "received": received,
            "rate": delivered / (t2 - t1),
            "ceiling": ceiling,
            "signed": signed,
            "op_cpu_s": cpu,
            "rp_cpu_s": rp_cpu,
            "stats": stats,
        }
    finally:
        provider.stop_background()
        provider.engine.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


def _settle(provider: Any, termination_id: str, expected: int, timeout: float) -> tuple[bool, float | None]:
    """Wait until the termination is complete and ``expected`` of its deliveries are final;
    returns (settled, when its chunks were done). Polls every 100 ms on its own connection: at
    20 ms the COUNT took 8-12% of the GIL time the dispatcher it measures needs (py-spy
    --gil), and 100 ms is at most 1% of a run of 10 s."""
    from sqlalchemy import func, select

    from oidc_logout.storage.models import FINAL_STATES, Delivery, Termination

    deadline = time.perf_counter() + timeout
    t_chunks = None
    while time.perf_counter() < deadline:
        with provider.session_factory() as db:
            term = db.get(Termination, termination_id)
            if t_chunks is None and term is not None and term.state == "complete":
                t_chunks = time.perf_counter()
            final = db.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.termination_id == termination_id, Delivery.state.in_(list(FINAL_STATES)))
            )
        if t_chunks is not None and (final or 0) >= expected:
            return True, t_chunks
        time.sleep(0.1)
    return False, t_chunks


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="100 sessions (smoke)")
    p.add_argument("--sessions", type=int, help="OP sessions of the subject (default 1000)")
    p.add_argument("--algs", default="RS256,ES256")
    p.add_argument("--sign-seconds", type=float, help="time spent measuring the signing rate")
    p.add_argument("--summary-json")
    a = p.parse_args(argv)
    sessions = a.sessions or (100 if a.quick else 1000)
    sign_seconds = a.sign_seconds if a.sign_seconds is not None else (0.3 if a.quick else 3.0)
    print("== terminate by subject: transaction time and delivery rate vs signing ceiling ==")
    print(
        f"command: python -m bench.terminate_throughput {' '.join(argv if argv is not None else sys.argv[1:])}"
    )
    facts = print_facts(pg=False)
    print(
        f"setup: in-process Provider, SQLite file (WAL), embedded dispatcher with default settings "
        f"(delivery_concurrency=16, batch 100); {sessions} sessions x {RPS} RPs; RP receiver in "
        f"its own process answering 200 at once"
    )
    rec_proc, receiver = start_receiver_process(0.0, max_seconds=900)
    rows = []
    try:
        for alg in a.algs.split(","):
            r = one(alg.strip(), sessions, receiver, sign_seconds, rec_proc.p.pid)
            rows.append(r)
            print(
                f"  {alg}: txn {r['txn_s'] * 1000:.0f} ms, {r['rate']:.0f} deliveries/s, "
                f"ceiling {r['ceiling']:.0f} signatures/s",
                flush=True,
            )
    finally:
        rec_proc.stop()
    print()
    print(
        table(
            [
                "alg",
                "sessions x RPs",
                "termination txn ms",
                "chunks done s",
                "deliveries",
                "delivered",
                "deliver s",
                "deliveries/s",
                "signing ceiling /s (1 thread)",
                "ratio to ceiling",
                "OP CPU ms/delivery",
                "OP cores busy",
                "RP CPU ms/delivery",
            ],
            [
                [
                    r["alg"],
                    f"{r['sessions']} x {RPS}",
                    f"{r['txn_s'] * 1000:.0f}",
                    "-" if r["chunks_s"] is None else f"{r['chunks_s']:.2f}",
                    r["deliveries"],
                    r["delivered"],
                    f"{r['deliver_s']:.2f}",
                    f"{r['rate']:.0f}",
                    f"{r['ceiling']:.0f}",
                    f"{r['rate'] / r['ceiling']:.2f}",
                    f"{r['op_cpu_s'] * 1000 / max(r['delivered'], 1):.2f}",
                    f"{r['op_cpu_s'] / r['deliver_s']:.2f}",
                    f"{r['rp_cpu_s'] * 1000 / max(r['received'], 1):.2f}",
                ]
                for r in rows
            ],
        )
    )
    incomplete = [r for r in rows if not r["settled"] or r["delivered"] != r["deliveries"]]
    for r in incomplete:
        print(
            f"FAILED {r['alg']}: {r['delivered']} of {r['deliveries']} delivered "
            f"(dispatcher stats {r['stats']}): its rate measures nothing"
        )
    summary = {"bench": "terminate_throughput", "facts": facts, "rows": rows}
    write_summary(a.summary_json, summary)
    if incomplete:
        raise SystemExit(1)  # run_all reports it FAILED instead of a rate
    return summary


if __name__ == "__main__":
    main()
