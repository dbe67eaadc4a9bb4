"""Where one back-channel delivery's CPU goes: claim, sign, POST and record, run in one thread
under cProfile, batch by batch exactly as the dispatcher and the worker do it (claim a batch,
make each attempt, record the batch's results in one group commit).

    python -m bench.profile_delivery [--sessions 200] [--pg] [--batch 16]

``--pg`` profiles against a fresh PostgreSQL database (the worker's path: one-statement claims
and result batches) instead of a SQLite file (the embedded dispatcher's default).
"""

from __future__ import annotations

import argparse
import cProfile
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .common import (
    create_pg_database,
    cumulative_of,
    drop_pg_database,
    make_provider,
    profile_report,
    rp_meta,
    seed_sessions,
    start_receiver_process,
)
from .machine import print_facts


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sessions", type=int, default=200, help="sessions x 3 RPs = deliveries profiled")
    p.add_argument("--pg", action="store_true", help="PostgreSQL instead of SQLite")
    p.add_argument(
        "--batch",
        type=int,
        default=16,
        help="claims per batch = results per group commit (default 16, the default delivery_concurrency)",
    )
    a = p.parse_args(argv)
    from oidc_logout.backchannel.request import attempt_delivery
    from oidc_logout.chunks import run_pending
    from oidc_logout.delivery import outbox
    from oidc_logout.delivery.dispatcher import Dispatcher
    from oidc_logout.demo.idp import load_clients
    from oidc_logout.termination import by_subject

    print(f"command: python -m bench.profile_delivery {' '.join(argv if argv is not None else sys.argv[1:])}")
    print_facts(pg=a.pg)
    rec, base = start_receiver_process(0.0, 300)
    tmp = Path(tempfile.mkdtemp(prefix="bench-profdeliv-"))
    dbname = None
    try:
        if a.pg:
            dbname, url = create_pg_database()
        else:
            url = f"sqlite:///{tmp / 'op.db'}"
        prov = make_provider(url)
        clients = [rp_meta(f"rp-{i}", f"{base}/rp-{i}") for i in range(3)]
        load_clients(prov, clients)
        seed_sessions(prov.session_factory, "u", a.sessions, [c["client_id"] for c in clients])
        outcome = prov.terminate_now(by_subject("u"), reason="bench", initiator="bench", wait=0)
        # A termination by subject writes its outbox rows in chunks after the commit (its
        # sessions, then its grants: issue 17): finish them first, so every row is there.
        run_pending(prov.session_factory, termination_id=outcome.termination_id)
        d = Dispatcher(prov.session_factory, prov.keyring, prov.settings)
        s = prov.settings
        prof = cProfile.Profile()
        n = 0
        t0 = time.perf_counter()
        prof.enable()
        for _ in range(10_000):  # bounded
            claims = outbox.claim_due(prov.session_factory, d.owner, a.batch, 60)
            if not claims:
                break
            results = [
                (
                    c,
                    attempt_delivery(
                        d.poster,
                        prov.keyring,
                        s,
                        client_id=c.client_id,
                        target_uri=c.target_uri,
                        sid=c.sid,
                        sub=c.subject,
                        alg=c.alg,
                    ),
                )
                for c in claims
            ]
            outbox.record_results(prov.session_factory, results, d.owner, s)
            n += len(claims)
        prof.disable()
        db = "PostgreSQL" if a.pg else "SQLite"
        if n < 3 * a.sessions:
            print(f"FAILED: {n} of {3 * a.sessions} deliveries made; nothing to profile")
            raise SystemExit(1)
        print(
            f"{n} deliveries, sequential in batches of {a.batch}, "
            f"{n / (time.perf_counter() - t0):.0f}/s under the profiler ({db})"
        )
        print(profile_report(prof, n, 20))
        print(
            cumulative_of(
                prof,
                n,
                [
                    "outbox.py:claim_due",
                    "request.py:attempt_delivery",
                    "logout_token.py:sign_logout_token",
                    "request.py:post_logout_token",
                    "poster.py:post",
                    "outbox.py:record_results",
                    "outbox.py:_pg_record",
                    "outbox.py:_record_generic",
                ],
            )
        )
        d.stop(2)
        prov.engine.dispose()
    finally:
        rec.stop()
        if dbname:
            drop_pg_database(dbname)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
