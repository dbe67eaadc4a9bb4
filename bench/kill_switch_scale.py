"""Kill switch at scale (issue 17): terminate-by-subject of S sessions x 3 RPs on PostgreSQL.

One subject holds S live OP sessions, each shared by 3 RPs (a grant with an access and a
refresh token per RP: 3xS grants, 6xS tokens, 3xS outbox rows to write and deliver). Seeded
server-side with ``INSERT ... SELECT generate_series`` (seconds for 100,000 sessions). Then:

* **time to cut-off**: ``terminate(by_subject)`` from start to COMMIT, and a check that a
  token of the subject is refused (``token_is_active`` false) right after it, before any chunk;
* **time to the last chunk**: until the termination is ``complete`` (chunks run by the
  ``oidc-logout worker`` subprocesses' delivery loops, one hook per cycle), with the per-chunk
  time sampled along the way (first vs last tenth: flat means it does not grow with the rows done);
* **time to the last delivery**: until every outbox row is final (RPs = the bench receiver
  process answering 200 at once);
* **peak RSS** (VmHWM) of each worker, the receiver and this process;
* **what concurrent logins and token checks see during the chunks**: two threads in this
  process, one inserting a new OP session with 3 participants per transaction (a login of
  another subject) and one running ``token_is_active`` + ``touch_session`` (a token request) on
  another subject's token; latency p50/p99/max before the termination vs during the chunks, and
  the most ungranted locks PostgreSQL showed at once (pg_locks sampled every 50 ms).

    python -m bench.kill_switch_scale --sessions 1000,10000,100000 [--workers 2] [--deliver-timeout 900]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path
from typing import Any

from .common import (
    PYTHON,
    Proc,
    create_pg_database,
    drop_pg_database,
    make_provider,
    median,
    proc_status,
    receiver_count,
    rp_meta,
    start_receiver_process,
    table,
    write_summary,
)
from .machine import print_facts

RPS = 3
VICTIM = "victim"


def seed(factory: Any, subject: str, n: int, client_ids: list[str]) -> float:
    """S sessions x len(client_ids) participants, grants, 2 tokens each: server-side bulk SQL."""
    from sqlalchemy import text

    from oidc_logout.storage.models import Grant, OPSession, SessionParticipant, Token

    t = time.perf_counter()
    with factory.begin() as db:
        db.execute(
            text(
                f"INSERT INTO {OPSession.__tablename__} (sid, cookie_hash, subject, auth_time, created_at, last_seen_at)"
                " SELECT :p || lpad(g::text, 9, '0'), md5(:p || g::text) || md5(g::text || :p), :s,"
                " now(), now(), now() FROM generate_series(1, :n) g"
            ),
            {"p": f"{subject}-", "s": subject, "n": n},
        )
        for c in client_ids:
            params = {"p": f"{subject}-", "s": subject, "n": n, "c": c}
            db.execute(
                text(
                    f"INSERT INTO {SessionParticipant.__tablename__} (sid, client_id, first_at, last_at)"
                    " SELECT :p || lpad(g::text, 9, '0'), :c, now(), now() FROM generate_series(1, :n) g"
                ),
                params,
            )
            db.execute(
                text(
                    f"INSERT INTO {Grant.__tablename__} (id, client_id, grant_type, subject, sid, scope, offline,"
                    " credential_version, created_at)"
                    " SELECT :c || ':' || :p || g::text, :c, 'authorization_code', :s, :p || lpad(g::text, 9, '0'),"
                    " 'openid', false, 1, now() FROM generate_series(1, :n) g"
                ),
                params,
            )
            for kind in ("access_token", "refresh_token"):
                db.execute(
                    text(
                        f"INSERT INTO {Token.__tablename__} (token_hash, kind, grant_id, client_id, subject, sid,"
                        " scope, issued_at, expires_at)"
                        " SELECT md5(:k || :c || :p || g::text) || md5(:c || g::text), :k,"
                        " :c || ':' || :p || g::text, :c, :s, :p || lpad(g::text, 9, '0'), 'openid', now(),"
                        " now() + interval '1 hour' FROM generate_series(1, :n) g"
                    ),
                    dict(params, k=kind),
                )
        db.execute(text("ANALYZE"))
    return time.perf_counter() - t


class Load:
    """Concurrent logins and token requests of other subjects, timed per operation."""

    def __init__(self, factory: Any, client_ids: list[str], token_hash: str) -> None:
        self.factory = factory
        self.client_ids = client_ids
        self.token_hash = token_hash
        self.stop = threading.Event()
        self.samples: dict[str, list[tuple[float, float]]] = {"login": [], "token": []}
        self.max_waiting_locks = 0
        self._threads = [
            threading.Thread(target=self._login, daemon=True),
            threading.Thread(target=self._token, daemon=True),
            threading.Thread(target=self._locks, daemon=True),
        ]

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(10)

    def _login(self) -> None:
        import datetime as dt

        from oidc_logout.storage.models import OPSession, SessionParticipant
        from oidc_logout.tokens import new_id

        i = 0
        while not self.stop.is_set():
            t = time.perf_counter()
            now = dt.datetime.now(dt.UTC)
            with self.factory.begin() as db:
                sid = new_id(24)
                db.add(
                    OPSession(
                        sid=sid,
                        subject=f"bystander-{i % 50}",
                        auth_time=now,
                        created_at=now,
                        last_seen_at=now,
                    )
                )
                db.flush()
                for c in self.client_ids:
                    db.add(SessionParticipant(sid=sid, client_id=c, first_at=now, last_at=now))
            self.samples["login"].append((t, time.perf_counter() - t))
            i += 1
            time.sleep(0.01)

    def _token(self) -> None:
        from sqlalchemy import select

        from oidc_logout.core.grants import touch_session
        from oidc_logout.storage.models import Token
        from oidc_logout.storage.queries import token_is_active

        while not self.stop.is_set():
            t = time.perf_counter()
            with self.factory.begin() as db:
                tok = db.scalar(select(Token).where(Token.token_hash == self.token_hash))
                assert tok is not None and token_is_active(db, tok)
                touch_session(db, tok.sid)
            self.samples["token"].append((t, time.perf_counter() - t))
            time.sleep(0.01)

    def _locks(self) -> None:
        from sqlalchemy import text

        while not self.stop.is_set():
            with self.factory() as db:
                n = int(db.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted")) or 0)
            self.max_waiting_locks = max(self.max_waiting_locks, n)
            time.sleep(0.05)

    def stats(self, kind: str, t0: float, t1: float) -> dict[str, float]:
        xs = [d for t, d in self.samples[kind] if t0 <= t < t1]
        if not xs:
            return {"n": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
        xs.sort()
        return {
            "n": len(xs),
            "p50_ms": median(xs) * 1000,
            "p99_ms": xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000,
            "max_ms": xs[-1] * 1000,
        }


def run(
    sessions: int,
    workers: int,
    deliver_timeout: float,
    chunk_size: int,
    chunks_in: str,
    chunk_timeout: float,
    inline_limit: int = 500,
) -> dict[str, Any]:
    from sqlalchemy import func, select

    from oidc_logout.demo.idp import load_clients
    from oidc_logout.storage.models import FINAL_STATES, Delivery, Termination, Token
    from oidc_logout.storage.queries import token_is_active
    from oidc_logout.termination import by_subject, terminate

    receiver_proc, receiver = start_receiver_process(max_seconds=chunk_timeout + deliver_timeout + 1200)
    dbname, url = create_pg_database()
    procs: list[Proc] = []
    try:
        provider = make_provider(url)
        factory = provider.session_factory
        clients = [rp_meta(f"rp-{i}", f"{receiver}/rp-{i}") for i in range(RPS)]
        load_clients(provider, clients)
        ids = [c["client_id"] for c in clients]
        seed_s = seed(factory, VICTIM, sessions, ids)
        seed(factory, "other", 10, ids)
        with factory() as db:
            victim_hash = db.scalar(select(Token.token_hash).where(Token.subject == VICTIM).limit(1))
            other_hash = db.scalar(select(Token.token_hash).where(Token.subject == "other").limit(1))
        env = {
            "OIDC_LOGOUT_DATABASE_URL": url,
            "OIDC_LOGOUT_DEV_MODE": "true",
            "OIDC_LOGOUT_ISSUER": "http://127.0.0.1:9",
            "OIDC_LOGOUT_TERMINATION_CHUNK_SIZE": str(chunk_size),
        }
        if chunks_in == "bench":
            env["OIDC_LOGOUT_TERMINATION_CHUNK_BUDGET"] = "0"  # the workers only deliver
        cli = str(Path(PYTHON).parent / "oidc-logout")
        procs = [Proc([cli, "worker"], env=env, ready=None) for _ in range(workers)]
        time.sleep(3.0)  # workers connected and idle
        load = Load(factory, ids, other_hash).start()
        time.sleep(3.0)  # baseline of the concurrent load
        rss_self0 = proc_status(os.getpid(), "VmHWM")

        t0 = time.perf_counter()
        with factory.begin() as db:
            term = terminate(
                db,
                by_subject(VICTIM),
                reason="incident response",
                initiator="bench",
                inline_limit=inline_limit,
            )
            term_id = term.id
        t_commit = time.perf_counter()
        with factory() as db:
            tok = db.scalar(select(Token).where(Token.token_hash == victim_hash))
            dead_at_commit = tok is not None and not token_is_active(db, tok)
            ended_at_commit = db.get(Termination, term_id).sessions_ended  # type: ignore[union-attr]

        chunk_times: list[float] = []
        if chunks_in == "bench":
            # The chunk runner in its own thread (connections of its own), each chunk timed.
            def runner() -> None:
                from oidc_logout.chunks import run_one_chunk

                while True:
                    t = time.perf_counter()
                    if run_one_chunk(factory, chunk_size, termination_id=term_id) is None:
                        return
                    chunk_times.append(time.perf_counter() - t)

            threading.Thread(target=runner, daemon=True).start()
        progress: list[tuple[float, int, int]] = []  # (s since commit, chunks_done, sessions_ended)
        total = sessions * RPS
        t_chunks = t_last = None
        final = delivered = 0
        deadline = t_commit + chunk_timeout
        while time.perf_counter() < deadline:
            with factory() as db:
                term = db.get(Termination, term_id)
                assert term is not None
                now = time.perf_counter()
                progress.append((now - t_commit, term.chunks_done, term.sessions_ended))
                if t_chunks is None and term.state == "complete":
                    t_chunks = now
                    deadline = now + deliver_timeout
                final = int(
                    db.scalar(
                        select(func.count())
                        .select_from(Delivery)
                        .where(Delivery.state.in_(list(FINAL_STATES)))
                    )
                    or 0
                )
            if t_chunks is not None and final >= total:
                t_last = time.perf_counter()
                break
            time.sleep(0.25)
        delivered = receiver_count(receiver)
        load.finish()
        rss_workers = [proc_status(p.pid, "VmHWM") for p in procs]
        rss_receiver = proc_status(receiver_proc.pid, "VmHWM")
        end_chunks = t_chunks or time.perf_counter()
        # Per-chunk time along the walk: first vs last tenth of the chunks.
        rates = _tenths(chunk_times) if chunk_times else _chunk_times(progress)
        return {
            "sessions": sessions,
            "rps": RPS,
            "workers": workers,
            "chunk_size": chunk_size,
            "chunks_in": chunks_in,
            "chunks": len(chunk_times) or (progress[-1][1] if progress else 0),
            "seed_s": seed_s,
            "cutoff_s": t_commit - t0,
            "dead_at_commit": dead_at_commit,
            "sessions_ended_at_commit": ended_at_commit,
            "last_chunk_s": (t_chunks - t_commit) if t_chunks else None,
            "last_delivery_s": (t_last - t_commit) if t_last else None,
            "final": final,
            "received": delivered,
            "total": total,
            "chunk_ms_first_tenth": rates[0],
            "chunk_ms_last_tenth": rates[1],
            "rss_worker_mib": [r / 1024 for r in rss_workers],
            "rss_receiver_mib": rss_receiver / 1024,
            "rss_bench_mib": (proc_status(os.getpid(), "VmHWM")) / 1024,
            "rss_bench_before_mib": rss_self0 / 1024,
            "login_before": load.stats("login", 0, t0),
            "login_during": load.stats("login", t_commit, end_chunks),
            "token_before": load.stats("token", 0, t0),
            "token_during": load.stats("token", t_commit, end_chunks),
            "max_waiting_locks": load.max_waiting_locks,
        }
    finally:
        for p in procs:
            p.stop(20)
        receiver_proc.stop()
        try:
            provider.engine.dispose()
        except Exception:
            pass
        drop_pg_database(dbname)


def _tenths(times: list[float]) -> tuple[float | None, float | None]:
    """Mean ms per chunk over the first and the last tenth of the timed chunks."""
    if len(times) < 10:
        return (median(times) * 1000, median(times) * 1000) if times else (None, None)
    k = len(times) // 10
    return sum(times[:k]) / k * 1000, sum(times[-k:]) / k * 1000


def _chunk_times(progress: list[tuple[float, int, int]]) -> tuple[float | None, float | None]:
    """Mean ms per chunk over the first and the last tenth of the chunks (from the samples)."""
    pts = [(t, c) for t, c, _ in progress]
    if not pts or pts[-1][1] < 10:
        return None, None
    n = pts[-1][1]

    def at(chunks: float) -> float:
        for t, c in pts:
            if c >= chunks:
                return t
        return pts[-1][0]

    tenth = n / 10
    first = (at(tenth) - at(1)) / max(1.0, tenth - 1) * 1000
    last = (at(n) - at(n - tenth)) / tenth * 1000
    return first, last


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", default="1000,10000,100000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=500)
    ap.add_argument("--deliver-timeout", type=float, default=900.0, help="seconds after the last chunk")
    ap.add_argument("--chunk-timeout", type=float, default=1800.0)
    ap.add_argument(
        "--inline-limit", type=int, default=500, help="termination.INLINE_LIMIT (0: always chunked)"
    )
    ap.add_argument(
        "--chunks-in",
        choices=("bench", "workers"),
        default="bench",
        help="bench: a timed runner thread here (workers only deliver); workers: the workers' loop hook",
    )
    ap.add_argument("--summary")
    args = ap.parse_args(argv)
    facts = print_facts()
    rows = []
    for s in [int(x) for x in args.sessions.split(",")]:
        r = run(
            s,
            args.workers,
            args.deliver_timeout,
            args.chunk_size,
            args.chunks_in,
            args.chunk_timeout,
            args.inline_limit,
        )
        rows.append(r)
        print(r, flush=True)

    def f(x: float | None, fmt: str = "{:.2f}") -> str:
        return "-" if x is None else fmt.format(x)

    print(
        table(
            [
                "sessions x RPs",
                "seed s",
                "cut-off (commit) s",
                "dead at commit",
                "last chunk s",
                "ms/chunk first/last 10%",
                "last delivery s",
                "final/total",
                "worker RSS MiB",
                "receiver MiB",
            ],
            [
                [
                    f"{r['sessions']}x{r['rps']}",
                    f(r["seed_s"]),
                    f(r["cutoff_s"], "{:.3f}"),
                    "yes" if r["dead_at_commit"] and r["sessions_ended_at_commit"] == 0 else "NO",
                    f(r["last_chunk_s"]),
                    f"{f(r['chunk_ms_first_tenth'], '{:.0f}')}/{f(r['chunk_ms_last_tenth'], '{:.0f}')}",
                    f(r["last_delivery_s"]),
                    f"{r['final']}/{r['total']}",
                    "/".join(f"{m:.0f}" for m in r["rss_worker_mib"]),
                    f"{r['rss_receiver_mib']:.0f}",
                ]
                for r in rows
            ],
        )
    )
    print(
        table(
            [
                "sessions",
                "login p50/p99/max ms before",
                "login during chunks",
                "token p50/p99/max before",
                "token during chunks",
                "max ungranted locks",
            ],
            [
                [str(r["sessions"])]
                + [
                    f"{r[k]['p50_ms']:.1f}/{r[k]['p99_ms']:.1f}/{r[k]['max_ms']:.0f} (n={r[k]['n']})"
                    for k in ("login_before", "login_during", "token_before", "token_during")
                ]
                + [str(r["max_waiting_locks"])]
                for r in rows
            ],
        )
    )
    out = {"facts": facts, "rows": rows}
    write_summary(args.summary, out)
    return out


if __name__ == "__main__":
    main()
