"""Two IdP instances on ONE PostgreSQL database end the same OP session at the same moment
(threads released by a barrier): one termination ends the session, each RP gets exactly one
delivery, nobody sees an error. Both through ``Provider.terminate_now`` and through two
concurrent ``end_session`` HTTP requests (one to each instance)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import select

from oidc_logout.demo.idp import create_idp_app
from oidc_logout.storage.base import utcnow
from oidc_logout.storage.models import (
    BACKCHANNEL,
    DELIVERED,
    Delivery,
    OPSession,
    SessionParticipant,
    Termination,
)
from oidc_logout.termination import by_sid
from tests.support.idp import PASSWORD, Browser, IdP, authorize, client_meta, start_idp
from tests.support.servers import LiveServer

from .conftest import Receiver, wait_until

RPS = ("rp-a", "rp-b")
ROUNDS = 4


def second_instance(first: IdP, clients: list[dict[str, Any]]) -> IdP:
    """Another process-like instance of ``first``: same settings (issuer, database), its own
    app, provider, engine, dispatcher and port."""
    server = LiveServer()
    app = create_idp_app(first.settings, password=PASSWORD, clients=clients)
    server.app = app
    server.start()
    return IdP(server, app, first.settings)


class TwoIdPs:
    def __init__(self, url: str) -> None:
        self.receivers = {name: Receiver() for name in RPS}
        self.metas = {
            name: client_meta(
                name,
                port=21000 + i,
                backchannel_logout_uri=rec.url(f"/{name}"),
                backchannel_logout_session_required=True,
            )
            for i, (name, rec) in enumerate(self.receivers.items())
        }
        common: dict[str, Any] = dict(
            delivery_backoff_base=0.05, delivery_backoff_cap=0.2, logout_wait_bound=3.0
        )
        self.a: IdP = start_idp(url, clients=list(self.metas.values()), **common)
        # A second instance of the SAME OP (same issuer, as behind a load balancer).
        self.b: IdP = second_instance(self.a, clients=list(self.metas.values()))
        self.factory = self.a.provider.session_factory

    def new_session(self) -> str:
        sid = f"sid-{uuid.uuid4().hex}"
        now = utcnow()
        with self.factory.begin() as db:
            db.add(OPSession(sid=sid, subject="alice", auth_time=now))
            db.flush()
            db.add_all(SessionParticipant(sid=sid, client_id=name) for name in RPS)
        return sid

    def check_one_termination(self, sid: str) -> str:
        """Exactly one Termination ended ``sid``; one delivered back-channel row per RP."""
        with self.factory() as db:
            session = db.get(OPSession, sid)
            assert session is not None and session.ended_at is not None
            enders = list(
                db.scalars(
                    select(Termination).where(Termination.target_value == sid, Termination.sessions_ended > 0)
                )
            )
            assert [t.id for t in enders] == [session.termination_id], enders
        assert wait_until(lambda: self._states(sid) == [DELIVERED] * len(RPS), 10)
        with self.factory() as db:
            rows = list(
                db.scalars(select(Delivery).where(Delivery.sid == sid, Delivery.channel == BACKCHANNEL))
            )
        assert sorted(r.client_id for r in rows) == sorted(RPS)
        assert {r.termination_id for r in rows} == {session.termination_id}
        for name, rec in self.receivers.items():
            assert rec.per_sid[sid] == 1, (name, rec.per_sid[sid])
        return session.termination_id

    def _states(self, sid: str) -> list[str]:
        with self.factory() as db:
            return list(
                db.scalars(select(Delivery.state).where(Delivery.sid == sid, Delivery.channel == BACKCHANNEL))
            )

    def stop(self) -> None:
        self.a.stop()
        self.b.stop()
        for rec in self.receivers.values():
            rec.stop()


@pytest.fixture
def two_idps(pg_url: str) -> Iterator[TwoIdPs]:
    env = TwoIdPs(pg_url)
    yield env
    env.stop()


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` in threads released together by a barrier; return results or raise."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int, fn: Callable[[], Any]) -> None:
        try:
            barrier.wait(10)
            results[i] = fn()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    return results


@pytest.mark.postgres
def test_two_instances_terminating_one_session_at_once_make_one_termination(two_idps: TwoIdPs) -> None:
    for n in range(ROUNDS):  # bounded: a few rounds to make a real overlap likely
        sid = two_idps.new_session()
        outcomes = race(
            *[
                (
                    lambda idp=idp, sid=sid, k=k: idp.provider.terminate_now(
                        by_sid(sid), reason="race", initiator=f"instance-{k}", wait=2.0
                    )
                )
                for k, idp in enumerate((two_idps.a, two_idps.b))
            ]
        )
        winner = two_idps.check_one_termination(sid)
        # Both instances report the one termination (the loser, whether it raced inside the
        # winner's transaction or came after its commit, returns the winner's record) and its
        # deliveries: one per RP.
        assert {o.termination_id for o in outcomes} == {winner}, (n, outcomes)
        assert len({d for o in outcomes for d in o.delivery_ids}) == len(RPS), (n, outcomes)
    print(f"\n[two instances] {ROUNDS} races: both instances returned the one termination")


@pytest.mark.postgres
def test_two_concurrent_end_session_requests_to_two_instances_make_one_termination(two_idps: TwoIdPs) -> None:
    for _ in range(2):
        browser = Browser(two_idps.a.url)
        assert browser.login().status_code == 303
        tokens = {name: authorize(browser, two_idps.metas[name]) for name in RPS}
        with two_idps.factory() as db:
            sid = db.scalar(
                select(OPSession.sid)
                .where(OPSession.ended_at.is_(None), OPSession.subject == "alice")
                .order_by(OPSession.created_at.desc())
            )
        assert sid is not None
        hint = tokens["rp-a"]["id_token"]
        responses = race(
            *[
                (
                    lambda url=idp.url, hint=hint: requests.get(
                        f"{url}/end_session",
                        params={"id_token_hint": hint, "client_id": "rp-a"},
                        allow_redirects=False,
                        timeout=20,
                    )
                )
                for idp in (two_idps.a, two_idps.b)
            ]
        )
        for resp in responses:
            assert resp.status_code in (200, 302), (resp.status_code, resp.text[:300])
        two_idps.check_one_termination(sid)
