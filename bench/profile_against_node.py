"""Where oidc-logout's time goes under the workload of bench/against_node.py (issue 15 "profile
first"): py-spy samples every thread of both ``serve`` workers while the driver runs.

* revocation: the driver's revocation load (distinct client_credentials tokens, c = 1 and 8);
  CPU samples only (py-spy's default drops idle threads), attributed per request using the
  CPU per request measured without the profiler in the same run;
* fan-out: the driver's end_session runs at one M against the same app with a timeline of
  each logout (bench/op_server_traced.py): what runs between the end_session request reaching
  the app and the first POST, in ms (py-spy's samples carry no time, and the dispatcher's
  periodic polling would blur them).

    python -m bench.against_node --profile [--tokens 2000] [--dbs sqlite,postgresql]
        [--sizes 50] [--runs 5]

Needs py-spy (``pip install py-spy``, in the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .against_node import (
    CHROMIUM,
    CHROMIUM_ARGS,
    RPReceiver,
    Target,
    fanout_run,
    introspect,
    issue_tokens,
    revoke_load,
    start_ours,
)
from .common import children, median, table, write_summary
from .machine import print_facts
from .op_server_traced import timelines

#: Leaf frames that are a thread waiting (py-spy's own idle detection misses some of them,
#: e.g. on a loaded machine): left out of the CPU breakdown, their share reported.
IDLE_LEAVES = (
    "SyncWorker.wait (",
    "Condition.wait (",
    "Event.wait (",
    "wait_conn (",
    "wait_c (",
    "_wait (",
    # gthread: a pool thread blocked on its work queue, the main loop in epoll_wait
    "_worker (",
    "EpollSelector.select (",
)

IDLE_LEAVES_FUNCS = tuple(x.removesuffix(" (") for x in IDLE_LEAVES)
#: gunicorn 27's close_graceful: shut down the write side, then recv() until the client closes
#: (waiting for the client, not working).
GRACEFUL_RECV = "gunicorn/util.py:312)"


def _waiting(leaf: str) -> bool:
    return leaf.split(" (")[0].endswith(IDLE_LEAVES_FUNCS) or leaf.endswith(GRACEFUL_RECV)


RATE = 997  # samples per second and thread (prime: no lockstep with periodic work)

Stack = list[str]


def py_spy() -> str:
    """py-spy on PATH, or next to this interpreter (a virtualenv's bin)."""
    return shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


class Spy:
    """py-spy recording every ``serve`` worker of ``target`` until :meth:`stop`."""

    def __init__(self, target: Target, out: Path, idle: bool) -> None:
        exe = py_spy()
        self.files: list[Path] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        for pid in children(target.procs[0].pid):
            f = out / f"{pid}-{time.monotonic_ns()}.txt"
            args = [exe, "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw", "--threads"]
            args += ["--full-filenames", "--nonblocking", "-o", str(f)] + (["--idle"] if idle else [])
            self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            self.files.append(f)
        time.sleep(1.5)  # py-spy attaches

    def stop(self) -> list[tuple[Stack, int]]:
        for p in self.procs:
            p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        samples: list[tuple[Stack, int]] = []
        for f in self.files:
            if not f.exists():
                continue
            for line in f.read_text().splitlines():
                stack, _, n = line.rpartition(" ")
                if stack and n.isdigit():
                    samples.append((stack.split(";"), int(n)))
        return samples


def frame_group(frame: str) -> str:
    """The package a frame ``func (path:line)`` belongs to."""
    if frame.startswith("thread ("):
        return "native threads without Python frames (granian's HTTP runtime)"
    path = frame.rsplit("(", 1)[-1]
    for key, label in (
        ("/gunicorn/", "gunicorn (sync worker: accept, parse, respond)"),
        ("/granian/", "granian (WSGI glue)"),
        ("/werkzeug/", "Werkzeug"),
        ("/flask/", "Flask"),
        ("/authlib/", "Authlib"),
        ("/sqlalchemy/", "SQLAlchemy (incl. the DB driver calls it makes)"),
        ("/psycopg/", "psycopg"),
        ("/jwcrypto/", "jwcrypto (JOSE)"),
        ("/cryptography/", "cryptography"),
        ("/requests/", "requests/urllib3 (HTTP client)"),
        ("/urllib3/", "requests/urllib3 (HTTP client)"),
        ("/h11/", "h11 (delivery POSTs)"),
        ("/itsdangerous/", "itsdangerous (Flask session cookie)"),
        ("/jinja2/", "Jinja2"),
    ):
        if key in path:
            return label
    if "/oidc_logout/" in path:
        return "oidc_logout." + path.split("/oidc_logout/", 1)[1].split("/", 1)[0].split(".py")[0]
    if "hashlib" in path or "hmac" in path or "secrets" in path:
        return "stdlib hashing"
    if "/threading.py" in path or "/queue.py" in path or "/selectors.py" in path:
        return "stdlib threading/select (waiting)"
    if "/socket.py" in path or "/ssl.py" in path or "/http/" in path:
        return "stdlib socket/http"
    return "stdlib other"


def _short(frame: str) -> str:
    """``func (path:line)`` with the path cut after site-packages/ or the repository."""
    func, _, rest = frame.partition(" (")
    for cut in ("site-packages/", "/oidc_logout/", "/python3.11/"):
        if cut in rest:
            rest = rest.split(cut, 1)[1]
            break
    return f"{func} ({rest}"


def has(stack: Stack, *needles: str) -> bool:
    return any(n in f for f in stack for n in needles)


def breakdown(
    samples: Sequence[tuple[Stack, int]],
    keep: Callable[[Stack], bool],
    markers: Sequence[tuple[str, Callable[[Stack], bool]]],
    per_ms: float,
) -> tuple[str, dict[str, Any]]:
    """Self samples by package and inclusive samples of named code paths, among the stacks
    ``keep`` selects; ``per_ms`` converts samples to ms per operation."""
    kept = [(s, n) for s, n in samples if keep(s)]
    total = sum(n for _, n in kept) or 1
    groups: Counter[str] = Counter()
    for s, n in kept:
        groups[frame_group(s[-1])] += n
    inc = [(label, sum(n for s, n in kept if pred(s))) for label, pred in markers]
    self_rows = [
        [g, f"{n / total * 100:.0f}%", f"{n * per_ms:.3f}"]
        for g, n in groups.most_common()
        if n / total >= 0.01
    ]
    inc_rows = [[label, f"{n / total * 100:.0f}%", f"{n * per_ms:.3f}"] for label, n in inc]
    leaves: Counter[str] = Counter()
    for s, n in kept:
        leaves[_short(s[-1])] += n
    leaf_rows = [[f, f"{n / total * 100:.0f}%", f"{n * per_ms:.3f}"] for f, n in leaves.most_common(12)]
    text = (
        table(["self time in (leaf frame's package)", "share", "ms/op"], self_rows)
        + "\n\n"
        + table(["code path (inclusive)", "share", "ms/op"], inc_rows)
        + "\n\n"
        + table(["top leaf frames", "share", "ms/op"], leaf_rows)
    )
    return text, {"samples": total, "self": dict(groups), "inclusive": dict(inc)}


REVOKE_MARKERS: list[tuple[str, Callable[[Stack], bool]]] = [
    (
        "the server outside the app (granian: its Rust threads, the WSGI glue; gunicorn: accept, "
        "read, parse, write, close, keep-alive poll, thread hand-off)",
        lambda s: not has(s, "/flask/app.py"),
    ),
    ("the app (Flask.__call__: the revocation middleware, else Flask)", lambda s: has(s, "/flask/app.py")),
    (
        "  answered before Flask (RevocationMiddleware, no Flask request)",
        lambda s: has(s, "/flask/app.py") and not has(s, "full_dispatch_request", "RequestContext"),
    ),
    ("  Flask request (contexts, session, routing, response)", lambda s: has(s, "full_dispatch_request")),
    ("  the revoke view", lambda s: has(s, "revoke (") and has(s, "oidc_logout/flask/views.py")),
    ("    fast path (try_revoke_access_token)", lambda s: has(s, "try_revoke_access_token")),
    ("      hashing (token_hash of token and secret)", lambda s: has(s, "token_hash")),
    (
        "      engine.connect (pool checkout + reset on return)",
        lambda s: (
            has(s, "_execute")
            and has(s, "connect (", "close (", "__exit__ (")
            and not has(s, "execute (/")
            and not has(s, "commit (")
        ),
    ),
    (
        "      UPDATE (SQLAlchemy execute + driver)",
        lambda s: (
            has(s, "_execute (")
            and has(s, "/sqlalchemy/engine/base.py")
            and has(s, "execute (")
            and not has(s, "commit (")
        ),
    ),
    ("      COMMIT", lambda s: has(s, "_execute (") and has(s, "commit (")),
    ("    full Authlib endpoint (declined fast path)", lambda s: has(s, "create_endpoint_response")),
    ("  Flask session cookie / itsdangerous", lambda s: has(s, "/itsdangerous/", "sessions.py")),
]

TIMELINE = [
    ("validated", "id_token_hint, client and session validated"),
    ("terminate_start", "terminate() starts (termination transaction open)"),
    ("terminate_end", "terminate() done: sessions ended, tokens revoked, outbox rows written"),
    ("committed", "termination committed, rows handed to the dispatcher"),
    ("first_claim_start", "first dispatcher claim ending after the commit: starts (any worker)"),
    ("first_claim_end", "that claim done (rows in_flight)"),
    ("first_attempt_start", "first delivery attempt starts"),
    ("first_sign_start", "first logout token: signing starts"),
    ("first_sign_end", "first logout token signed"),
    ("first_post_start", "first POST starts"),
    ("first_post_end", "first POST answered (RP answers after 50 ms)"),
    ("response", "end_session response done (after every RP answered, bound 2 s)"),
]


PHASES = [
    ("request -> validated (Flask, id_token_hint signature, client, session)", "", "validated"),
    ("terminate(): sessions ended, tokens revoked, outbox rows written", "terminate_start", "terminate_end"),
    ("commit of the termination transaction", "terminate_end", "committed"),
    ("commit -> first claim done (rows in_flight)", "committed", "first_claim_end"),
    ("first claim done -> first attempt starts (thread pool)", "first_claim_end", "first_attempt_start"),
    ("first logout token signed", "first_sign_start", "first_sign_end"),
    ("request -> first POST starts (total before the first delivery)", "", "first_post_start"),
]


def profile_db(
    db: str, tmp: Path, n_tokens: int, levels: list[int], m: int, runs: int, browser: Any
) -> dict[str, Any]:
    rx = RPReceiver()
    rx.add_rps(m)
    t = start_ours(tmp, rx.base, m, db)
    out: dict[str, Any] = {"op": t.name}
    try:
        # -- revocation
        toks = issue_tokens(t, 50 + 2 * n_tokens * len(levels))
        revoke_load(t.meta["revocation_endpoint"], toks[:50], 8, 30)
        pos = 50
        for c in levels:
            plain = toks[pos : pos + n_tokens]
            prof = toks[pos + n_tokens : pos + 2 * n_tokens]
            pos += 2 * n_tokens
            cpu0, sys0 = t.cpu(), t.kernel_cpu()
            r0 = revoke_load(t.meta["revocation_endpoint"], plain, c, 120)
            cpu_all = t.cpu() - cpu0
            kernel = (t.kernel_cpu() - sys0) / cpu_all if cpu_all else float("nan")
            cpu_per = cpu_all / max(1, r0["requests"]) * 1000
            spy = Spy(t, tmp, idle=False)
            r1 = revoke_load(t.meta["revocation_endpoint"], prof, c, 120)
            samples = spy.stop()
            total = sum(n for _, n in samples) or 1
            # ms per request: the unprofiled CPU per request, split by the sample shares.
            busy = [(st, n) for st, n in samples if not _waiting(st[-1])]
            idle_share = 1 - sum(n for _, n in busy) / total
            busy_total = sum(n for _, n in busy) or 1
            text, data = breakdown(busy, lambda _s: True, REVOKE_MARKERS, cpu_per / busy_total)
            active = sum(introspect(t, prof[: r1["requests"]]))
            head = (
                f"\n-- {t.name}: revocation c={c}: {r0['requests']} requests unprofiled "
                f"({r0['requests'] / r0['wall']:.0f} req/s, {cpu_per:.2f} ms OP CPU/req, {kernel * 100:.0f}% of it "
                f"in the kernel), then "
                f"{r1['requests']} profiled ({r1['requests'] / r1['wall']:.0f} req/s under py-spy), "
                f"{total} samples, {idle_share * 100:.0f}% of them waiting (left out); still active after "
                f"revocation: {active} --"
            )
            print(head + "\n" + text, flush=True)
            out[f"revoke_c{c}"] = {
                "cpu_ms_per_req": cpu_per,
                "kernel_share": kernel,
                "active_after": active,
                **data,
            }
    finally:
        t.stop()
    # -- fan-out: end_session -> first POST, timeline from the traced server
    trace_dir = tmp / f"trace-{db}"
    trace_dir.mkdir()
    t = start_ours(
        tmp,
        rx.base,
        m,
        db,
        app="bench.op_server_traced:wsgi_app()",
        extra_env={"BENCH_TRACE_DIR": str(trace_dir)},
    )
    try:
        fanout_run(t, browser, rx, m, False, probe=False)  # warm
        for f in trace_dir.glob("*.jsonl"):
            f.unlink()
        rs = [fanout_run(t, browser, rx, m, False, probe=False) for _ in range(runs)]
        recs = timelines(trace_dir)
        rows = []
        for key, label in TIMELINE:
            xs = [r[key] for r in recs if key in r]
            rows.append([label, f"{median(xs):.1f}" if xs else "-", f"{len(xs)}/{len(recs)}"])
        phase_rows = []
        for label, a_key, b_key in PHASES:
            xs = [r[b_key] - r.get(a_key, 0.0) for r in recs if b_key in r and (a_key == "" or a_key in r)]
            phase_rows.append([label, f"{median(xs):.1f}" if xs else "-", f"{len(xs)}/{len(recs)}"])
        first = median([r["first"] for r in rs if r["first"] is not None])
        alls = median([r["all"] for r in rs if r["all"] is not None])
        exch = median([r["exchange"] for r in rs])
        print(
            f"\n-- {t.name}: fan-out M={m}, {runs} logouts, timeline inside the OP (ms after the "
            f"end_session request reached the app, medians); seen by the driver: first logout token "
            f"{first * 1000:.0f} ms, all {alls * 1000:.0f} ms, exchange {exch * 1000:.0f} ms --\n"
            + table(["event", "ms after request", "seen in"], rows)
            + "\n\nthe same per logout, as phases (median of each logout's own differences):\n"
            + table(["phase", "ms", "seen in"], phase_rows),
            flush=True,
        )
        out["fanout"] = {"m": m, "first": first, "all": alls, "exchange": exch, "timeline": recs}
    finally:
        t.stop()
        rx.stop()
    return out


def main(a: argparse.Namespace) -> dict[str, Any]:
    if not Path(py_spy()).exists():
        raise SystemExit("py-spy not found: pip install py-spy (the dev extra has it)")
    n_tokens = a.tokens or 2000
    levels = [int(x) for x in a.concurrency.split(",")]
    m = int((a.sizes or "50").split(",")[0])
    runs = a.runs or 5
    dbs = [d for d in a.dbs.split(",") if d]
    print("== where oidc-logout's time goes under the against_node workload (py-spy) ==")
    print(
        f"command: python -m bench.against_node --profile (tokens {n_tokens}, c {levels}, M {m}, runs {runs}, dbs {dbs})"
    )
    facts = print_facts(pg="postgresql" in dbs)
    tmp = Path(tempfile.mkdtemp(prefix="bench-prof-"))
    results = []
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                for db in dbs:
                    results.append(profile_db(db, tmp, n_tokens, levels, m, runs, browser))
            finally:
                browser.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {"bench": "against_node_profile", "facts": facts, "results": results}
    write_summary(a.summary_json, summary)
    return summary
