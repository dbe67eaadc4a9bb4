"""Logout fan-out latency (issue 3): RP-initiated logout (``/end_session`` with an
``id_token_hint``) of a session shared by N RPs, each answering its back-channel POST after
50 ms, and again with one RP that never answers.

Measured per run, from the moment the logout request is sent:

* ``all tokens``: until the last of the N RPs has received its logout token (arrival at the
  RP's loopback receiver);
* ``response``: until the end_session response arrives (it waits at most
  ``logout_wait_bound``, 2 s by default, for the deliveries).

Setup: the OP is the demo IdP in its own process (werkzeug threaded, SQLite file, embedded
dispatcher, default delivery settings: concurrency 16, timeouts 2 s connect / 5 s read); the
RPs are one asyncio receiver in this process serving one path per RP. Each run logs in through
the real login form, gets a real ID token for RP 0 through the authorization code flow, then
adds the other N-1 RPs as participants of that OP session directly in the database (as
their own logins would have), and logs out.

    python -m bench.logout_fanout [--quick] [--sizes 1,10,100] [--runs 5]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import re
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from .common import PASSWORD, Receiver, median, p95, rp_meta, start_op, table, write_summary
from .machine import print_facts

RP_DELAY = 0.050


def _login_and_id_token(op: str, meta: dict[str, Any]) -> tuple[requests.Session, str, str]:
    """Log alice in through the form and run the code flow (PKCE) for ``meta``'s client;
    returns (browser, id_token, sid)."""
    http = requests.Session()
    page = http.get(f"{op}/login", timeout=10)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = http.post(
        f"{op}/login",
        data={"csrf_token": csrf, "username": "alice", "password": PASSWORD, "next": "/account"},
        allow_redirects=False,
        timeout=10,
    )
    if r.status_code not in (302, 303):
        raise RuntimeError(f"login failed: {r.status_code}")
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect_uri = meta["redirect_uris"][0]
    r = http.get(
        f"{op}/authorize",
        params={
            "response_type": "code",
            "client_id": meta["client_id"],
            "redirect_uri": redirect_uri,
            "scope": "openid",
            "state": "s",
            "nonce": secrets.token_urlsafe(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
        allow_redirects=False,
        timeout=10,
    )
    code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    r = requests.post(
        f"{op}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": redirect_uri,
        },
        auth=(meta["client_id"], meta["client_secret"]),
        timeout=10,
    )
    r.raise_for_status()
    id_token = r.json()["id_token"]
    payload = id_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return http, id_token, claims["sid"]


def _add_participants(factory: Any, sid: str, client_ids: list[str]) -> None:
    import datetime as dt

    from sqlalchemy import insert

    from oidc_logout.storage.models import SessionParticipant

    if not client_ids:
        return
    now = dt.datetime.now(dt.UTC)
    with factory.begin() as db:
        db.execute(
            insert(SessionParticipant),
            [dict(sid=sid, client_id=c, first_at=now, last_at=now) for c in client_ids],
        )


def _unsettled(factory: Any) -> int:
    from sqlalchemy import func, select

    from oidc_logout.storage.models import BACKCHANNEL, FINAL_STATES, Delivery

    with factory() as db:
        return int(
            db.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.channel == BACKCHANNEL, Delivery.state.not_in(list(FINAL_STATES)))
            )
            or 0
        )


def _wait_settled(factory: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _unsettled(factory) == 0:
            return True
        time.sleep(0.05)
    return False


def run(sizes: list[int], runs: int, wait_bound: float, hang: bool, concurrency: int) -> dict[str, Any]:
    from oidc_logout.demo.idp import load_clients

    from .common import make_provider

    tmp = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    receiver = Receiver(delay=RP_DELAY, hang_seconds=30.0)
    db_url = f"sqlite:///{tmp / 'op.db'}"
    n_max = max(sizes)
    metas = [rp_meta(f"rp-{i:03d}", f"{receiver.base}/rp-{i:03d}") for i in range(n_max)]
    provider = make_provider(db_url)
    load_clients(provider, metas)
    factory = provider.session_factory
    op_proc, op = start_op(db_url, logout_wait_bound=wait_bound, delivery_concurrency=concurrency)
    results: dict[str, Any] = {"rows": []}
    settings = provider.settings
    try:
        # Warm up the OP (first requests import and compile templates, open pools).
        _login_and_id_token(op, metas[0])
        modes = [False, True] if hang else [False]
        for hanging in modes:
            for n in sizes:
                all_t, resp_t, missing = [], [], 0
                for _ in range(runs):
                    browser, id_token, sid = _login_and_id_token(op, metas[0])
                    _add_participants(factory, sid, [m["client_id"] for m in metas[1:n]])
                    paths = [f"/{m['client_id']}" for m in metas[:n]]
                    receiver.expect((p, sid) for p in paths)
                    if hanging:
                        receiver.arm_hang(paths[-1], sid)
                    t0 = time.monotonic()
                    r = browser.get(
                        f"{op}/end_session",
                        params={
                            "id_token_hint": id_token,
                            "state": "x",
                            "post_logout_redirect_uri": metas[0]["post_logout_redirect_uris"][0],
                        },
                        allow_redirects=False,
                        timeout=30,
                    )
                    t_resp = time.monotonic() - t0
                    if r.status_code != 302:
                        raise RuntimeError(f"end_session answered {r.status_code}: {r.text[:300]}")
                    last = receiver.wait_all(20.0)
                    if last is None:
                        missing += receiver.missing()
                    else:
                        all_t.append(last - t0)
                    resp_t.append(t_resp)
                    # Let the OP finish (a hung delivery times out after delivery_timeout
                    # and is retried) so runs do not overlap.
                    _wait_settled(factory, settings.delivery_timeout + settings.delivery_connect_timeout + 5)
                results["rows"].append(
                    {
                        "n": n,
                        "hanging": hanging,
                        "runs": runs,
                        "all_median": median(all_t),
                        "all_p95": p95(all_t),
                        "resp_median": median(resp_t),
                        "resp_p95": p95(resp_t),
                        "missing": missing,
                    }
                )
                print(
                    f"  N={n:<4} hanging={hanging!s:<5} all tokens median "
                    f"{median(all_t) * 1000:7.1f} ms, response median {median(resp_t) * 1000:7.1f} ms",
                    flush=True,
                )
    finally:
        op_proc.stop()
        receiver.stop()
        provider.engine.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="sizes 1,10, 3 runs (smoke)")
    p.add_argument("--sizes", help="comma-separated RP counts (default 1,10,100)")
    p.add_argument("--runs", type=int, help="runs per size (default 5)")
    p.add_argument("--wait-bound", type=float, default=2.0, help="logout_wait_bound (default 2 s)")
    p.add_argument("--concurrency", type=int, default=16, help="delivery_concurrency (default 16)")
    p.add_argument("--no-hang", action="store_true", help="skip the hanging-RP variant")
    p.add_argument("--summary-json")
    a = p.parse_args(argv)
    sizes = [int(x) for x in (a.sizes or ("1,10" if a.quick else "1,10,100")).split(",")]
    runs = a.runs or (3 if a.quick else 5)
    print("== logout fan-out: end_session -> every RP holds its logout token ==")
    print(f"command: python -m bench.logout_fanout {' '.join(argv if argv is not None else sys.argv[1:])}")
    facts = print_facts(pg=False)
    print(
        f"setup: OP = demo IdP, werkzeug threaded, own process, SQLite (WAL); embedded dispatcher, "
        f"delivery_concurrency={a.concurrency}, logout_wait_bound={a.wait_bound} s; RPs answer after "
        f"{RP_DELAY * 1000:.0f} ms; hanging RP = never answers (read timeout 5 s); {runs} runs per N"
    )
    res = run(sizes, runs, a.wait_bound, not a.no_hang, a.concurrency)
    rows = res["rows"]
    ideal = next((r["all_median"] for r in rows if r["n"] == 1 and not r["hanging"]), None)
    if ideal is None:
        ideal = next((r["all_median"] for r in rows if not r["hanging"]), float("nan"))
    ms = lambda s: f"{s * 1000:.1f}"  # noqa: E731
    trows = []
    for r in rows:
        waves = math.ceil(r["n"] / a.concurrency)
        trows.append(
            [
                r["n"],
                "yes" if r["hanging"] else "no",
                ms(r["all_median"]),
                ms(r["all_p95"]),
                f"{r['all_median'] / ideal:.2f}x",
                f"{(waves - 1) * RP_DELAY * 1000:.0f}",
                ms(r["resp_median"]),
                ms(r["resp_p95"]),
                f"{min(a.wait_bound, waves * RP_DELAY) * 1000:.0f}"
                if not r["hanging"]
                else f"{a.wait_bound * 1000:.0f}",
                r["missing"],
            ]
        )
    print()
    print(
        table(
            [
                "N RPs",
                "1 RP hangs",
                "all tokens median ms",
                "all tokens p95 ms",
                "vs ideal (N=1)",
                "tokens floor ms",
                "response median ms",
                "response p95 ms",
                "response floor ms",
                "tokens missing",
            ],
            trows,
        )
    )
    print(
        f"\nideal = one RP's latency = median 'all tokens' at N=1 = {ms(ideal)} ms "
        f"(RP answer delay alone: {RP_DELAY * 1000:.0f} ms; a token arrives before the RP answers).\n"
        f"floors: with {a.concurrency} parallel slots and 50 ms answers, the last token cannot arrive "
        f"before (ceil(N/{a.concurrency})-1)*50 ms and all answers not before ceil(N/{a.concurrency})*50 ms; "
        f"with a hanging RP the response waits the bound ({a.wait_bound} s)."
    )
    summary = {
        "bench": "logout_fanout",
        "facts": facts,
        "ideal_s": ideal,
        "rows": rows,
        "concurrency": a.concurrency,
        "wait_bound": a.wait_bound,
    }
    write_summary(a.summary_json, summary)
    return summary


if __name__ == "__main__":
    main()
