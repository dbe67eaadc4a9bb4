"""RFC 7009 fast path, A/B in one run: the current ``oidc_logout/rfc7009/fastpath.py`` against the
same file at an earlier git revision (loaded from ``git show REV:...`` into memory; the old code
is not kept in the tree).

Two levels, each interleaved (``--ab-rounds`` rounds; in each, both variants run one slice, in an
order alternated per round) so that load from other jobs falls on both alike:

* ``statement``: ``try_revoke_access_token(engine, ...)`` called directly (form checks, hashing,
  the one UPDATE, commit);
* ``app``: ``POST /revoke`` through the demo IdP's Flask app in-process (test client, no HTTP
  server), with the view's fast-path function swapped per variant.

Every call revokes a distinct valid access token (pre-issued into the database) and must take
the fast path (the function returns True / the app answers 200). Figures: median over rounds of
CPU (``time.process_time``) and wall time per call.

Then two counts that do not depend on the machine's load, at the ``statement`` level: Python
function calls per call (cProfile ``total_calls``) and, on PostgreSQL, round trips per call
(``ReadyForQuery`` messages in libpq's protocol trace of every connection the engine opens,
after a warm-up that lets psycopg prepare the statement).

    python -m bench.revocation --fastpath-ab REV [--ab-calls 2000] [--ab-rounds 5] [--ab-dbs sqlite,pg]
"""

from __future__ import annotations

import base64
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from .common import ROOT, create_pg_database, drop_pg_database, table

PATH = "oidc_logout/rfc7009/fastpath.py"


def load_revision(rev: str) -> ModuleType:
    """``PATH`` as it was at ``rev``, imported as a sibling module (its relative imports resolve
    against the installed package)."""
    src = subprocess.run(
        ["git", "show", f"{rev}:{PATH}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    name = "oidc_logout.rfc7009._fastpath_ab_old"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "oidc_logout.rfc7009"
    sys.modules[name] = mod
    exec(compile(src, f"{rev}:{PATH}", "exec"), mod.__dict__)
    return mod


def _git_rev(rev: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def _timed(fn: Callable[[str], None], tokens: list[str]) -> tuple[float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    for tok in tokens:
        fn(tok)
    n = len(tokens)
    return (time.process_time() - c0) / n * 1000, (time.perf_counter() - t0) / n * 1000


def _counts(
    engine: Any,
    variants: dict[str, ModuleType],
    make: Callable[[ModuleType], Callable[[str], None]],
    take: Callable[[int], list[str]],
    n: int = 200,
) -> dict[str, dict[str, float | None]]:
    """Per variant: Python function calls and (PostgreSQL) round trips per statement-level call."""
    import cProfile
    import pstats

    from sqlalchemy import event

    pg = engine.dialect.name == "postgresql"
    for mod in variants.values():  # every connection from here on is traced
        close = getattr(mod, "close_connections", None)
        if close is not None:
            close(engine)
    engine.dispose()
    tmp = Path(tempfile.mkdtemp(prefix="bench-fastpath-trace-"))
    opened: list[Any] = []
    files = [(tmp / "warm.txt").open("w")]

    def retrace(path: Path | None) -> None:
        for conn in opened:
            if not conn.closed:
                conn.pgconn.untrace()  # flushes libpq's buffer
        if path is not None:
            files.append(path.open("w"))
            for conn in opened:
                if not conn.closed:
                    conn.pgconn.trace(files[-1].fileno())

    if pg:

        @event.listens_for(engine.pool, "connect")
        def _trace(dbapi_conn: Any, _record: Any) -> None:
            opened.append(dbapi_conn)
            dbapi_conn.pgconn.trace(files[-1].fileno())

    out: dict[str, dict[str, float | None]] = {}
    try:
        for name, mod in variants.items():
            call = make(mod)
            for tok in take(10):  # connections open, psycopg's prepare threshold (5) passed
                call(tok)
            trips = None
            if pg:
                path = tmp / f"{len(out)}.txt"
                retrace(path)
                for tok in take(n):
                    call(tok)
                retrace(tmp / f"{len(out)}-after.txt")
                text = path.read_text()
                trips = (
                    sum(1 for line in text.splitlines() if "\tB\t" in line and "ReadyForQuery" in line) / n
                )
            prof = cProfile.Profile()
            batch = take(n)
            prof.enable()
            for tok in batch:
                call(tok)
            prof.disable()
            out[name] = {"python_calls": pstats.Stats(prof).total_calls / n, "round_trips": trips}  # type: ignore[attr-defined]
    finally:
        if pg:
            retrace(None)
        for f in files:
            f.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def run_db(db_url: str, variants: dict[str, ModuleType], calls: int, rounds: int) -> list[dict[str, Any]]:
    from oidc_logout.demo.idp import create_idp_app
    from oidc_logout.flask import views
    from oidc_logout.rfc7009 import fastpath as current_module

    from .common import bench_settings, seed_access_tokens
    from .revocation import CLIENT_ID, SECRET, _client_meta

    app = create_idp_app(
        bench_settings("http://127.0.0.1:9", db_url),
        start_background=False,
        secret_key="k" * 32,
        clients=[_client_meta()],
    )
    provider = app.extensions["oidc_logout"].provider
    engine = provider.engine
    per_slice = max(1, calls // rounds)
    warm = 50
    need = len(variants) * 2 * (warm + per_slice * rounds) + len(variants) * 410
    pool = iter(seed_access_tokens(provider.session_factory, CLIENT_ID, need))
    take = lambda n: [next(pool) for _ in range(n)]  # noqa: E731
    basic = "Basic " + base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
    client = app.test_client()
    real_view_fn = views.try_revoke_access_token
    # The demo IdP answers from RevocationMiddleware (before Flask), which calls the module's
    # try_revoke_access_token: both entries get the variant under test.
    real_module_fn = current_module.try_revoke_access_token
    # Each variant's function, taken before any swap: once via_app has put the old one into the
    # current module, current_module.try_revoke_access_token is no longer the new one.
    functions = {id(mod): mod.try_revoke_access_token for mod in variants.values()}

    def statement(mod: ModuleType) -> Callable[[str], None]:
        fn = functions[id(mod)]

        def call(tok: str) -> None:
            ok = fn(engine, basic, [("token", tok), ("token_type_hint", "access_token")], False)
            assert ok, "the fast path declined a plain request"

        return call

    def via_app(mod: ModuleType) -> Callable[[str], None]:
        views.try_revoke_access_token = functions[id(mod)]  # type: ignore[attr-defined]
        current_module.try_revoke_access_token = functions[id(mod)]  # type: ignore[attr-defined]

        def call(tok: str) -> None:
            r = client.post(
                "/revoke",
                data={"token": tok, "token_type_hint": "access_token"},
                headers={"Authorization": basic},
            )
            assert r.status_code == 200, r.data

        return call

    levels = {"statement": statement, "app": via_app}
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    names = list(variants)
    try:
        for level, make in levels.items():
            for name in names:  # warm-up: caches, pool, first compile
                _timed(make(variants[name]), take(warm))
            for rnd in range(rounds):
                order = names if rnd % 2 == 0 else list(reversed(names))
                for name in order:
                    samples.setdefault((level, name), []).append(
                        _timed(make(variants[name]), take(per_slice))
                    )
        views.try_revoke_access_token = real_view_fn  # type: ignore[attr-defined]
        current_module.try_revoke_access_token = real_module_fn  # type: ignore[attr-defined]
        counts = _counts(engine, variants, statement, take)
    finally:
        views.try_revoke_access_token = real_view_fn  # type: ignore[attr-defined]
        current_module.try_revoke_access_token = real_module_fn  # type: ignore[attr-defined]
        engine.dispose()
    rows = []
    for level in levels:
        for name in names:
            s = samples[(level, name)]
            rows.append(
                {
                    "level": level,
                    "variant": name,
                    "calls": per_slice * rounds,
                    "cpu_ms": statistics.median(c for c, _ in s),
                    "wall_ms": statistics.median(w for _, w in s),
                    "cpu_rounds": [round(c, 4) for c, _ in s],
                }
            )
    for name in names:
        rows.append({"level": "counts", "variant": name, **counts[name]})
    return rows


def main(rev: str, calls: int, rounds: int, dbs: list[str]) -> dict[str, Any]:
    from oidc_logout.rfc7009 import fastpath as current

    from .machine import print_facts

    print(f"== RFC 7009 fast path A/B: {PATH} at {_git_rev(rev)} (old) vs the working tree (new) ==")
    print(f"command: python -m bench.revocation {' '.join(sys.argv[1:])}")
    facts = print_facts(pg="pg" in dbs)
    old_label, new_label = f"old ({_git_rev(rev)})", "new (working tree)"
    variants = {old_label: load_revision(rev), new_label: current}
    print(
        f"setup: {calls} calls per level and variant in {rounds} interleaved rounds; a distinct "
        "valid access token per call; median over rounds of CPU and wall time per call"
    )
    all_rows: list[dict[str, Any]] = []
    for db in dbs:
        tmp = Path(tempfile.mkdtemp(prefix="bench-fastpath-ab-"))
        pg_name = None
        try:
            if db == "pg":
                pg_name, url = create_pg_database()
            else:
                url = f"sqlite:///{tmp / 'ab.db'}"
            for r in run_db(url, variants, calls, rounds):
                r["db"] = "PostgreSQL" if db == "pg" else "SQLite file"
                all_rows.append(r)
        finally:
            if pg_name:
                drop_pg_database(pg_name)
            shutil.rmtree(tmp, ignore_errors=True)
    count_rows = [r for r in all_rows if r["level"] == "counts"]
    all_rows = [r for r in all_rows if r["level"] != "counts"]
    out = []
    for r in all_rows:
        base = next(
            o
            for o in all_rows
            if o["db"] == r["db"] and o["level"] == r["level"] and o["variant"] == old_label
        )
        delta = r["cpu_ms"] - base["cpu_ms"]
        out.append(
            [
                r["db"],
                r["level"],
                r["variant"],
                r["calls"],
                f"{r['cpu_ms']:.3f}",
                f"{r['wall_ms']:.3f}",
                "" if r is base else f"{delta:+.3f}",
                " ".join(f"{c:.3f}" for c in r["cpu_rounds"]),
            ]
        )
    print()
    print(
        table(
            [
                "database",
                "level",
                "variant",
                "calls",
                "CPU ms/call",
                "wall ms/call",
                "CPU new - old",
                "CPU ms/call per round",
            ],
            out,
        )
    )
    print()
    print("statement level, independent of load: Python function calls (cProfile) and round trips per call")
    print(
        table(
            ["database", "variant", "Python calls/call", "round trips/call"],
            [
                [
                    r["db"],
                    r["variant"],
                    f"{r['python_calls']:.0f}",
                    "-" if r["round_trips"] is None else f"{r['round_trips']:.2f}",
                ]
                for r in count_rows
            ],
        )
    )
    return {"bench": "fastpath_ab", "facts": facts, "rows": all_rows, "counts": count_rows}
