"""What the cut-off check costs a token request (issue 17): ``token_is_active`` now looks up the
cut-offs of the token's subject and client (one indexed query) on top of the token's session.

In-process, the same token checked again and again in its own short transaction (as a request
does), SQLite file and PostgreSQL, three ways in one run:

* ``before``: the rule as it was before the cut-off (expiry, revocation, live session), copied here;
* ``now, no cut-offs``: ``token_is_active`` with an empty cut-off table;
* ``now, 10,000 cut-offs``: ``token_is_active`` with 10,000 cut-off rows of other subjects.

    python -m bench.cutoff_cost [--calls 3000] [--dbs sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from typing import Any

from .common import make_provider, median, scratch_database, table, write_summary
from .machine import print_facts


def _before(db: Any, token: Any) -> bool:
    """token_is_active as it was before the cut-off (git 8315a9a^, storage/queries.py)."""
    from oidc_logout.storage.models import OPSession
    from oidc_logout.vocabulary import TokenKind

    def live(sid: str | None) -> bool:
        if not sid:
            return False
        row = db.get(OPSession, sid)
        return row is not None and row.ended_at is None

    if token.is_expired() or token.is_revoked():
        return False
    if token.kind == TokenKind.REFRESH_TOKEN:
        grant = token.grant
        return grant.offline or not grant.sid or live(grant.sid)
    return token.sid is None or live(token.sid)


def _seed(factory: Any) -> str:
    from sqlalchemy import insert

    from oidc_logout.storage.models import Client, Grant, OPSession, Token
    from oidc_logout.vocabulary import TokenKind

    now = dt.datetime.now(dt.UTC)
    with factory.begin() as db:
        db.add(Client(client_id="rp", grant_types=[]))
        db.flush()
        db.execute(
            insert(OPSession),
            [dict(sid="s1", subject="alice", auth_time=now, created_at=now, last_seen_at=now)],
        )
        db.execute(
            insert(Grant),
            [
                dict(
                    id="g1",
                    client_id="rp",
                    grant_type="authorization_code",
                    subject="alice",
                    sid="s1",
                    scope="openid",
                    offline=False,
                    credential_version=1,
                    created_at=now,
                )
            ],
        )
        db.execute(
            insert(Token),
            [
                dict(
                    token_hash="h1",
                    kind=TokenKind.ACCESS_TOKEN,
                    grant_id="g1",
                    client_id="rp",
                    subject="alice",
                    sid="s1",
                    scope="openid",
                    issued_at=now,
                    expires_at=now + dt.timedelta(hours=1),
                )
            ],
        )
    return "h1"


def _many_cutoffs(factory: Any, n: int) -> None:
    from sqlalchemy import insert

    from oidc_logout.storage.models import Cutoff, Termination
    from oidc_logout.vocabulary import TargetKind

    now = dt.datetime.now(dt.UTC)
    with factory.begin() as db:
        db.add(
            Termination(
                id="t-bench",
                target_kind=TargetKind.SUBJECT,
                target_value="x",
                reason="bench",
                initiator="bench",
                created_at=now,
            )
        )
        db.flush()
        db.execute(
            insert(Cutoff),
            [
                dict(
                    kind=TargetKind.SUBJECT,
                    value=f"other-{i}",
                    before=now,
                    include_offline=False,
                    termination_id="t-bench",
                )
                for i in range(n)
            ],
        )


def _measure(factory: Any, token_hash: str, check: Any, calls: int) -> tuple[float, float]:
    """(median wall us, mean CPU us of this process) per check."""
    from sqlalchemy import select

    from oidc_logout.storage.models import Token

    times = []
    cpu0 = time.process_time()
    for _ in range(calls):
        t = time.perf_counter()
        with factory() as db:
            tok = db.scalar(select(Token).where(Token.token_hash == token_hash))
            assert check(db, tok)
        times.append(time.perf_counter() - t)
    return median(times) * 1e6, (time.process_time() - cpu0) / calls * 1e6


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from oidc_logout.storage.queries import token_is_active

    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dbs", default="sqlite,postgresql")
    ap.add_argument("--summary")
    args = ap.parse_args(argv)
    facts = print_facts()
    rows = []
    for name in args.dbs.split(","):
        with scratch_database(name, "bench-cutoff-") as url:
            provider = make_provider(url)
            factory = provider.session_factory
            h = _seed(factory)
            for label in ("no cut-offs", "10,000 cut-offs of other subjects"):
                if label != "no cut-offs":
                    _many_cutoffs(factory, 10_000)
                res: dict[str, list[tuple[float, float]]] = {"before": [], "now": []}
                for _ in range(args.rounds):  # interleaved rounds: drift hits both variants alike
                    res["before"].append(_measure(factory, h, _before, args.calls))
                    res["now"].append(_measure(factory, h, token_is_active, args.calls))
                base = median([w for w, _ in res["before"]])
                base_cpu = median([c for _, c in res["before"]])
                for variant, xs in res.items():
                    wall, cpu = median([w for w, _ in xs]), median([c for _, c in xs])
                    rows.append(
                        {
                            "db": name,
                            "table": label,
                            "variant": variant,
                            "us": wall,
                            "ratio": wall / base,
                            "cpu_us": cpu,
                            "cpu_ratio": cpu / base_cpu,
                        }
                    )
            provider.engine.dispose()
    print(
        table(
            [
                "database",
                "cut-off table",
                "rule",
                "median wall us per check (lookup + rule, own session)",
                "vs before",
                "CPU us of this process per check",
                "vs before",
            ],
            [
                [
                    r["db"],
                    r["table"],
                    r["variant"],
                    f"{r['us']:.0f}",
                    f"{r['ratio']:.2f}x",
                    f"{r['cpu_us']:.0f}",
                    f"{r['cpu_ratio']:.2f}x",
                ]
                for r in rows
            ],
        )
    )
    out = {"facts": facts, "rows": rows}
    write_summary(args.summary, out)
    return out


if __name__ == "__main__":
    main()
