"""The OP core object: settings, database, keys, users and the delivery dispatcher, with the
operations every front end (Flask views, admin API, CLI, expiry sweep) shares.

A host that runs :func:`~oidc_logout.termination.terminate` inside its own transaction hands
the committed termination to delivery with :meth:`Provider.dispatch`."""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from jwcrypto import jwk, jws
from sqlalchemy import Engine, case, func, or_, select, update
from sqlalchemy.orm import Session, selectinload, sessionmaker

from . import metrics
from .chunks import progress as chunk_progress
from .config import Settings
from .keys import KeyRing, ensure_keys
from .protocols import UserDirectory
from .ssf.events import secret_rotated
from .storage.base import utcnow
from .storage.models import Client, Delivery, OPSession, Termination
from .storage.queries import lifetime_cutoffs, rowcount
from .storage.schema import check_at_head, lock_schema, make_engine, upgrade
from .termination import Target, by_credential, by_expiry, terminate
from .tokens import token_hash
from .vocabulary import FINAL_STATES, PUSHED_CHANNELS, Channel, DeliveryState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TerminationOutcome:
    """What a committed termination did, and whether its back-channel deliveries finished
    within the wait bound."""

    termination_id: str
    delivery_ids: tuple[int, ...]
    frontchannel: tuple[tuple[int, str, str | None], ...]  # (delivery id, uri, sid)
    settled: bool


class Provider:
    """Framework-free OP core. The Flask extension builds one per app; the operator CLI and
    the workers build one without a user directory (they never sign anyone in)."""

    def __init__(
        self, settings: Settings, users: UserDirectory | None = None, engine: Engine | None = None
    ) -> None:
        self.settings = settings
        self._users = users
        self.engine = engine or make_engine(settings.database_url)
        self.session_factory: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)
        self.keyring = KeyRing(self.session_factory)
        self.dispatcher: Any = None
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def users(self) -> UserDirectory:
        """The host's user directory (token issuance and userinfo need it)."""
        if self._users is None:
            raise RuntimeError(
                "this Provider was built without a UserDirectory: "
                "Provider(settings, users=...) to issue tokens or sign users in"
            )
        return self._users

    @users.setter
    def users(self, users: UserDirectory) -> None:
        self._users = users

    # -- lifecycle -----------------------------------------------------------------------
    def setup(self, migrate: bool | None = None) -> None:
        """Migrate the schema (Alembic) and make sure signing keys exist.

        ``migrate`` defaults to ``settings.auto_migrate``. Migrating takes the schema lock
        (:func:`~oidc_logout.storage.schema.upgrade`), so concurrent starts serialize; not
        migrating checks the schema is at head and raises
        :class:`~oidc_logout.storage.schema.SchemaNotAtHead` (naming ``oidc-logout migrate``)
        if it is not."""
        if migrate is None:
            migrate = self.settings.auto_migrate
        if migrate:
            upgrade(self.engine)
        else:
            check_at_head(self.engine)
        with self.engine.connect() as connection:
            # Under the same lock: two first starts must not both create signing keys.
            lock_schema(connection)
            with Session(bind=connection) as db:
                ensure_keys(db, tuple(sorted({"RS256", "ES256", self.settings.default_id_token_alg})))
                db.flush()
            connection.commit()
        self.keyring.refresh()

    def start_background(self) -> None:
        """Embedded mode: the in-process dispatcher (its claim loop included) and the session
        expiry sweep."""
        self.start_logout_delivery()
        if self.dispatcher is not None:
            self.dispatcher.start()
        if self.settings.expiry_sweep_interval > 0 and self._sweeper is None:
            self._sweeper = threading.Thread(target=self._sweep_loop, name="oidc-logout-expiry", daemon=True)
            self._sweeper.start()

    def start_logout_delivery(self) -> None:
        """Embedded mode: deliver the logouts this process runs, at once and in parallel (their
        burst, :meth:`.delivery.dispatcher.Dispatcher.claim_for_delivery`), without a claim
        loop of its own.

        For every worker of a multi-process server whose background work (the claim loop,
        the sweep) runs in one elected worker (:mod:`oidc_logout.gunicorn_hooks`,
        :mod:`oidc_logout.granian_server`): a logout answered by any other worker would
        otherwise wait for the elected one to find its rows at its next poll. Rows this
        process leaves (a retry, rows beyond its burst's room) are the claim loop's, wherever
        it runs, as after a crash. :meth:`start_background` adds the claim loop."""
        if self.settings.embedded_dispatcher and self.dispatcher is None:
            from .delivery.dispatcher import Dispatcher

            self.dispatcher = Dispatcher(self.session_factory, self.keyring, self.settings)

    def stop_background(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self.dispatcher is not None:
            self.dispatcher.stop(timeout)
            self.dispatcher = None

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.settings.expiry_sweep_interval):
            try:
                self.expire_sessions()
                self.settle_stale_frontchannel()
            except Exception:
                log.exception("session expiry sweep failed")

    def settle_stale_frontchannel(self, grace: float = 60.0, now: dt.datetime | None = None) -> int:
        """Front-channel rows whose browser never reported (JavaScript off, tab closed) become
        ``unconfirmed`` once the page's timeout and a grace period have passed, so operators
        see them as unproven instead of pending forever."""
        now = now or utcnow()
        cut = now - dt.timedelta(seconds=self.settings.frontchannel_timeout_ms / 1000 + grace)
        with self.session_factory.begin() as db:
            result = db.execute(
                update(Delivery)
                .where(
                    Delivery.channel == Channel.FRONTCHANNEL,
                    Delivery.state == DeliveryState.PENDING,
                    Delivery.created_at < cut,
                )
                .values(
                    state=DeliveryState.UNCONFIRMED,
                    completed_at=now,
                    last_error="no report from the browser (JavaScript off or page closed)",
                )
            )
            metrics.frontchannel_settled(db, 0, rowcount(result))
            return rowcount(result)

    # -- termination ---------------------------------------------------------------------
    def terminate_now(
        self,
        target: Target,
        *,
        reason: str,
        initiator: str,
        include_offline: bool = False,
        browser_present: bool = False,
        wait: float | None = None,
    ) -> TerminationOutcome:
        """Run :func:`terminate` in its own transaction, commit, then hand the outbox rows to
        the dispatcher and wait at most ``wait`` seconds (None: the configured bound).

        With an embedded dispatcher, the back-channel rows are claimed for it in the same
        transaction (:meth:`.Dispatcher.claim_for_delivery`, as many as its logout burst has
        room for): they are leased to this process the moment they exist, and their attempts
        start right after the commit, with no claim transaction and no polling in between."""
        dispatcher = self.dispatcher
        with self.session_factory.begin() as db:
            term = terminate(
                db,
                target,
                reason=reason,
                initiator=initiator,
                include_offline=include_offline,
                browser_present=browser_present,
            )
            rows, term_id = _outbox_rows(db, term.id), term.id
            claimed = dispatcher.claim_for_delivery(db, rows[0]) if dispatcher is not None and rows[0] else []
        if claimed:
            dispatcher.adopt(claimed)
        return self._deliver(term_id, rows, wait, claimed=len(claimed))

    def dispatch(self, termination_id: str, wait: float | None = 0) -> TerminationOutcome:
        """Hand a termination the caller committed in its own transaction to delivery: wake the
        dispatcher (or the workers) and wait at most ``wait`` seconds for its back-channel
        deliveries (None: the configured logout bound). Call it after the commit, never
        before: an RP must not hear of a logout that rolled back."""
        with self.session_factory() as db:
            if db.get(Termination, termination_id) is None:
                from .errors import NotFound

                raise NotFound("no termination with that id")
            rows = _outbox_rows(db, termination_id)
        return self._deliver(termination_id, rows, wait)

    def _deliver(
        self, term_id: str, rows: Any, wait: float | None = None, *, claimed: int | None = None
    ) -> TerminationOutcome:
        """Wake delivery for a committed termination's rows and wait at most ``wait`` seconds.
        ``claimed``: how many of them the termination's transaction claimed for the local
        dispatcher (already started); None: none were, claim them here."""
        back, front = rows
        settled = not back
        bound = self.settings.logout_wait_bound if wait is None else wait
        waited_from = time.monotonic()
        if back and self.dispatcher is not None:
            if claimed is None and bound > 0:
                # Committed by the caller, who waits: claim them now, in the burst (the rest
                # is kicked to the claim loop).
                self.dispatcher.deliver_now(back, burst=True)
            elif claimed is None or claimed < len(back):
                self.dispatcher.kick()  # the claim loop takes them (or those without room)
            if bound > 0:
                settled = bool(self.dispatcher.wait_for(list(back), bound))
        elif back and bound > 0:
            # Worker mode: other processes deliver; watch the rows reach a final state.
            settled = self._wait_for_rows(back, bound)
        if back and bound > 0:
            metrics.logout_waited(time.monotonic() - waited_from, settled)
        return TerminationOutcome(term_id, back, front, settled)

    def _wait_for_rows(self, ids: tuple[int, ...], bound: float) -> bool:
        from .delivery.outbox import final_states

        deadline = time.monotonic() + bound
        pause = 0.02
        while True:
            with self.session_factory() as db:
                if len(final_states(db, ids)) == len(ids):
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.2)

    def expire_sessions(self, now: dt.datetime | None = None, batch: int = 500) -> list[str]:
        """End sessions past their idle or absolute lifetime through the one termination path,
        so their RPs are notified like for any other logout. Returns termination ids."""
        now = now or utcnow()
        idle_cut, abs_cut = lifetime_cutoffs(self.settings, now)
        out: list[str] = []
        while True:
            with self.session_factory() as db:
                sids = list(
                    db.scalars(
                        select(OPSession.sid)
                        .where(
                            OPSession.ended_at.is_(None),
                            or_(OPSession.last_seen_at < idle_cut, OPSession.created_at < abs_cut),
                        )
                        .limit(batch)
                    )
                )
            if not sids:
                return out
            outcome = self.terminate_now(
                by_expiry(sids), reason="session expired", initiator="expiry", wait=0
            )
            out.append(outcome.termination_id)
            if len(sids) < batch:
                return out

    def rotate_client_secret(
        self, client_id: str, *, end_previous: bool, reason: str, initiator: str
    ) -> tuple[str, TerminationOutcome | None]:
        """Give the client a new secret; with ``end_previous`` every grant authenticated with an
        older secret (and the client's sessions it was used in) ends in the same transaction."""
        new_secret = secrets.token_urlsafe(32)
        with self.session_factory.begin() as db:
            client = db.get(Client, client_id, with_for_update=True)
            if client is None:
                from .errors import NotFound

                raise NotFound("no client with that client_id")
            client.secret_version += 1
            client.client_secret_hash = token_hash(new_secret)
            client.secret_rotated_at = utcnow()
            secret_rotated(
                db, client_id, reason=reason, initiator=initiator, now=client.secret_rotated_at
            )  # SSF
            if not end_previous:
                return new_secret, None
            term = terminate(
                db,
                by_credential(client_id, client.secret_version),
                reason=reason,
                initiator=initiator,
                include_offline=True,
            )
            rows, term_id = _outbox_rows(db, term.id), term.id
        return new_secret, self._deliver(term_id, rows, wait=0)

    def termination_report(
        self, db: Session, termination_id: str, *, limit: int = 200, offset: int = 0
    ) -> dict[str, Any] | None:
        """The termination with a per-state count of its deliveries and one page of them
        (a subject with thousands of sessions must not produce a response of thousands)."""
        term = db.get(Termination, termination_id)
        if term is None:
            return None
        counts: dict[str, int] = dict(
            db.execute(
                select(Delivery.state, func.count())
                .where(Delivery.termination_id == termination_id)
                .group_by(Delivery.state)
            ).all()
        )
        page = db.scalars(
            select(Delivery)
            .where(Delivery.termination_id == termination_id)
            .order_by(Delivery.id)
            .limit(limit)
            .offset(offset)
            .options(selectinload(Delivery.attempt_log))
        ).all()
        report = termination_to_dict(term, deliveries=page)
        report["delivery_summary"] = counts
        report["deliveries_total"] = sum(counts.values())
        report["deliveries_offset"] = offset
        return report

    def record_frontchannel_report(self, db: Session, termination_id: str, loaded: set[int]) -> int:
        """Front-channel §4 is best effort: store which iframes the browser saw load.

        Conditional UPDATEs on ``state = pending``: a row is settled once, so a second report
        (a reloaded page, a replayed request) changes nothing and counts nothing."""
        now = utcnow()
        pending = (
            Delivery.termination_id == termination_id,
            Delivery.channel == Channel.FRONTCHANNEL,
            Delivery.state == DeliveryState.PENDING,
        )
        seen = sorted(loaded)
        confirmed = db.execute(
            update(Delivery)
            .where(*pending, Delivery.id.in_(seen))
            .values(state=DeliveryState.CONFIRMED, completed_at=now, attempts=Delivery.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        unconfirmed = db.execute(
            update(Delivery)
            .where(*pending, Delivery.id.not_in(seen))
            .values(
                state=DeliveryState.UNCONFIRMED,
                completed_at=now,
                attempts=Delivery.attempts + 1,
                last_error="iframe did not report loading within the timeout",
            )
            .execution_options(synchronize_session=False)
        )
        metrics.frontchannel_settled(db, rowcount(confirmed), rowcount(unconfirmed))
        return rowcount(confirmed) + rowcount(unconfirmed)

    # -- helpers -------------------------------------------------------------------------
    def is_own_id_token(self, token: str) -> bool:
        """Whether ``token`` is a JWS signed by one of this OP's keys (e.g. an ID token)."""
        try:
            obj = jws.JWS()
            obj.deserialize(token)
            keyset = jwk.JWKSet.from_json(json.dumps(self.keyring.public_jwks()))
            obj.verify(keyset)
            return True
        except Exception:
            return False


def _outbox_rows(
    db: Session, termination_id: str
) -> tuple[tuple[int, ...], tuple[tuple[int, str, str | None], ...]]:
    """What after_commit needs of a termination's delivery rows: the ids of its unfinished
    pushed rows (back-channel logout, SSF push) (ids only: a 100,000-session termination must not read every row's URI
    and sid into the OP's memory) and its unfinished front-channel rows (id, uri, sid)."""
    front_channel = Delivery.channel == Channel.FRONTCHANNEL
    back: list[int] = []
    front: list[tuple[int, str, str | None]] = []
    # One query for both (a round trip less in every logout); a pushed row's URI and sid are
    # not read (NULL here), only the front-channel page needs them.
    for row in db.execute(
        select(
            Delivery.id,
            front_channel.label("front"),
            case((front_channel, Delivery.target_uri)),
            case((front_channel, Delivery.sid)),
        )
        .where(
            Delivery.termination_id == termination_id,
            Delivery.state.not_in(list(FINAL_STATES)),
            Delivery.channel.in_([*PUSHED_CHANNELS, Channel.FRONTCHANNEL]),
        )
        .order_by(Delivery.id)
    ):
        if row[1]:
            front.append((row[0], row[2], row[3]))
        else:
            back.append(row[0])
    return tuple(back), tuple(front)


def _ts(v: dt.datetime | None) -> str | None:
    return v.isoformat() if v else None


def delivery_to_dict(d: Delivery, *, attempts: bool = True) -> dict[str, Any]:
    """One outbox row as the admin API and the CLI show it (attempts: the proof log)."""
    out: dict[str, Any] = {
        "id": d.id,
        "termination_id": d.termination_id,
        "channel": d.channel,
        "client_id": d.client_id,
        "sid": d.sid,
        "target_uri": d.target_uri,
        "state": d.state,
        "attempts": d.attempts,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": _ts(d.created_at),
        "next_attempt_at": _ts(d.next_attempt_at),
        "completed_at": _ts(d.completed_at),
    }
    if attempts:
        out["attempt_log"] = [
            {
                "number": a.number,
                "started_at": _ts(a.started_at),
                "duration_ms": a.duration_ms,
                "http_status": a.http_status,
                "outcome": a.outcome,
                "error": a.error,
            }
            for a in d.attempt_log
        ]
    return out


def termination_to_dict(term: Termination, deliveries: Any = None) -> dict[str, Any]:
    return {
        "id": term.id,
        "target": {"kind": term.target_kind, "value": term.target_value},
        "reason": term.reason,
        "initiator": term.initiator,
        "include_offline": term.include_offline,
        "created_at": _ts(term.created_at),
        "sessions_ended": term.sessions_ended,
        "tokens_revoked": term.tokens_revoked,
        "progress": chunk_progress(term),  # how far a chunked termination got (oidc_logout.chunks)
        "deliveries": [delivery_to_dict(d) for d in (term.deliveries if deliveries is None else deliveries)],
    }


__all__ = ["Provider", "TerminationOutcome", "delivery_to_dict", "termination_to_dict"]
