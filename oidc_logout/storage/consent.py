"""Remembered consent and rate-limit events. Functions take a Session and never commit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .base import utcnow
from .models import Consent, RateEvent


def approved_scopes(db: Session, subject: str, client_id: str) -> frozenset[str] | None:
    """The scopes ``subject`` approved for ``client_id`` so far; None if never asked."""
    scope = db.scalar(select(Consent.scope).where(Consent.subject == subject, Consent.client_id == client_id))
    return None if scope is None else frozenset(scope.split())


def remember_consent(db: Session, subject: str, client_id: str, scopes: Iterable[str]) -> None:
    """Add ``scopes`` to what ``subject`` approved for ``client_id`` (race-free upsert, then
    a locked read-modify-write of the union)."""
    now = utcnow()
    values: dict[str, Any] = dict(
        subject=subject, client_id=client_id, scope="", created_at=now, updated_at=now
    )
    insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    db.execute(
        insert(Consent).values(**values).on_conflict_do_nothing(index_elements=["subject", "client_id"])
    )
    row = db.scalars(
        select(Consent).where(Consent.subject == subject, Consent.client_id == client_id).with_for_update()
    ).one()
    row.scope = " ".join(sorted(set(row.scope.split()) | set(scopes)))
    row.updated_at = now
    db.flush()


def count_events(db: Session, key_hash: str, since: dt.datetime) -> int:
    return int(
        db.scalar(
            select(func.count())
            .select_from(RateEvent)
            .where(RateEvent.key_hash == key_hash, RateEvent.at >= since)
        )
        or 0
    )


def add_event(db: Session, key_hash: str, at: dt.datetime) -> None:
    db.add(RateEvent(key_hash=key_hash, at=at))


def clear_events(db: Session, key_hash: str) -> None:
    db.execute(delete(RateEvent).where(RateEvent.key_hash == key_hash))


def prune_events(db: Session, before: dt.datetime) -> None:
    """Events older than every window: kept from growing without a separate job."""
    db.execute(delete(RateEvent).where(RateEvent.at < before))


__all__ = ["add_event", "approved_scopes", "clear_events", "count_events", "prune_events", "remember_consent"]
