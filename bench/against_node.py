"""oidc-logout against node-oidc-provider (issue 15): one driver, both OPs, same run.

The anchor is panva's ``oidc-provider`` (pinned in bench/anchor/package-lock.json, installed
with ``npm ci``), configured like the demo OP (bench/anchor/op.mjs says how) and started the
way a node service runs in production: ``NODE_ENV=production node op.mjs``, one process (its
default in-memory storage lives in that process). oidc-logout runs as docs/operations.md tells
users to run it: ``oidc-logout serve --app`` with its defaults (granian, 2 workers x 4 app
threads, keep-alive; every worker delivers the logouts it answers, the elected one also runs the
claim loop; ``--server gunicorn`` for gunicorn ``gthread``), on a SQLite file and on PostgreSQL,
serving the demo IdP app factory (``bench.op_server:wsgi_app()`` =
``oidc_logout.demo.idp.create_idp_app``, the bundled OP of ``serve``; the clients are loaded
with ``load_clients`` as the demo does). Every OP gets the same client metadata.

The driver does the same to each OP, interleaved size by size so that load from elsewhere
falls on all of them alike:

(a) fan-out: a fresh browser context (Playwright + Chromium) signs in at RP 0 through the OP's
    login form, then the same OP session signs in to RPs 1..M-1 (each authorization request
    is sent from the browser context, with its cookies, and answered by a redirect with a
    code); every code is exchanged at the token endpoint (PKCE, client_secret_basic). The RPs
    are paths of one loopback receiver in this process that answers each back-channel POST
    after 50 ms and records its arrival. Then the browser goes to ``end_session`` with RP 0's
    ID token and post_logout_redirect_uri. Measured from just before that navigation starts:
    * all tokens: until the last of the M RPs has its logout token (arrival at the receiver);
    * exchange: until the browser arrives at the post_logout_redirect_uri (node-oidc-provider
      always shows a confirmation page; bench/anchor/op.mjs makes it submit itself, which
      stands for the End-User's click - oidc-logout asks nothing when the hint is valid);
    * tokens active at first notice (in the warm-up run of each case, whose timings are not
      counted): the access (and refresh) tokens of the first min(M, 10) RPs, introspected
      when the first logout token arrives, while the RP that got it holds its answer;
    with and without one RP that never answers (the last one). The OPs take turns run by run.
(b) revocation: ``client_credentials`` tokens issued at the token endpoint (not timed), then
    revoked (RFC 7009, ``token_type_hint=access_token``, client_secret_basic) by a load
    generator of ``c`` threads with keep-alive ``http.client`` connections; req/s and OP CPU
    per request (/proc/<pid>/stat of the OP's processes: node, or serve's master + workers);
    then every revoked token is introspected (must be inactive).

    python -m bench.against_node [--quick] [--sizes 1,10,50,200] [--runs 5] [--hang-sizes 10,50]
        [--tokens 1000] [--concurrency 1,8] [--dbs sqlite,postgresql] [--ops node,oidc-logout]
    python -m bench.against_node --profile [--tokens 2000]   # where our time goes (py-spy on
        serve's workers: bench/profile_against_node.py)
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from oidc_logout.serve import DEFAULT_SERVER as SERVE_DEFAULT_SERVER
from oidc_logout.serve import DEFAULT_THREADS as SERVE_THREADS
from oidc_logout.serve import DEFAULT_WORKERS as SERVE_WORKERS
from oidc_logout.serve import SERVERS as SERVE_SERVERS
from oidc_logout.testing import Reply

from . import targets as targets_of_issue
from .common import (
    PASSWORD,
    PYTHON,
    ROOT,
    Proc,
    Receiver,
    children,
    create_pg_database,
    drop_pg_database,
    free_port,
    median,
    p95,
    revocation_load,
    table,
    tree_cpu,
    write_summary,
)
from .machine import print_facts

ANCHOR = ROOT / "bench" / "anchor"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync"]
RP_DELAY = 0.050
#: oidc-logout's deployment: ``oidc-logout serve`` with its defaults (docs/operations.md):
#: the production server (``--server``), 2 workers with 4 app threads each, keep-alive.
SERVER = {"value": SERVE_DEFAULT_SERVER, "threads": str(SERVE_THREADS)}
NODE = targets_of_issue.NODE
#: The database each of our deployments runs on, by the name start_ours gives it.
DB_OF_OP = {"oidc-logout (SQLite)": "sqlite", "oidc-logout (PostgreSQL)": "postgresql"}
REVOKER = ("revoker", "revoker-secret-" + "z" * 24)
INTROSPECTOR = ("introspector", "introspector-secret-" + "y" * 20)
#: Session tokens introspected at the first logout token: those of the first few RPs.
TOKENS_SAMPLED_RPS = 10


# --------------------------------------------------------------------------- node availability


def node_missing() -> str | None:
    """Why the node anchor cannot run here (None: it can), after installing it if needed."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not found: the node-oidc-provider anchor is skipped"
    if not (ANCHOR / "node_modules" / "oidc-provider").is_dir():
        proc = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=ANCHOR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            return f"npm ci in bench/anchor failed: the anchor is skipped\n{proc.stderr[-1500:]}"
    return None


# --------------------------------------------------------------------------- clients


def rp_id(i: int) -> str:
    return f"rp-{i:03d}"


def client_metadata(receiver_base: str, n_rps: int, ours: bool) -> list[dict[str, Any]]:
    """The same registrations for both OPs: ``n_rps`` RPs with a back-channel logout URI
    (session required), a client_credentials client that revokes its tokens and a resource
    server that introspects. oidc-logout's introspector needs its introspection scope;
    node-oidc-provider lets any confidential client introspect."""
    out: list[dict[str, Any]] = []
    for i in range(n_rps):
        cid = rp_id(i)
        out.append(
            {
                "client_id": cid,
                "client_name": cid,
                "client_secret": f"secret-{cid}-" + "x" * 24,
                "redirect_uris": [f"{receiver_base}/{cid}/callback"],
                "post_logout_redirect_uris": [f"{receiver_base}/{cid}/logged-out"],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "scope": "openid offline_access",
                "token_endpoint_auth_method": "client_secret_basic",
                "backchannel_logout_uri": f"{receiver_base}/{cid}/backchannel",
                "backchannel_logout_session_required": True,
            }
        )
    for (cid, secret), scope in (
        (REVOKER, "read"),
        (INTROSPECTOR, "oidc_logout:introspect" if ours else "read"),
    ):
        out.append(
            {
                "client_id": cid,
                "client_name": cid,
                "client_secret": secret,
                "redirect_uris": [],
                "grant_types": ["client_credentials"],
                "response_types": [],
                "scope": scope,
                "token_endpoint_auth_method": "client_secret_basic",
            }
        )
    return out


def secret_of(metas: Sequence[dict[str, Any]], cid: str) -> str:
    return next(str(m["client_secret"]) for m in metas if m["client_id"] == cid)


# --------------------------------------------------------------------------- the OPs


@dataclass
class Target:
    """One OP under test."""

    name: str
    url: str
    procs: list[Proc]
    metas: list[dict[str, Any]]
    #: CSS selectors of the login form's user and password fields.
    user_field: str
    password_field: str
    cleanup: list[Callable[[], None]] = field(default_factory=list)
    wait_idle: Callable[[float], bool] = lambda _t: True
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.meta = requests.get(f"{self.url}/.well-known/openid-configuration", timeout=10).json()

    def cpu(self) -> float:
        return sum(tree_cpu(p.pid) for p in self.procs)

    def kernel_cpu(self) -> float:
        """System (kernel) CPU seconds of the OP's processes: TCP on loopback, syscalls."""
        return sum(_stime(pid) for p in self.procs for pid in (p.pid, *children(p.pid)))

    def stop(self) -> None:
        for p in self.procs:
            p.stop()
        for f in self.cleanup:
            f()


def _stime(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[12]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def start_node(tmp: Path, receiver_base: str, n_rps: int) -> Target:
    metas = client_metadata(receiver_base, n_rps, ours=False)
    clients = tmp / "node-clients.json"
    clients.write_text(json.dumps(metas))
    port = free_port()
    proc = Proc(
        ["node", str(ANCHOR / "op.mjs"), str(port), str(clients)],
        env={"NODE_ENV": "production"},
        timeout=30,
    )
    return Target(
        NODE, f"http://127.0.0.1:{port}", [proc], metas, "input[name=login]", "input[name=password]"
    )


def start_ours(
    tmp: Path,
    receiver_base: str,
    n_rps: int,
    db: str,
    app: str = "bench.op_server:wsgi_app()",
    extra_env: dict[str, str] | None = None,
) -> Target:
    """The demo IdP under ``oidc-logout serve`` (its server, workers and threads) on a SQLite file or a fresh PostgreSQL
    database; clients loaded as the demo loads them."""
    from oidc_logout.clients import load_clients

    from .common import make_provider, op_env

    cleanup: list[Callable[[], None]] = []
    if db == "sqlite":
        db_url = f"sqlite:///{tmp / f'ours-{secrets.token_hex(4)}.db'}"
    else:
        pg_name, db_url = create_pg_database()
        cleanup.append(lambda: drop_pg_database(pg_name))
    metas = client_metadata(receiver_base, n_rps, ours=True)
    provider = make_provider(db_url)
    load_clients(provider, metas)
    factory = provider.session_factory
    port = free_port()
    env = op_env(db_url, port, background=False)
    env.update(extra_env or {})
    url = f"http://127.0.0.1:{port}"
    # `oidc-logout serve --app`: the production server, its workers and threads, and its
    # election of the one worker running the claim loop (every worker delivers the logouts
    # it answers), exactly as docs/operations.md deploys a host app.
    env.update(
        OIDC_LOGOUT_ISSUER=url,
        OIDC_LOGOUT_DATABASE_URL=db_url,
        OIDC_LOGOUT_DEV_MODE="true",
        OIDC_LOGOUT_EXPIRY_SWEEP_INTERVAL="0",
    )
    proc = Proc(
        [
            *(PYTHON, "-m", "oidc_logout.cli", "serve", "--server", SERVER["value"], "--app", app),
            *("--bind", f"127.0.0.1:{port}", "--workers", str(SERVE_WORKERS), "--threads", SERVER["threads"]),
        ],
        env=env,
        ready="Listening at",
        timeout=60,
    )
    _wait_http(f"{url}/.well-known/openid-configuration", 60)

    def idle(timeout: float) -> bool:
        from sqlalchemy import func, select

        from oidc_logout.storage.models import BACKCHANNEL, FINAL_STATES, Delivery

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with factory() as s:
                left = s.scalar(
                    select(func.count())
                    .select_from(Delivery)
                    .where(Delivery.channel == BACKCHANNEL, Delivery.state.not_in(list(FINAL_STATES)))
                )
            if not left:
                return True
            time.sleep(0.05)
        return False

    cleanup.insert(0, provider.engine.dispose)
    t = Target(
        f"oidc-logout ({'SQLite' if db == 'sqlite' else 'PostgreSQL'})",
        url,
        [proc],
        metas,
        "input[name=username]",
        "input[name=password]",
        cleanup=cleanup,
        wait_idle=idle,
    )
    t.meta["db"] = db
    return t


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


# --------------------------------------------------------------------------- receiver


class RPReceiver(Receiver):
    """The M RPs: ``/<rp>/backchannel`` answers after 50 ms, ``/<rp>/callback`` and
    ``/<rp>/logged-out`` at once. ``first_logout`` is set when the first logout token of a run
    arrives. With ``hold`` set (a probe run), the RP that got the first logout token answers
    only once ``hold`` is set too: the probe introspects while that RP has not yet answered."""

    def __init__(self) -> None:
        super().__init__(delay=RP_DELAY, hang_seconds=30.0)
        self.first_logout = threading.Event()
        self.hold: threading.Event | None = None
        self._held = False

    def add_rps(self, n: int) -> None:
        ok = Reply(200, {"Content-Type": "text/plain"}, b"ok")
        for i in range(n):
            self.script(f"/{rp_id(i)}/callback", ok)
            self.script(f"/{rp_id(i)}/logged-out", ok)
            self.script(f"/{rp_id(i)}/backchannel", self._backchannel)

    def start_run(self, hold: threading.Event | None) -> None:
        self.first_logout.clear()
        self.hold, self._held = hold, False

    def _backchannel(self, _req: Any) -> Reply:
        hold = self.hold
        if hold is not None:
            with self._cond:
                first, self._held = not self._held, True
            if first:
                hold.wait(10)
        return Reply(delay=RP_DELAY)

    def _arrived(self, req: Any) -> None:
        super()._arrived(req)
        if req.method == "POST" and req.path.endswith("/backchannel"):
            self.first_logout.set()

    def arrival(self, path: str) -> float | None:
        hits = self.hits(path)
        return hits[0].at if hits else None


# --------------------------------------------------------------------------- protocol steps


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


@dataclass
class Login:
    """What RP ``client_id`` holds after signing in."""

    client_id: str
    id_token: str
    sid: str
    tokens: list[str]


def _authorize_url(t: Target, meta: dict[str, Any], challenge: str) -> str:
    q = {
        "response_type": "code",
        "client_id": meta["client_id"],
        "redirect_uri": meta["redirect_uris"][0],
        "scope": "openid",
        "state": secrets.token_urlsafe(8),
        "nonce": secrets.token_urlsafe(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    return f"{t.meta['authorization_endpoint']}?{urlencode(q)}"


def _code_from(url: str, redirect_uri: str) -> str:
    if not url.startswith(redirect_uri):
        raise RuntimeError(f"authorization did not come back to the RP: {url[:200]}")
    q = parse_qs(urlsplit(url).query)
    if "code" not in q:
        raise RuntimeError(f"no code in {url[:200]}")
    return q["code"][0]


def _exchange(t: Target, meta: dict[str, Any], code: str, verifier: str) -> Login:
    r = requests.post(
        t.meta["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": meta["redirect_uris"][0],
        },
        auth=(meta["client_id"], meta["client_secret"]),
        timeout=30,
    )
    if r.status_code != 200:
        raise RuntimeError(f"{t.name}: token endpoint {r.status_code}: {r.text[:300]}")
    body = r.json()
    tokens = [body["access_token"]] + ([body["refresh_token"]] if body.get("refresh_token") else [])
    return Login(meta["client_id"], body["id_token"], str(_claims(body["id_token"])["sid"]), tokens)


def sign_in_all(t: Target, context: Any, m: int) -> list[Login]:
    """One OP session, M RPs: RP 0 through the login form in a page, the others by sending
    their authorization requests from the same browser context."""
    metas = t.metas[:m]
    page = context.new_page()
    verifier, challenge = _pkce()
    page.goto(_authorize_url(t, metas[0], challenge))
    page.fill(t.user_field, "alice")
    page.fill(t.password_field, PASSWORD)
    redirect0 = metas[0]["redirect_uris"][0]
    with page.expect_navigation(url=lambda u: u.startswith(redirect0)):
        page.click("button[type=submit]")
    codes = [(metas[0], _code_from(page.url, redirect0), verifier)]
    page.close()
    for meta in metas[1:]:
        verifier, challenge = _pkce()
        url = _authorize_url(t, meta, challenge)
        for _ in range(6):  # follow the OP's own redirects, stop at the RP's
            resp = context.request.get(url, max_redirects=0)
            loc = resp.headers.get("location")
            if not loc:
                raise RuntimeError(f"{t.name}: authorization answered {resp.status} without a redirect")
            url = loc if loc.startswith("http") else t.url + loc
            if url.startswith(meta["redirect_uris"][0]):
                break
        codes.append((meta, _code_from(url, meta["redirect_uris"][0]), verifier))
    with ThreadPoolExecutor(8) as ex:
        return list(ex.map(lambda a: _exchange(t, *a), codes))


def introspect(t: Target, tokens: Sequence[str], threads: int = 8) -> list[bool]:
    """``active`` of each token (RFC 7662), asked by the resource server client."""
    cid, secret = INTROSPECTOR
    local = threading.local()

    def one(tok: str) -> bool:
        s = getattr(local, "s", None) or requests.Session()
        local.s = s
        r = s.post(t.meta["introspection_endpoint"], data={"token": tok}, auth=(cid, secret), timeout=30)
        r.raise_for_status()
        return bool(r.json()["active"])

    with ThreadPoolExecutor(threads) as ex:
        return list(ex.map(one, tokens))


# --------------------------------------------------------------------------- (a) fan-out


def fanout_run(t: Target, browser: Any, rx: RPReceiver, m: int, hang: bool, probe: bool) -> dict[str, Any]:
    """One sign-in of M RPs and one logout. ``probe``: introspect the session's tokens at the
    first logout token (that RP's answer waits for the probe; the run's timings are not used)."""
    context = browser.new_context()
    context.set_default_timeout(30_000)
    try:
        logins = sign_in_all(t, context, m)
        paths = [f"/{rp_id(i)}/backchannel" for i in range(m)]
        rx.expect((p, lg.sid) for p, lg in zip(paths, logins, strict=True))
        hold = threading.Event() if probe else None
        rx.start_run(hold)
        if hang:
            rx.arm_hang(paths[-1], logins[-1].sid)
        sample = [tok for lg in logins[:TOKENS_SAMPLED_RPS] for tok in lg.tokens]
        probe_out: dict[str, Any] = {}

        def at_first_notice() -> None:
            try:
                if rx.first_logout.wait(30):
                    probe_out["active"] = sum(introspect(t, sample, threads=len(sample)))
            finally:
                assert hold is not None
                hold.set()

        prober = threading.Thread(target=at_first_notice, daemon=True)
        if probe:
            prober.start()
        meta0 = t.metas[0]
        logged_out = f"/{rp_id(0)}/logged-out"
        url = f"{t.meta['end_session_endpoint']}?" + urlencode(
            {
                "id_token_hint": logins[0].id_token,
                "post_logout_redirect_uri": meta0["post_logout_redirect_uris"][0],
                "state": "bench",
            }
        )
        page = context.new_page()
        t0 = time.monotonic()
        page.goto(url, wait_until="commit")
        if not rx.wait_until(lambda reqs: any(r.path == logged_out for r in reqs), 30):
            raise RuntimeError(f"{t.name}: the browser never reached the post_logout_redirect_uri")
        t_exchange = (rx.arrival(logged_out) or t0) - t0
        last = rx.wait_all(20.0)
        if probe:
            prober.join(30)
        first = min((r.at for r in rx.requests if r.path.endswith("/backchannel")), default=None)
        settled = t.wait_idle(20.0)
        return {
            "all": None if last is None else last - t0,
            "first": None if first is None else first - t0,
            "exchange": t_exchange,
            "missing": rx.missing(),
            "active_at_first": probe_out.get("active"),
            "sampled": len(sample),
            "settled": settled,
        }
    finally:
        context.close()


def fanout(
    targets: list[Target], browser: Any, rx: RPReceiver, sizes: list[int], hang_sizes: list[int], runs: int
) -> list[dict[str, Any]]:
    rows = []
    cases = [(m, False) for m in sizes] + [(m, True) for m in hang_sizes]
    for m, hang in cases:
        acc: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
        probes: dict[str, Any] = {}
        for run in range(runs + 1):  # run 0 warms up and probes (its timings are not counted)
            order = targets[run % len(targets) :] + targets[: run % len(targets)]
            for t in order:
                r = fanout_run(t, browser, rx, m, hang, probe=run == 0)
                if run:
                    acc[t.name].append(r)
                else:
                    probes[t.name] = r
        for t in targets:
            rs = acc[t.name]
            alls = [r["all"] for r in rs if r["all"] is not None]
            row = {
                "op": t.name,
                "m": m,
                "hang": hang,
                "runs": len(rs),
                "all_median": median(alls),
                "all_p95": p95(alls),
                "first_median": median([r["first"] for r in rs if r["first"] is not None]),
                "exchange_median": median([r["exchange"] for r in rs]),
                "exchange_p95": p95([r["exchange"] for r in rs]),
                "missing": sum(r["missing"] for r in rs) + probes[t.name]["missing"],
                "active_at_first": probes[t.name]["active_at_first"],
                "sampled": probes[t.name]["sampled"],
                "unsettled_runs": sum(1 for r in rs if not r["settled"]),
            }
            rows.append(row)
            print(
                f"  M={m:<4} hang={hang!s:<5} {t.name:<26} all tokens {row['all_median'] * 1000:7.1f} ms "
                f"(first {row['first_median'] * 1000:6.1f}), exchange {row['exchange_median'] * 1000:7.1f} ms, "
                f"missing {row['missing']}, active at first notice {row['active_at_first']}/{row['sampled']}",
                flush=True,
            )
    return rows


# --------------------------------------------------------------------------- (b) revocation


def issue_tokens(t: Target, n: int) -> list[str]:
    cid, secret = REVOKER
    local = threading.local()

    def one(_i: int) -> str:
        for attempt in range(3):
            s = getattr(local, "s", None) or requests.Session()
            local.s = s
            try:
                r = s.post(
                    t.meta["token_endpoint"],
                    data={"grant_type": "client_credentials", "scope": "read"},
                    auth=(cid, secret),
                    timeout=30,
                )
                break
            except requests.ConnectionError:
                # A kept-alive connection the server closed (its keep-alive timeout) just as
                # this request went out: issuing is not timed, so a fresh connection retries.
                s.close()
                local.s = None
                if attempt == 2:
                    raise
        if r.status_code != 200:
            raise RuntimeError(f"{t.name}: client_credentials {r.status_code}: {r.text[:300]}")
        return str(r.json()["access_token"])

    with ThreadPoolExecutor(8) as ex:
        return list(ex.map(one, range(n)))


def revoke_load(url: str, tokens: Sequence[str], concurrency: int, max_seconds: float) -> dict[str, Any]:
    """POST the revocation endpoint once per token from ``concurrency`` threads, each with a
    keep-alive connection (re-opened when the server closes it): the load generator of
    bench/revocation.py (common.revocation_load), as REVOKER."""
    return revocation_load(url, tokens, concurrency, max_seconds, client=REVOKER)


def _settle_cpu(t: Target, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c0 = t.cpu()
        time.sleep(0.3)
        if t.cpu() - c0 < 0.02:
            return


def idle_cpu_rate(t: Target, seconds: float = 2.0) -> float:
    """CPU seconds per second the OP's processes use while no request is sent (``/proc``
    ticks: +-0.01 s over ``seconds``)."""
    c0, w0 = t.cpu(), time.perf_counter()
    time.sleep(seconds)
    return max(0.0, t.cpu() - c0) / (time.perf_counter() - w0)


def revocation(
    targets: list[Target], n_tokens: int, levels: list[int], max_seconds: float
) -> list[dict[str, Any]]:
    warm = min(50, n_tokens)
    pools = {}
    for t in targets:
        toks = issue_tokens(t, warm + n_tokens * len(levels))
        before = introspect(t, toks[-5:])
        if not all(before):
            raise RuntimeError(f"{t.name}: freshly issued tokens are not active: {before}")
        pools[t.name] = toks
        revoke_load(t.meta["revocation_endpoint"], toks[:warm], 8, 30)  # warm every worker
    rows = []
    for li, c in enumerate(levels):
        order = targets[li % len(targets) :] + targets[: li % len(targets)]
        for t in order:
            start = warm + li * n_tokens
            batch = pools[t.name][start : start + n_tokens]
            _settle_cpu(t)
            idle = idle_cpu_rate(t)
            cpu0, sys0 = t.cpu(), t.kernel_cpu()
            r = revoke_load(t.meta["revocation_endpoint"], batch, c, max_seconds)
            cpu, sys_cpu = t.cpu() - cpu0, t.kernel_cpu() - sys0
            done = r["requests"]
            active = sum(introspect(t, batch[:done]))
            row = {
                "op": t.name,
                "concurrency": c,
                "requests": done,
                "rps": done / r["wall"] if r["wall"] else 0.0,
                "cpu_ms_per_req": cpu / done * 1000 if done else float("nan"),
                # Less the OP's idle CPU over the same wall time (timers, pollers, the embedded
                # dispatcher): at a few req/s on a loaded machine that idle CPU, divided by few
                # requests, would otherwise be most of the figure.
                "net_cpu_ms_per_req": max(0.0, cpu - idle * r["wall"]) / done * 1000
                if done
                else float("nan"),
                "idle_cpu_share": idle,
                "kernel_share": sys_cpu / cpu if cpu else float("nan"),
                "client_cpu_ms_per_req": r["client_cpu"] / done * 1000 if done else float("nan"),
                "statuses": r["statuses"],
                "errors": r["errors"],
                "active_after": active,
            }
            rows.append(row)
            print(
                f"  c={c} {t.name:<26} {row['rps']:7.0f} req/s, OP CPU {row['cpu_ms_per_req']:.2f} ms/req "
                f"(net of idle {row['net_cpu_ms_per_req']:.2f}; idle {idle * 100:.1f}% of a core), "
                f"statuses {r['statuses']}, errors {r['errors']}, still active after revocation {active}/{done}",
                flush=True,
            )
    return rows


# --------------------------------------------------------------------------- report


def ratio_text(ours: float, node: float, lower_is_better: bool) -> str:
    if not node or not ours or ours != ours or node != node:
        return "n/a"
    if lower_is_better:
        r = ours / node
        return f"{r:.2f}x ({'slower' if r > 1 else 'faster'})"
    return f"{ours / node:.2f}x"


def side_by_side(
    fan: list[dict[str, Any]], rev: list[dict[str, Any]], names: list[str]
) -> tuple[list[str], list[list[str]]]:
    ours = [n for n in names if n != NODE]
    headers = ["measure", NODE] + [h for n in ours for h in (n, "ratio vs node")]
    rows: list[list[str]] = []
    by = {(r["op"], r["m"], r["hang"]): r for r in fan}
    ms = lambda s: f"{s * 1000:.1f} ms"  # noqa: E731
    for m, hang in sorted({(r["m"], r["hang"]) for r in fan}, key=lambda k: (k[1], k[0])):
        for key, label in (
            ("all_median", "all M RPs hold their logout token"),
            ("exchange_median", "logout exchange"),
        ):
            line = [f"{label}, M={m}{', 1 RP hangs' if hang else ''}"]
            node = by.get((NODE, m, hang))
            line.append(ms(node[key]) if node else "-")
            for n in ours:
                r = by.get((n, m, hang))
                line += [ms(r[key]) if r else "-", ratio_text(r[key], node[key], True) if r and node else ""]
            rows.append(line)
        line = [f"session tokens active at first notice, M={m}{', 1 RP hangs' if hang else ''}"]
        for n in [NODE, *ours]:
            r = by.get((n, m, hang))
            cell = "-" if not r else f"{r['active_at_first']} of {r['sampled']} active"
            line += [cell] if n == NODE else [cell, ""]
        rows.append(line)
    rby = {(r["op"], r["concurrency"]): r for r in rev}
    for c in sorted({r["concurrency"] for r in rev}):
        node = rby.get((NODE, c))
        for key, label, unit in (
            ("rps", "revocation req/s", "{:.0f}"),
            ("cpu_ms_per_req", "revocation OP CPU ms/req", "{:.2f}"),
            ("net_cpu_ms_per_req", "revocation OP CPU ms/req, net of idle", "{:.2f}"),
        ):
            line = [f"{label}, c={c}", unit.format(node[key]) if node else "-"]
            for n in ours:
                r = rby.get((n, c))
                if r is None:
                    line += ["-", ""]
                    continue
                if node is None:
                    rat = ""
                elif key == "rps":
                    rat = f"{r['rps'] / node['rps']:.2f}x"
                else:
                    rat = f"{node[key] / r[key]:.2f}x (node CPU / ours)" if r[key] else "n/a"
                line += [unit.format(r[key]), rat]
            rows.append(line)
    return headers, rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="M = 1,10, 2 runs, 200 tokens")
    p.add_argument("--sizes", help="RP counts M (default 1,10,50,200)")
    p.add_argument("--hang-sizes", help="M with one hung RP (default 10,50; quick 10; '' none)")
    p.add_argument("--runs", type=int, help="runs per case after one warm-up run (default 5)")
    p.add_argument("--tokens", type=int, help="tokens revoked per concurrency level (default 1000)")
    p.add_argument("--concurrency", default="1,8")
    p.add_argument("--dbs", default="sqlite,postgresql", help="databases of oidc-logout")
    p.add_argument("--ops", default="node,oidc-logout")
    p.add_argument(
        "--server",
        choices=SERVE_SERVERS,
        default=SERVE_DEFAULT_SERVER,
        help=f"production server of oidc-logout serve (default {SERVE_DEFAULT_SERVER}, as serve runs it)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=SERVE_THREADS,
        help=f"app threads per worker (default {SERVE_THREADS})",
    )
    p.add_argument("--max-seconds", type=float, default=60.0, help="time bound per revocation level and OP")
    p.add_argument(
        "--profile", action="store_true", help="profile our OP's revocation and end_session instead"
    )
    p.add_argument(
        "--no-profile",
        action="store_true",
        help="do not profile after the run when a target of issue 15 is not met",
    )
    p.add_argument("--summary-json")
    a = p.parse_args(argv)
    SERVER["value"] = a.server
    SERVER["threads"] = str(a.threads)
    if a.profile:
        from .profile_against_node import main as profile_main

        return profile_main(a)
    size_arg = a.sizes if a.sizes is not None else ("1,10" if a.quick else "1,10,50,200")
    sizes = [int(x) for x in size_arg.split(",") if x]  # '' with --hang-sizes '': revocation only
    hang_arg = a.hang_sizes if a.hang_sizes is not None else ("10" if a.quick else "10,50")
    hang_sizes = [int(x) for x in hang_arg.split(",") if x]
    runs = a.runs or (2 if a.quick else 5)
    n_tokens = a.tokens or (200 if a.quick else 1000)
    levels = [int(x) for x in a.concurrency.split(",")]
    ops = a.ops.split(",")
    dbs = [d for d in a.dbs.split(",") if d]
    print("== oidc-logout against node-oidc-provider: logout fan-out and revocation, one driver ==")
    print(f"command: python -m bench.against_node {' '.join(argv if argv is not None else sys.argv[1:])}")
    facts = print_facts(pg="postgresql" in dbs)
    skipped = None
    if "node" in ops:
        skipped = node_missing()
        if skipped:
            print(skipped)
            ops = [o for o in ops if o != "node"]
        else:
            ver = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
            pkg = json.loads((ANCHOR / "node_modules" / "oidc-provider" / "package.json").read_text())
            facts["node"] = f"node {ver}, oidc-provider {pkg['version']}"
            print(f"  node       {facts['node']}")
    print(
        f"setup: {NODE}: NODE_ENV=production, one process, in-memory storage; oidc-logout: "
        f"oidc-logout serve --server {a.server}, {SERVE_WORKERS} workers x {a.threads} threads, embedded "
        f"dispatcher (claim loop in the elected worker), on {', '.join(dbs)}. RPs answer after "
        f"{RP_DELAY * 1000:.0f} ms; M = {sizes}, hung RP at M = {hang_sizes}, {runs} runs each (+1 warm-up); "
        f"{n_tokens} tokens revoked per level c = {levels}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-vs-node-"))
    n_rps = max(sizes + hang_sizes, default=1)
    rx = RPReceiver()
    rx.add_rps(n_rps)
    targets: list[Target] = []
    fan: list[dict[str, Any]] = []
    rev: list[dict[str, Any]] = []
    try:
        if "node" in ops:
            targets.append(start_node(tmp, rx.base, n_rps))
        if "oidc-logout" in ops:
            for db in dbs:
                targets.append(start_ours(tmp, rx.base, n_rps, db))
        if sizes or hang_sizes:
            from playwright.sync_api import sync_playwright

            print("\n-- (a) fan-out --", flush=True)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                try:
                    fan = fanout(targets, browser, rx, sizes, hang_sizes, runs)
                finally:
                    browser.close()
        print("\n-- (b) revocation --", flush=True)
        rev = revocation(targets, n_tokens, levels, a.max_seconds)
    finally:
        for t in targets:
            t.stop()
        rx.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    names = [t.name for t in targets]
    headers, rows = side_by_side(fan, rev, names)
    print("\n" + table(headers, rows))
    print(
        "\nratios: latency ours / node (below 1 = ours faster); req/s ours / node; CPU node / ours "
        "(above 1 = ours cheaper). 'active at first notice': session tokens (access + refresh of the "
        f"first {TOKENS_SAMPLED_RPS} RPs) introspected as active when the first logout token arrived."
    )
    verdicts = targets_of_issue.against_node(fan, rev, names)
    print("\n-- issue 15 targets, judged from this run's figures --")
    print(table(targets_of_issue.HEADERS, [v.row() for v in verdicts]))
    profile = None
    missed = targets_of_issue.unmet(verdicts)
    if missed and not a.no_profile and "oidc-logout" in ops:
        profile = _profile_unmet(a, missed, verdicts, sizes)
    summary = {
        "bench": "against_node",
        "facts": facts,
        "node_skipped": skipped,
        "ops": names,
        "fanout": fan,
        "revocation": rev,
        "table": {"headers": headers, "rows": rows},
        "targets": [dataclasses.asdict(v) for v in verdicts],
        "profile": profile,
    }
    write_summary(a.summary_json, summary)
    return summary


def _profile_unmet(
    a: argparse.Namespace,
    missed: list[targets_of_issue.Verdict],
    verdicts: list[targets_of_issue.Verdict],
    sizes: list[int],
) -> dict[str, Any] | None:
    """Issue 15 "Done when": for a target not met, the profile that shows the remaining floor:
    bench.profile_against_node (py-spy over the revocation load, and the end_session -> POST
    timeline at the fan-out size furthest from its target) on the deployments that missed."""
    from .profile_against_node import main as profile_main

    dbs = sorted({DB_OF_OP[v.op] for v in missed if v.op in DB_OF_OP})
    m = targets_of_issue.worst_fanout_size(verdicts) or max(sizes, default=50)
    print(
        f"\n-- where the time goes: {len(missed)} target(s) not met or not measured; "
        f"profiling {', '.join(dbs)} (revocation load, fan-out at M = {m}) --",
        flush=True,
    )
    pa = argparse.Namespace(**vars(a))
    pa.sizes, pa.runs, pa.dbs = str(m), 3, ",".join(dbs)
    pa.tokens = min(a.tokens or 1000, 1000)
    pa.summary_json = None
    try:
        return profile_main(pa)
    except SystemExit as exc:  # py-spy missing: say so, keep the run's figures
        print(f"profile skipped: {exc}")
        return {"skipped": str(exc)}


if __name__ == "__main__":
    main()
