"""Where one back-channel delivery's time goes: claim, sign, POST and record, run
sequentially in one thread under cProfile (the embedded dispatcher and the worker run exactly
these calls, 16 at a time, in one process).

    python -m bench.profile_delivery [--sessions 200]
"""

from __future__ import annotations

import argparse
import cProfile
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .common import (cumulative_of, make_provider, profile_report, rp_meta, seed_sessions,
                     start_receiver_process)
from .machine import print_facts


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sessions", type=int, default=200, help="sessions x 3 RPs = deliveries profiled")
    a = p.parse_args(argv)
    from oidc_logout.delivery import outbox
    from oidc_logout.delivery.dispatcher import Dispatcher
    from oidc_logout.demo.idp import load_clients
    from oidc_logout.termination import by_subject

    print(f"command: python -m bench.profile_delivery {' '.join(argv if argv is not None else sys.argv[1:])}")
    print_facts(pg=False)
    rec, base = start_receiver_process(0.0, 300)
    tmp = Path(tempfile.mkdtemp(prefix="bench-profdeliv-"))
    try:
        prov = make_provider(f"sqlite:///{tmp / 'op.db'}")
        clients = [rp_meta(f"rp-{i}", f"{base}/rp-{i}") for i in range(3)]
        load_clients(prov, clients)
        seed_sessions(prov.session_factory, "u", a.sessions, [c["client_id"] for c in clients])
        prov.terminate_now(by_subject("u"), reason="bench", initiator="bench", wait=0)
        d = Dispatcher(prov.session_factory, prov.keyring, prov.settings)
        prof = cProfile.Profile()
        n = 0
        t0 = time.perf_counter()
        prof.enable()
        for _ in range(1000):  # bounded
            claims = outbox.claim_due(prov.session_factory, d.owner, 100, 60)
            if not claims:
                break
            for c in claims:
                d._process(c)
                n += 1
        prof.disable()
        print(f"{n} deliveries, sequential, {n / (time.perf_counter() - t0):.0f}/s under the profiler (SQLite)")
        print(profile_report(prof, n, 20))
        print(cumulative_of(prof, n, [
            "outbox.py:claim_due", "request.py:attempt_delivery", "logout_token.py:sign_logout_token",
            "request.py:post_logout_token", "sessions.py:post", "outbox.py:record_result_detail",
            "session.py:commit", "session.py:_flush"]))
        d.stop(2)
        prov.engine.dispose()
    finally:
        rec.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
