"""Worker scale-out and memory (issue 7), on a fresh PostgreSQL database.

1. Deliveries per second with 1, 2 and 4 ``oidc-logout worker`` processes (default settings:
   16 concurrent attempts each, batches of 100) draining D pending back-channel deliveries
   (10 RPs answering 200 at once, RS256), next to the single-thread RS256 signing ceiling.
   The workers are started first and connected; the D rows are then committed in one
   transaction, and the clock runs from that commit until every row is final.
2. Peak memory (VmHWM, the RSS high-water mark from /proc/<pid>/status) of the workers of
   those runs, and of an IdP process (demo IdP, werkzeug, embedded dispatcher, PostgreSQL)
   that terminates one subject with 1000 sessions x 10 RPs through the admin API
   (``POST /admin/terminations``) and delivers the resulting 10,000 logout tokens itself.

    python -m bench.worker_scaleout [--quick] [--deliveries 10000] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any

import requests

from .common import (
    PYTHON,
    Proc,
    create_pg_database,
    drop_pg_database,
    make_provider,
    proc_cpu,
    proc_status,
    receiver_count,
    rp_meta,
    seed_sessions,
    signing_rate,
    start_op,
    start_receiver_process,
    table,
    tree_cpu,
    write_summary,
)
from .machine import print_facts

RPS = 10
#: Extra environment of the worker processes (``--synchronous-commit off`` sets PGOPTIONS).
WORKER_ENV: dict[str, str] = {}


def _clear(factory: Any) -> None:
    from sqlalchemy import text

    with factory.begin() as db:
        db.execute(
            text(
                "TRUNCATE oidc_logout_delivery_attempt, oidc_logout_delivery, oidc_logout_termination RESTART IDENTITY CASCADE"
            )
        )


def _insert_pending(factory: Any, n: int, client_ids: list[str], receiver: str) -> None:
    from sqlalchemy import insert

    from oidc_logout.storage.models import BACKCHANNEL, PENDING, Delivery, Termination
    from oidc_logout.tokens import new_id

    now = dt.datetime.now(dt.UTC)
    term = new_id(12)
    rows = [
        dict(
            termination_id=term,
            channel=BACKCHANNEL,
            client_id=client_ids[i % len(client_ids)],
            sid=f"sid-{i // len(client_ids)}",
            subject="bench-user",
            target_uri=f"{receiver}/{client_ids[i % len(client_ids)]}",
            state=PENDING,
            attempts=0,
            created_at=now,
            next_attempt_at=now,
        )
        for i in range(n)
    ]
    with factory.begin() as db:
        db.execute(
            insert(Termination),
            [
                dict(
                    id=term,
                    target_kind="subject",
                    target_value="bench-user",
                    reason="bench",
                    initiator="bench",
                    created_at=now,
                )
            ],
        )
        for i in range(0, n, 5000):
            db.execute(insert(Delivery), rows[i : i + 5000])


def _final_count(factory: Any) -> tuple[int, int]:
    from sqlalchemy import func, select

    from oidc_logout.storage.models import FINAL_STATES, Delivery

    with factory() as db:
        final = (
            db.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.state.in_(list(FINAL_STATES)))
            )
            or 0
        )
        delivered = (
            db.scalar(select(func.count()).select_from(Delivery).where(Delivery.state == "delivered")) or 0
        )
    return int(final), int(delivered)


def _backends(factory: Any, dbname: str) -> int:
    from sqlalchemy import text

    with factory() as db:
        return int(
            db.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d"), {"d": dbname}) or 0
        )


def _pg_pids() -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() in ("postgres", "postmaster"):
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def _cpu_snapshot(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds per group of processes (postgres backends are re-listed each time: a
    backend that exits between two snapshots loses its share, so it is a lower bound)."""
    snap = {name: sum(tree_cpu(p) for p in pids) for name, pids in groups.items()}
    snap["postgres"] = sum(proc_cpu(p) for p in _pg_pids())
    snap["bench (this process)"] = time.process_time()
    return snap


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine from /proc/stat (every process, ours
    and anyone else's): tells "our processes are not using the CPU" from "the CPU is full"."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / hz, sum(fields) / hz


def _drain(factory: Any, n: int, timeout: float) -> tuple[float, int]:
    t0 = time.perf_counter()
    deadline = t0 + timeout
    final = delivered = 0
    while time.perf_counter() < deadline:
        final, delivered = _final_count(factory)
        if final >= n:
            break
        time.sleep(0.1)
    return time.perf_counter() - t0, delivered


def worker_run(
    k: int,
    n: int,
    db_url: str,
    dbname: str,
    factory: Any,
    client_ids: list[str],
    receiver: str,
    issuer: str,
    rec_pid: int,
) -> dict[str, Any]:
    _clear(factory)
    base = _backends(factory, dbname)
    env = {
        "OIDC_LOGOUT_DATABASE_URL": db_url,
        "OIDC_LOGOUT_DEV_MODE": "true",
        "OIDC_LOGOUT_ISSUER": issuer,
        **WORKER_ENV,
    }
    cli = str(Path(PYTHON).parent / "oidc-logout")
    workers = [Proc([cli, "worker"], env=env, ready=None) for _ in range(k)]
    try:
        deadline = time.monotonic() + 60
        while _backends(factory, dbname) < base + k and time.monotonic() < deadline:
            time.sleep(0.1)  # every worker has made its first claim (connected)
        time.sleep(0.5)
        hwm0 = [proc_status(w.pid, "VmHWM") for w in workers]
        before = receiver_count(receiver)
        groups = {"workers": [w.pid for w in workers], "RP receiver": [rec_pid]}
        cpu0 = _cpu_snapshot(groups)
        m0 = _machine_cpu()
        _insert_pending(factory, n, client_ids, receiver)
        secs, delivered = _drain(factory, n, 170.0)
        cpu1 = _cpu_snapshot(groups)
        m1 = _machine_cpu()
        hwm = [proc_status(w.pid, "VmHWM") for w in workers]
        received = receiver_count(receiver) - before
    finally:
        codes = [w.stop(20) for w in workers]
    return {
        "workers": k,
        "deliveries": n,
        "seconds": secs,
        "delivered": delivered,
        "received": received,
        "rate": delivered / secs,
        "hwm_idle_kib": hwm0,
        "cpu_ms_per_delivery": {g: (cpu1[g] - cpu0[g]) / max(1, delivered) * 1000 for g in cpu0},
        "cpu_busy": sum(cpu1[g] - cpu0[g] for g in cpu0) / secs,
        "machine_busy": (m1[0] - m0[0]) / secs,
        "hwm_kib": hwm,
        "exit_codes": codes,
    }


def idp_run(
    n_sessions: int, db_url: str, factory: Any, provider: Any, receiver: str, mode: str, dbname: str
) -> dict[str, Any]:
    """One subject with ``n_sessions`` x 10 RPs terminated through the IdP's admin API; the
    deliveries are made by the IdP's embedded dispatcher (``mode="embedded"``) or by one
    ``oidc-logout worker`` beside an IdP whose embedded dispatcher is off (``"worker"``)."""
    from oidc_logout.demo.idp import load_clients

    _clear(factory)
    clients = [rp_meta(f"idp-rp-{i}", f"{receiver}/idp-rp-{i}") for i in range(RPS)]
    admin = {
        "client_id": "admin",
        "client_secret": "admin-secret-" + "y" * 20,
        "grant_types": ["client_credentials"],
        "response_types": [],
        "scope": "oidc_logout:admin",
        "token_endpoint_auth_method": "client_secret_basic",
    }
    load_clients(provider, [*clients, admin])
    seed_sessions(factory, "idp-user", n_sessions, [c["client_id"] for c in clients])
    embedded = mode == "embedded"
    op_proc, op = start_op(db_url, embedded_dispatcher=embedded)
    worker = None
    try:
        if not embedded:
            base = _backends(factory, dbname)
            cli = str(Path(PYTHON).parent / "oidc-logout")
            worker = Proc(
                [cli, "worker"],
                env={
                    "OIDC_LOGOUT_DATABASE_URL": db_url,
                    "OIDC_LOGOUT_DEV_MODE": "true",
                    "OIDC_LOGOUT_ISSUER": provider.settings.issuer,
                },
                ready=None,
            )
            deadline = time.monotonic() + 60
            while _backends(factory, dbname) < base + 1 and time.monotonic() < deadline:
                time.sleep(0.1)
        tok = requests.post(
            f"{op}/token",
            data={"grant_type": "client_credentials", "scope": "oidc_logout:admin"},
            auth=(admin["client_id"], admin["client_secret"]),
            timeout=10,
        ).json()["access_token"]
        hwm0 = proc_status(op_proc.pid, "VmHWM")
        rss0 = proc_status(op_proc.pid, "VmRSS")
        before = receiver_count(receiver)
        t0 = time.perf_counter()
        r = requests.post(
            f"{op}/admin/terminations",
            json={"sub": "idp-user", "reason": "bench", "wait": 0},
            headers={"Authorization": f"Bearer {tok}"},
            timeout=120,
        )
        t_resp = time.perf_counter() - t0
        if r.status_code != 201:
            raise RuntimeError(f"admin termination answered {r.status_code}: {r.text[:300]}")
        # Every session's RPs: above termination.INLINE_LIMIT sessions the commit writes only
        # the cut-off and the outbox rows come from the chunks after it (issue 17), so the
        # admin API's report cannot count them; the drain waits for all of them.
        n = RPS * n_sessions
        secs, delivered = _drain(factory, n, 170.0)
        secs += t_resp
        hwm = proc_status(op_proc.pid, "VmHWM")
        rss = proc_status(op_proc.pid, "VmRSS")
        worker_hwm = proc_status(worker.pid, "VmHWM") if worker else 0
        received = receiver_count(receiver) - before
    finally:
        op_proc.stop(20)
        if worker:
            worker.stop(20)
    return {
        "mode": mode,
        "worker_hwm_kib": worker_hwm,
        "deliveries": n,
        "admin_response_s": t_resp,
        "seconds": secs,
        "delivered": delivered,
        "received": received,
        "rate": delivered / secs,
        "hwm0_kib": hwm0,
        "rss0_kib": rss0,
        "hwm_kib": hwm,
        "rss_kib": rss,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="300 deliveries, 1 and 2 workers (smoke)")
    p.add_argument("--deliveries", type=int, help="pending deliveries per worker run (default 4000)")
    p.add_argument("--workers", help="comma-separated worker counts (default 1,2,4)")
    p.add_argument(
        "--idp-sessions", type=int, help="sessions x 10 RPs for the IdP memory run (default 1000; 0 skips it)"
    )
    p.add_argument(
        "--idp-mode",
        default="worker",
        choices=["worker", "embedded", "both"],
        help="who delivers in the IdP memory run: one worker beside the IdP (default), "
        "the IdP's embedded dispatcher, or both runs",
    )
    p.add_argument(
        "--synchronous-commit",
        choices=["on", "off"],
        default="on",
        help="diagnostic: run the workers' PostgreSQL sessions with synchronous_commit "
        "off (PGOPTIONS) to see whether WAL flushes per result bound the rate",
    )
    p.add_argument("--summary-json")
    a = p.parse_args(argv)
    n = a.deliveries or (300 if a.quick else 4000)
    if a.synchronous_commit == "off":
        WORKER_ENV["PGOPTIONS"] = "-c synchronous_commit=off"
    ks = [int(x) for x in (a.workers or ("1,2" if a.quick else "1,2,4")).split(",")]
    idp_sessions = a.idp_sessions if a.idp_sessions is not None else (30 if a.quick else 1000)
    print("== delivery workers on PostgreSQL: scale-out and peak memory ==")
    print(f"command: python -m bench.worker_scaleout {' '.join(argv if argv is not None else sys.argv[1:])}")
    facts = print_facts(pg=True)
    print(
        f"setup: fresh PostgreSQL database; `oidc-logout worker` processes with default settings "
        f"(delivery_concurrency=16, batch 100); {n} pending deliveries over {RPS} RPs (RS256); "
        f"RP receiver in its own process answering 200 at once; workers' synchronous_commit="
        f"{a.synchronous_commit}"
    )
    dbname, db_url = create_pg_database()
    rec_proc, receiver = start_receiver_process(0.0, max_seconds=900)
    out: dict[str, Any] = {"bench": "worker_scaleout", "facts": facts, "runs": [], "idp": []}
    try:
        provider = make_provider(db_url)
        factory = provider.session_factory
        from oidc_logout.demo.idp import load_clients

        clients = [rp_meta(f"rp-{i}", f"{receiver}/rp-{i}") for i in range(RPS)]
        load_clients(provider, clients)
        ceiling, _ = signing_rate(provider.keyring.signing_key("RS256"), 0.3 if a.quick else 3.0, 20_000)
        out["ceiling"] = ceiling
        for k in ks:
            r = worker_run(
                k,
                n,
                db_url,
                dbname,
                factory,
                [c["client_id"] for c in clients],
                receiver,
                provider.settings.issuer,
                rec_proc.pid,
            )
            out["runs"].append(r)
            print(
                f"  {k} worker(s): {r['rate']:.0f} deliveries/s ({r['delivered']}/{n} in "
                f"{r['seconds']:.1f} s), peak RSS {max(r['hwm_kib']) / 1024:.0f} MiB",
                flush=True,
            )
        modes = ["worker", "embedded"] if a.idp_mode == "both" else [a.idp_mode]
        for mode in modes if idp_sessions else []:
            i = idp_run(idp_sessions, db_url, factory, provider, receiver, mode, dbname)
            out["idp"].append(i)
            print(
                f"  IdP fan-out ({mode}): {i['rate']:.0f} deliveries/s, IdP peak RSS "
                f"{i['hwm_kib'] / 1024:.0f} MiB, worker peak RSS {i['worker_hwm_kib'] / 1024:.0f} MiB",
                flush=True,
            )
        provider.engine.dispose()
    finally:
        rec_proc.stop()
        drop_pg_database(dbname)
    runs = out["runs"]
    one = runs[0]["rate"] if runs else float("nan")
    print()
    print(
        table(
            [
                "workers",
                "deliveries",
                "delivered",
                "seconds",
                "deliveries/s",
                "speed-up vs 1",
                "vs RS256 signing ceiling (1 thread)",
                "worker peak RSS MiB (each)",
            ],
            [
                [
                    r["workers"],
                    r["deliveries"],
                    r["delivered"],
                    f"{r['seconds']:.1f}",
                    f"{r['rate']:.0f}",
                    f"{r['rate'] / one:.2f}x",
                    f"{r['rate'] / out['ceiling']:.2f}",
                    ", ".join(f"{h / 1024:.0f}" for h in r["hwm_kib"]),
                ]
                for r in runs
            ],
        )
    )
    print(f"\nRS256 signing ceiling, one thread: {out['ceiling']:.0f} logout tokens/s")
    if runs:
        groups = list(runs[0]["cpu_ms_per_delivery"])
        print("\nCPU per delivery by process group (ms, from /proc; 2 cores = 2000 ms of CPU per second):")
        print(
            table(
                [
                    "workers",
                    *groups,
                    "these processes busy (cores)",
                    "whole machine busy (cores, incl. other load)",
                ],
                [
                    [
                        r["workers"],
                        *(f"{r['cpu_ms_per_delivery'][g]:.2f}" for g in groups),
                        f"{r['cpu_busy']:.2f}",
                        f"{r['machine_busy']:.2f}",
                    ]
                    for r in runs
                ],
            )
        )
    for i in out["idp"]:
        print()
        who = (
            "the IdP's embedded dispatcher"
            if i["mode"] == "embedded"
            else "1 oidc-logout worker (IdP's embedded dispatcher off)"
        )
        rows_i = [
            ["delivered by", who],
            ["deliveries (1 admin termination)", f"{i['deliveries']}"],
            ["delivered", f"{i['delivered']}"],
            ["admin API response (wait=0)", f"{i['admin_response_s'] * 1000:.0f} ms"],
            ["until all final", f"{i['seconds']:.1f} s ({i['rate']:.0f} deliveries/s)"],
            ["IdP RSS before / after", f"{i['rss0_kib'] / 1024:.0f} / {i['rss_kib'] / 1024:.0f} MiB"],
            [
                "IdP peak RSS (VmHWM) before / after",
                f"{i['hwm0_kib'] / 1024:.0f} / {i['hwm_kib'] / 1024:.0f} MiB",
            ],
        ]
        if i["worker_hwm_kib"]:
            rows_i.append(["worker peak RSS (VmHWM)", f"{i['worker_hwm_kib'] / 1024:.0f} MiB"])
        print(
            table(
                [
                    "10,000-delivery fan-out, PostgreSQL"
                    if i["deliveries"] == 10_000
                    else f"{i['deliveries']}-delivery fan-out, PostgreSQL",
                    "value",
                ],
                rows_i,
            )
        )
    write_summary(a.summary_json, out)
    incomplete = [r for r in [*out["runs"], *out["idp"]] if r["delivered"] < r["deliveries"]]
    for r in incomplete:
        print(f"FAILED: {r['delivered']} of {r['deliveries']} delivered: its rate measures a partial run")
    if incomplete:
        raise SystemExit(1)  # run_all reports it FAILED instead of a rate
    return out


if __name__ == "__main__":
    main()
