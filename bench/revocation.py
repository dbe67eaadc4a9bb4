"""Revocation endpoint throughput and CPU per request (issue 7): our OP's ``/revoke`` against
a plain Authlib ``RevocationEndpoint`` (bench/reference_authlib.py) on the same stack
(Flask + SQLAlchemy ORM + SQLite file), both served by gunicorn with the same number of sync
workers, driven by the same bounded load generator.

Every request revokes a distinct, valid access token (pre-issued straight into each app's
database), authenticated with HTTP Basic client credentials, ``token_type_hint=access_token``.

Load generator: Python threads (1 or 8), each with its own ``http.client`` connection
(re-opened when the server closes it: gunicorn's sync workers close after every response, for
both apps alike), bounded by a request count and a time limit. It runs on the same 2 cores
as the server; its own CPU is reported.

CPU per request = (CPU seconds of the gunicorn master + workers, from /proc, after - before)
/ requests. The reference runs twice: with SQLAlchemy's stock SQLite settings (rollback
journal, synchronous=FULL), and with the WAL + synchronous=NORMAL pragmas oidc_logout's engine
sets (so the ratio can be read with and without that advantage).

Side by side: all three servers run at once (idle between their turns) and the measurement is
interleaved - ``--rounds`` rounds; in each, every concurrency level runs one slice of its
requests against every app, in an order rotated each round - so load from other jobs on a shared
machine falls on all apps alike. req/s = all requests of an app and level / their wall time; CPU
per request is the steadier figure. A floor row (``GET /health`` of the reference app: gunicorn +
Flask answering "ok", no database) shows what no revocation endpoint on this stack can beat.

Then both apps are profiled in-process (Flask test client, cProfile) to show where a
request's time goes.

    python -m bench.revocation [--quick] [--requests 3000] [--concurrency 1,8] [--workers 4] [--rounds 3]
    python -m bench.revocation --fastpath-ab REV   # fast path at git REV vs now (bench/fastpath_ab.py)
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import reference_authlib as ref
from .common import (
    PYTHON,
    Proc,
    basic_authorization,
    cumulative_of,
    free_port,
    make_provider,
    profile_report,
    revocation_load,
    rp_meta,
    seed_access_tokens,
    start_op,
    table,
    tree_cpu,
    write_summary,
)
from .machine import print_facts

OURS = "ours (oidc_logout /revoke)"
PLAIN = "plain Authlib (stock SQLite)"
PLAIN_WAL = "plain Authlib + WAL/NORMAL"
FLOOR = "floor: gunicorn+Flask GET /health"
CLIENT_ID = "revoker"
SECRET = "revoker-secret-" + "z" * 24


def _client_meta() -> dict[str, Any]:
    meta = rp_meta(CLIENT_ID, None, secret=SECRET)
    meta.update(grant_types=["client_credentials"], response_types=[], scope="read")
    return meta


def _basic() -> str:
    return basic_authorization(CLIENT_ID, SECRET)


def load(
    port: int, tokens: list[str], concurrency: int, max_seconds: float, floor: bool = False
) -> dict[str, Any]:
    """POST /revoke once per token with ``concurrency`` threads; bounded by len(tokens) and
    ``max_seconds``. ``floor``: ``GET /health`` instead, once per item."""
    url = f"http://127.0.0.1:{port}" + ("/health" if floor else "/revoke")
    return revocation_load(url, tokens, concurrency, max_seconds, client=(CLIENT_ID, SECRET), get=floor)


def _wait(port: int, path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                c.close()
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not answer {path}")


def _settle(pid: int, timeout: float = 30.0) -> None:
    """Wait until the server tree is idle (all gunicorn workers booted: each one builds its
    app after the master starts listening)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c0 = tree_cpu(pid)
        time.sleep(0.4)
        if tree_cpu(pid) - c0 < 0.02:
            return


class App:
    """One server under test: its process, port and unused tokens."""

    def __init__(self, name: str, proc: Proc, port: int, tokens: list[str], floor: bool = False) -> None:
        self.name, self.proc, self.port, self.tokens, self.floor = name, proc, port, tokens, floor
        self.pos = 0

    def take(self, n: int) -> list[str]:
        out = self.tokens[self.pos : self.pos + n]
        self.pos += n
        return out


def measure(
    apps: list[App], levels: list[int], per_level: int, warmup: int, rounds: int, max_seconds: float
) -> list[dict[str, Any]]:
    """Interleaved: ``rounds`` rounds; in each, every level runs a slice against every app, the
    app order rotated per round. Figures are summed over the rounds per (app, level)."""
    for app in apps:
        _settle(app.proc.pid)
        load(app.port, app.take(warmup), min(8, max(levels)), 30, app.floor)  # every worker warm
        _settle(app.proc.pid)
    acc: dict[tuple[str, int], dict[str, Any]] = {}
    slice_max = max_seconds / rounds
    for rnd in range(rounds):
        for c in levels:
            n = per_level // rounds + (per_level % rounds if rnd == rounds - 1 else 0)
            order = apps[rnd % len(apps) :] + apps[: rnd % len(apps)]
            for app in order:
                cpu0 = tree_cpu(app.proc.pid)
                r = load(app.port, app.take(n), c, slice_max, app.floor)
                cpu = tree_cpu(app.proc.pid) - cpu0
                a = acc.setdefault(
                    (app.name, c),
                    {
                        "app": app.name,
                        "concurrency": c,
                        "requests": 0,
                        "wall": 0.0,
                        "server_cpu": 0.0,
                        "client_cpu": 0.0,
                        "statuses": {},
                        "errors": 0,
                        "round_rps": [],
                    },
                )
                a["requests"] += r["requests"]
                a["wall"] += r["wall"]
                a["server_cpu"] += cpu
                a["client_cpu"] += r["client_cpu"]
                a["errors"] += r["errors"]
                a["round_rps"].append(round(r["rps"], 1))
                for k, v in r["statuses"].items():
                    a["statuses"][k] = a["statuses"].get(k, 0) + v
    out = []
    for c in levels:
        for app in apps:
            r = acc[(app.name, c)]
            n = r["requests"]
            r.update(
                rps=n / r["wall"] if r["wall"] else 0.0,
                cpu_ms_per_req=r["server_cpu"] / n * 1000 if n else float("nan"),
                client_cpu_ms_per_req=r["client_cpu"] / n * 1000 if n else float("nan"),
            )
            out.append(r)
            print(
                f"  {app.name:<34} c={c}: {r['rps']:7.0f} req/s (rounds {r['round_rps']}), server CPU "
                f"{r['cpu_ms_per_req']:.2f} ms/req, statuses {r['statuses']}, errors {r['errors']}",
                flush=True,
            )
    return out


def gunicorn(app: str, port: int, workers: int, env: dict[str, str]) -> Proc:
    return Proc(
        [
            PYTHON,
            "-m",
            "gunicorn",
            app,
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            str(workers),
            "--worker-class",
            "sync",
            "--backlog",
            "2048",
            "--log-level",
            "info",
        ],
        env=env,
        ready="Listening at",
        timeout=60,
    )


def profile_ours(db_url: str, n: int) -> tuple[str, float]:
    from oidc_logout.demo.idp import create_idp_app

    from .common import bench_settings
    from .common import seed_access_tokens as seed

    app = create_idp_app(
        bench_settings("http://127.0.0.1:9", db_url),
        start_background=False,
        secret_key="k" * 32,
        clients=[_client_meta()],
    )
    provider = app.extensions["oidc_logout"].provider
    tokens = seed(provider.session_factory, CLIENT_ID, n + 50)
    return _profile_client(app, tokens, n)


def profile_ref(db_url: str, n: int, pragmas: bool) -> tuple[str, float]:
    tokens = ref.setup_db(db_url, CLIENT_ID, SECRET, n + 50, pragmas)
    app = ref.create_app(db_url, pragmas)
    return _profile_client(app, tokens, n)


def _profile_client(app: Any, tokens: list[str], n: int) -> tuple[str, float]:
    client = app.test_client()
    hdr = {"Authorization": _basic()}

    def call(tok: str) -> None:
        r = client.post("/revoke", data={"token": tok, "token_type_hint": "access_token"}, headers=hdr)
        assert r.status_code == 200, r.data

    for tok in tokens[:50]:
        call(tok)
    c0 = time.process_time()
    for tok in tokens[50 : 50 + n // 2]:
        call(tok)  # unprofiled: plain in-process CPU per request
    cpu = (time.process_time() - c0) / (n // 2)
    prof = cProfile.Profile()
    rest = tokens[50 + n // 2 : 50 + n]
    prof.enable()
    for tok in rest:
        call(tok)
    prof.disable()
    report = (
        profile_report(prof, len(rest), top=20)
        + "\n\n"
        + cumulative_of(
            prof,
            len(rest),
            [
                "app.py:wsgi_app",
                "app.py:full_dispatch_request",
                "views.py:revoke",
                "fastpath.py:try_revoke_access_token",
                "fastpath.py:_execute",
                "authorization_server.py:create_endpoint_response",
                "base.py:authenticate_endpoint_client",
                "server.py:_load_client",
                "functions.py:query_client",
                "authenticate_client",
                "endpoint.py:query_token",
                "functions.py:query_token",
                "endpoint.py:revoke_token",
                "functions.py:revoke_token",
                "session.py:commit",
                "session.py:scalar",
                "query.py:first",
                "session.py:get",
                "session.py:close",
                "scoping.py:remove",
                "test.py:open",
            ],
        )
    )
    return report, cpu * 1000


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="100 requests per level, no profile (smoke)")
    p.add_argument("--requests", type=int, help="requests per concurrency level and app (default 3000)")
    p.add_argument("--concurrency", default="1,8")
    p.add_argument(
        "--workers",
        type=int,
        default=2 * (os.cpu_count() or 1),
        help="gunicorn sync workers per app (default 2 x cores)",
    )
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3; 1 with --quick)")
    p.add_argument("--max-seconds", type=float, default=25.0, help="time bound per level and app")
    p.add_argument("--no-floor", action="store_true", help="skip the GET /health floor row")
    p.add_argument(
        "--profile", type=int, help="requests profiled in-process per app (default 2000; 0 = none)"
    )
    p.add_argument("--summary-json")
    p.add_argument(
        "--fastpath-ab",
        metavar="REV",
        help="only an in-process A/B of oidc_logout/rfc7009/fastpath.py: the file at git "
        "revision REV against the working tree (bench/fastpath_ab.py)",
    )
    p.add_argument("--ab-calls", type=int, default=2000, help="A/B: calls per level and variant")
    p.add_argument("--ab-rounds", type=int, default=5, help="A/B: interleaved rounds")
    p.add_argument("--ab-dbs", default="sqlite,pg", help="A/B: sqlite and/or pg")
    a = p.parse_args(argv)
    if a.fastpath_ab:
        from . import fastpath_ab

        summary = fastpath_ab.main(a.fastpath_ab, a.ab_calls, a.ab_rounds, a.ab_dbs.split(","))
        write_summary(a.summary_json, summary)
        return summary
    per_level = a.requests or (100 if a.quick else 3000)
    levels = [int(x) for x in a.concurrency.split(",")]
    rounds = max(1, min(a.rounds or (1 if a.quick else 3), per_level))
    n_prof = a.profile if a.profile is not None else (0 if a.quick else 2000)
    warmup = 40 if a.quick else 200
    print("== RFC 7009 revocation: our /revoke vs a plain Authlib RevocationEndpoint ==")
    print(f"command: python -m bench.revocation {' '.join(argv if argv is not None else sys.argv[1:])}")
    facts = print_facts(pg=False)
    print(
        f"setup: gunicorn {a.workers} sync workers per app, SQLite file, distinct valid access token "
        f"per request; load generator = Python threads + http.client in this process, "
        f"{per_level} requests per level and app in {rounds} interleaved round(s) "
        f"(at most {a.max_seconds:.0f} s per level and app)"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-revoke-"))
    n_tok = warmup + per_level * len(levels)
    apps: list[App] = []
    rows: list[dict[str, Any]] = []
    floor_rows: list[dict[str, Any]] = []
    try:
        # (a) ours
        db_url = f"sqlite:///{tmp / 'ours.db'}"
        provider = make_provider(db_url)
        from oidc_logout.demo.idp import load_clients

        load_clients(provider, [_client_meta()])
        tokens = seed_access_tokens(provider.session_factory, CLIENT_ID, n_tok)
        proc, url = start_op(db_url, server="gunicorn", workers=a.workers, background=False)
        apps.append(App(OURS, proc, int(url.rsplit(":", 1)[1]), tokens))
        # (b) the plain Authlib endpoint, stock SQLite settings and with our pragmas
        ref_urls = {}
        for pragmas in (False, True):
            name = PLAIN_WAL if pragmas else PLAIN
            ref_url = ref_urls[name] = f"sqlite:///{tmp / ('ref-wal.db' if pragmas else 'ref.db')}"
            ref_tokens = ref.setup_db(ref_url, CLIENT_ID, SECRET, n_tok, pragmas)
            port = free_port()
            proc = gunicorn(
                "bench.reference_authlib:wsgi_app()",
                port,
                a.workers,
                {"BENCH_REF_DB": ref_url, "BENCH_REF_PRAGMAS": "1" if pragmas else "0"},
            )
            apps.append(App(name, proc, port, ref_tokens))
            _wait(port, "/health")
        if not a.no_floor:
            plain = apps[1]
            apps.append(App(FLOOR, plain.proc, plain.port, ["-"] * n_tok, floor=True))
        try:
            measured = measure(apps, levels, per_level, warmup, rounds, a.max_seconds)
        finally:
            for app in apps:
                if not app.floor:
                    app.proc.stop()
        rows = [r for r in measured if r["app"] != FLOOR]
        floor_rows = [r for r in measured if r["app"] == FLOOR]
        from sqlalchemy import create_engine, func, select, text

        from oidc_logout.storage.models import Token

        with provider.session_factory() as db:
            revoked_ours = db.scalar(
                select(func.count()).select_from(Token).where(Token.revoked_at.is_not(None))
            )
        provider.engine.dispose()
        revoked_ref = {}
        for name, ref_url in ref_urls.items():
            eng = create_engine(ref_url)
            with eng.connect() as conn:
                revoked_ref[name] = conn.execute(
                    text("SELECT count(*) FROM oauth2_token WHERE access_token_revoked_at > 0")
                ).scalar()
            eng.dispose()
        print(
            f"  tokens revoked in the databases: ours {revoked_ours}, "
            + ", ".join(f"{k} {v}" for k, v in revoked_ref.items())
        )
        prof_ours = prof_ref = ""
        app_cpu: dict[str, float] = {}
        if n_prof:
            prof_ours, app_cpu["ours"] = profile_ours(f"sqlite:///{tmp / 'prof-ours.db'}", n_prof)
            prof_ref, app_cpu["plain"] = profile_ref(f"sqlite:///{tmp / 'prof-ref.db'}", n_prof, False)
    finally:
        for app in apps:
            app.proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    base = {r["concurrency"]: r for r in rows if r["app"] == PLAIN}
    basew = {r["concurrency"]: r for r in rows if r["app"] == PLAIN_WAL}

    def ratio(a: float, b: float) -> float:
        # /proc CPU has clock-tick (10 ms) resolution: a smoke run can read 0.
        return a / b if b else float("nan")

    def vs(r: dict[str, Any], b: dict[int, dict[str, Any]]) -> str:
        o = b.get(r["concurrency"])
        if o is None:
            return ""
        return f"{ratio(r['rps'], o['rps']):.2f}x / {ratio(o['cpu_ms_per_req'], r['cpu_ms_per_req']):.2f}x"

    print(
        table(
            [
                "app",
                "concurrency",
                "requests",
                "req/s",
                "server CPU ms/req",
                "client CPU ms/req",
                "non-200",
                "vs plain (stock): req/s / CPU",
                "vs plain + WAL: req/s / CPU",
            ],
            [
                [
                    r["app"],
                    r["concurrency"],
                    r["requests"],
                    f"{r['rps']:.0f}",
                    f"{r['cpu_ms_per_req']:.2f}",
                    f"{r['client_cpu_ms_per_req']:.2f}",
                    sum(v for k, v in r["statuses"].items() if k != 200) + r["errors"],
                    vs(r, base),
                    vs(r, basew),
                ]
                for r in rows + floor_rows
            ],
        )
    )
    print("\nratios: req/s ours / plain, and CPU per request plain / ours (higher is better for both).")
    print("project target: ours >= 3x the plain (stock) figure.")
    for r in rows:
        if r["app"] == OURS and r["concurrency"] in base:
            o = base[r["concurrency"]]
            rr, cr = ratio(r["rps"], o["rps"]), ratio(o["cpu_ms_per_req"], r["cpu_ms_per_req"])
            print(
                f"  c={r['concurrency']}: req/s {rr:.2f}x ({'met' if rr >= 3 else 'NOT met'}), "
                f"CPU/request {cr:.2f}x ({'met' if cr >= 3 else 'NOT met'})"
            )
    for f in floor_rows:
        print(
            f"  floor c={f['concurrency']} (GET /health, no database): {f['rps']:.0f} req/s, "
            f"{f['cpu_ms_per_req']:.2f} ms CPU/req; best possible CPU ratio on this stack "
            + (
                f"{ratio(base[f['concurrency']]['cpu_ms_per_req'], f['cpu_ms_per_req']):.2f}x"
                if f["concurrency"] in base
                else "n/a"
            )
        )
    if app_cpu:
        print(
            f"\nin-process (Flask test client, no HTTP server), CPU per request: ours "
            f"{app_cpu['ours']:.2f} ms, plain Authlib (stock SQLite) {app_cpu['plain']:.2f} ms"
        )
        print("\n-- profile: ours (in-process, cProfile) --\n" + prof_ours)
        print("\n-- profile: plain Authlib (in-process, cProfile) --\n" + prof_ref)
    summary = {
        "bench": "revocation",
        "facts": facts,
        "rows": rows,
        "floor_rows": floor_rows,
        "workers": a.workers,
        "rounds": rounds,
        "app_cpu_ms": app_cpu,
    }
    write_summary(a.summary_json, summary)
    return summary


if __name__ == "__main__":
    main()
