"""Chunked terminations (issue 17): after the cut-off commits, the per-row work runs in chunks,
each its own transaction, resumable from the progress recorded on the termination. A crash
between chunks or inside one, a replayed chunk and two concurrent runners all end exactly the
sessions, revoke exactly the tokens and write exactly the outbox rows one uninterrupted run
would, each once."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update

from oidc_logout.chunks import run_one_chunk, run_pending
from oidc_logout.config import Settings
from oidc_logout.provider import Provider
from oidc_logout.storage.models import (
    Client,
    Cutoff,
    Delivery,
    Grant,
    OPSession,
    SessionParticipant,
    Termination,
    Token,
)
from oidc_logout.termination import COMPLETE, RUNNING, by_client, by_subject, run_chunk, terminate
from oidc_logout.vocabulary import TokenKind

CLIENTS = ("rp-a", "rp-b")
N = 23  # sessions of the terminated subject: several chunks of 5, the last one partial


@pytest.fixture
def provider(database_url: str) -> Iterator[Provider]:
    p = Provider(Settings(database_url=database_url, embedded_dispatcher=False, expiry_sweep_interval=0))
    p.setup()
    with p.session_factory.begin() as db:
        for c in CLIENTS:
            db.add(Client(client_id=c, backchannel_logout_uri=f"http://127.0.0.1:9/{c}", grant_types=[]))
    seed(p, "carol", N)
    seed(p, "dave", 3)  # another subject: untouched by carol's termination
    yield p
    p.engine.dispose()


def seed(p: Provider, sub: str, n: int) -> None:
    """n live sessions of ``sub``, each with both clients taking part, one grant per client and
    an access and a refresh token per grant (bulk inserts)."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    sessions, parts, grants, tokens = [], [], [], []
    for i in range(n):
        sid = f"{sub}-s{i:05d}"
        sessions.append(dict(sid=sid, subject=sub, auth_time=now, created_at=now, last_seen_at=now))
        for c in CLIENTS:
            gid = f"{sub}-g{i:05d}-{c}"
            parts.append(dict(sid=sid, client_id=c, first_at=now, last_at=now))
            grants.append(
                dict(
                    id=gid,
                    client_id=c,
                    grant_type="authorization_code",
                    subject=sub,
                    sid=sid,
                    scope="openid",
                    offline=False,
                    credential_version=1,
                    created_at=now,
                )
            )
            for kind in TokenKind:
                tokens.append(
                    dict(
                        token_hash=f"{gid}-{kind}",
                        kind=kind,
                        grant_id=gid,
                        client_id=c,
                        subject=sub,
                        sid=sid,
                        scope="openid",
                        issued_at=now,
                        expires_at=now + dt.timedelta(hours=1),
                    )
                )
    with p.session_factory.begin() as db:
        db.execute(insert(OPSession), sessions)
        db.execute(insert(SessionParticipant), parts)
        db.execute(insert(Grant), grants)
        db.execute(insert(Token), tokens)


def start_chunked(p: Provider, target: Any = None) -> str:
    with p.session_factory.begin() as db:
        term = terminate(
            db, target or by_subject("carol"), reason="offboarded", initiator="test", inline_limit=0
        )
        assert term.state == RUNNING
        return term.id


def outcome(p: Provider, term_id: str) -> dict[str, Any]:
    """What the termination did, counted in the rows themselves and on its record."""
    with p.session_factory() as db:
        term = db.get(Termination, term_id)
        assert term is not None
        pairs = db.execute(
            select(Delivery.sid, Delivery.client_id, Delivery.channel).where(
                Delivery.termination_id == term_id
            )
        ).all()
        return {
            "state": term.state,
            "ended": db.scalar(
                select(func.count()).select_from(OPSession).where(OPSession.termination_id == term_id)
            ),
            "ended_any": db.scalar(
                select(func.count()).select_from(OPSession).where(OPSession.ended_at.is_not(None))
            ),
            "tokens_revoked": db.scalar(
                select(func.count()).select_from(Token).where(Token.revoked_at.is_not(None))
            ),
            "parts_ended": db.scalar(
                select(func.count())
                .select_from(SessionParticipant)
                .where(SessionParticipant.ended_at.is_not(None))
            ),
            "deliveries": len(pairs),
            "distinct_deliveries": len(set(pairs)),
            "record": (term.sessions_ended, term.tokens_revoked, term.deliveries_written),
        }


EXPECTED = {
    "state": COMPLETE,
    "ended": N,
    "ended_any": N,  # dave's sessions live on
    "tokens_revoked": N * 4,
    "parts_ended": N * 2,
    "deliveries": N * 2,
    "distinct_deliveries": N * 2,
    "record": (N, N * 4, N * 2),
}


def test_a_crash_between_chunks_resumes_from_the_recorded_progress_and_finishes_exactly_once(provider):
    """Stop after 2 chunks of 5 (a crashed runner): 10 sessions done, progress recorded; a new
    runner resumes there and the totals are exactly those of one run."""
    term_id = start_chunked(provider)
    assert run_pending(provider.session_factory, size=5, max_chunks=2) == 2
    partial = outcome(provider, term_id)
    assert partial["state"] == RUNNING and partial["ended"] == 10 and partial["deliveries"] == 20
    with provider.session_factory() as db:
        term = db.get(Termination, term_id)
        assert term is not None and term.chunks_done == 2 and term.progress_cursor == "carol-s00009"
    # Two more pages of 5, then the last 3, then the subject's grants walk (nothing left).
    assert run_pending(provider.session_factory, size=5) == 4
    assert outcome(provider, term_id) == EXPECTED
    assert run_pending(provider.session_factory, size=5) == 0


def test_a_chunk_that_crashes_before_commit_changes_nothing_and_is_redone(provider):
    """A chunk is one transaction: killed before commit, it leaves no session ended and no
    progress recorded; the next runner does that chunk again, and the totals come out exact."""
    term_id = start_chunked(provider)
    with provider.session_factory() as db:
        term = db.get(Termination, term_id)
        cutoff = db.scalar(select(Cutoff).where(Cutoff.termination_id == term_id))
        assert term is not None and cutoff is not None
        run_chunk(db, term, cutoff, 5)
        db.rollback()  # the process died before COMMIT
    assert outcome(provider, term_id)["ended_any"] == 0
    run_pending(provider.session_factory, size=5)
    assert outcome(provider, term_id) == EXPECTED


def test_a_replayed_chunk_with_a_stale_cursor_ends_revokes_and_tells_nothing_twice(provider):
    """A runner holding an old cursor (the progress rolled back to the start after 3 chunks)
    walks rows already done: every write is conditional, so nothing is done or counted twice."""
    term_id = start_chunked(provider)
    run_pending(provider.session_factory, size=5, max_chunks=3)
    with provider.session_factory.begin() as db:
        db.execute(update(Termination).where(Termination.id == term_id).values(progress_cursor=None))
    run_pending(provider.session_factory, size=5)
    assert outcome(provider, term_id) == EXPECTED


def test_two_concurrent_runners_finish_a_termination_without_doubling_anything(provider):
    """Two runners (threads, each with its own connections) work the same termination at once."""
    term_id = start_chunked(provider)
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def runner() -> None:
        try:
            barrier.wait()
            while outcome(provider, term_id)["state"] == RUNNING:
                run_one_chunk(provider.session_factory, 3, termination_id=term_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert outcome(provider, term_id) == EXPECTED


def test_a_client_kill_walks_participations_then_grants_in_chunks(provider):
    """Client: every live participation of the client ends and is told once, every grant of the
    client is revoked with its tokens (both subjects), the other client untouched."""
    term_id = start_chunked(provider, by_client("rp-a"))
    run_pending(provider.session_factory, size=4, max_chunks=5)
    run_pending(provider.session_factory, size=4)
    got = outcome(provider, term_id)
    total = N + 3
    assert got["state"] == COMPLETE
    assert got["ended_any"] == 0  # a kill switch ends no OP session
    assert got["parts_ended"] == total and got["deliveries"] == got["distinct_deliveries"] == total
    assert got["tokens_revoked"] == total * 2 and got["record"] == (0, total * 2, total)
    with provider.session_factory() as db:
        live_b = db.scalar(
            select(func.count())
            .select_from(Grant)
            .where(Grant.client_id == "rp-b", Grant.revoked_at.is_(None))
        )
    assert live_b == total


def test_a_small_scope_is_done_inline_in_the_termination_transaction(provider):
    """Under the inline limit a subject termination is one transaction, complete at commit."""
    with provider.session_factory.begin() as db:
        term = terminate(db, by_subject("dave"), reason="offboarded", initiator="test")
        term_id = term.id
        assert term.state == COMPLETE
    got = outcome(provider, term_id)
    assert got["ended"] == 3 and got["record"] == (3, 12, 6) and got["deliveries"] == 6
