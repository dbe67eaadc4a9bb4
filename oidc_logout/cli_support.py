"""What the ``oidc-logout`` commands share beneath their output: exit codes, one-line errors
with a hint, opening a database without changing it, the migration step with its report,
key creation, and the outbox queries behind ``deliveries``, ``show`` and ``terminate``.

Only ``oidc-logout migrate`` changes the schema and only ``oidc-logout keys create`` (or
``migrate --create-keys``) creates signing keys: every other command opens the database as it
is and refuses, with exit code :data:`EXIT_DATABASE`, a database that is missing (a SQLite
file is never created by a typo in ``--database-url``), unreachable or not at this release's
head.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Select, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session

from .config import Settings, redact_url
from .host_models import HostModelError, HostTableMissing, install_host_models
from .keys import ensure_keys, signing_algs
from .provider import Provider
from .storage.base import utcnow
from .storage.models import Delivery, SigningKey
from .storage.schema import (
    VERSION_TABLE,
    SchemaNotAtHead,
    alembic_config,
    check_at_head,
    lock_schema,
)
from .vocabulary import Channel, DeliveryState

#: Every back-channel row of the request was delivered (front-channel rows confirmed).
EXIT_OK = 0
#: An RP refused a logout for good (``failed``), or a command found nothing to do that it was
#: asked to do.
EXIT_FAILED = 1
#: The command line or a setting is wrong (argparse's own code).
EXIT_USAGE = 2
#: A delivery is ``dead``: its retries are exhausted.
EXIT_DEAD = 3
#: The wait ended with deliveries still pending or in flight (they go on in the background).
EXIT_TIMEOUT = 4
#: The termination, delivery or client named does not exist.
EXIT_NOT_FOUND = 5
#: The database is missing, unreachable, not at this release's head, or has no signing keys.
EXIT_DATABASE = 6
#: A bug: the message names the exception; ``--debug`` shows the traceback.
EXIT_INTERNAL = 70

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "done: every back-channel logout delivered",
    EXIT_FAILED: "an RP refused a logout (failed)",
    EXIT_USAGE: "usage or settings error",
    EXIT_DEAD: "a delivery is dead (retries exhausted)",
    EXIT_TIMEOUT: "timed out: deliveries still pending or in flight",
    EXIT_NOT_FOUND: "not found",
    EXIT_DATABASE: "database missing, unreachable, not migrated or without signing keys",
    EXIT_INTERNAL: "internal error (run with --debug)",
}


class CLIError(Exception):
    """One line of what went wrong, a hint of what to do, and the exit code."""

    def __init__(self, message: str, hint: str | None = None, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code


def _database_hint(settings: Settings) -> str:
    return (
        f"the database is {redact_url(settings.database_url)} (--database-url, "
        "OIDC_LOGOUT_DATABASE_URL or the config file); `oidc-logout config show` says which"
    )


def sqlite_path(url: str) -> Path | None:
    """The file a SQLite URL names (None: not SQLite, or in memory)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def require_existing_database(settings: Settings) -> None:
    """A SQLite file that does not exist is an error, never silently created."""
    path = sqlite_path(settings.database_url)
    if path is not None and not path.exists():
        raise CLIError(
            f"no database at {path.resolve()}",
            _database_hint(settings) + "; create one with `oidc-logout migrate`",
            EXIT_DATABASE,
        )


def database_error(settings: Settings, exc: Exception) -> CLIError:
    """A driver error as one line (its first), with the database it was about."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return CLIError(
        f"cannot use the database {redact_url(settings.database_url)}: {first}",
        "check that it runs and that the URL, user and database name are right",
        EXIT_DATABASE,
    )


def open_provider(settings: Settings, *, need_keys: bool = False) -> Provider:
    """The OP core on the database as it is: no migration, no key creation, no sweep.

    Raises :class:`CLIError` (:data:`EXIT_DATABASE`) when the database is missing, cannot be
    reached, is not at head, lacks the host's tables named by ``OIDC_LOGOUT_HOST_*_MODEL``, or
    (``need_keys``: this process will sign) has no signing key; a host model setting that
    cannot be imported or is no Authlib mixin model raises
    :class:`~oidc_logout.host_models.HostModelError` (a settings error, exit code 2)."""
    require_existing_database(settings)
    try:
        provider = Provider(settings.replace(expiry_sweep_interval=0.0))
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise CLIError(
            f"OIDC_LOGOUT_DATABASE_URL={redact_url(settings.database_url)} is not a usable "
            f"SQLAlchemy URL: {exc}",
            "e.g. postgresql+psycopg://user@host/db or sqlite:////var/lib/oidc-logout/op.db",
            EXIT_USAGE,
        ) from None
    try:
        check_at_head(provider.engine)
        # Extension mode: the host's token and client models (OIDC_LOGOUT_HOST_*_MODEL), so
        # a termination run here revokes the host's tokens like one run in the host's app.
        install_host_models(provider.engine, settings, check_tables=True)
        if need_keys:
            with provider.session_factory() as db:
                if not signing_algs(db):
                    raise CLIError(
                        "the database has no signing key",
                        "create them with `oidc-logout keys create`",
                        EXIT_DATABASE,
                    )
    except HostTableMissing as exc:
        provider.engine.dispose()
        raise CLIError(str(exc), _database_hint(settings), EXIT_DATABASE) from None
    except HostModelError:
        provider.engine.dispose()
        raise
    except SchemaNotAtHead as exc:
        provider.engine.dispose()
        raise CLIError(str(exc).split("; ")[0], "run `oidc-logout migrate` first", EXIT_DATABASE) from None
    except DBAPIError as exc:
        provider.engine.dispose()
        raise database_error(settings, exc) from None
    except CLIError:
        provider.engine.dispose()
        raise
    return provider


# -- migrations and keys ---------------------------------------------------------------------


@dataclass(frozen=True)
class MigrationReport:
    before: str | None
    after: str | None
    #: Revisions applied, oldest first (empty: already at head).
    applied: tuple[str, ...]


def _revision(connection: Connection) -> str | None:
    ctx = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


def migrate(engine: Engine) -> MigrationReport:
    """Bring the schema to head under the schema lock (PostgreSQL advisory lock, SQLite write
    lock) and say which revisions this call applied: a concurrent migrator that got there
    first leaves nothing to apply, and the report says so."""
    cfg = alembic_config()
    with engine.connect() as connection:
        lock_schema(connection)
        before = _revision(connection)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
        after = _revision(connection)
        connection.commit()
    applied: list[str] = []
    if after != before:
        script = ScriptDirectory.from_config(cfg)
        applied = [r.revision for r in script.iterate_revisions(after, before or "base")]
        applied.reverse()
    return MigrationReport(before, after, tuple(applied))


def default_algs(settings: Settings) -> tuple[str, ...]:
    """The algorithms the OP signs with out of the box (as ``Provider.setup`` creates them)."""
    return tuple(sorted({"RS256", "ES256", settings.default_id_token_alg}))


def create_keys(engine: Engine, algs: Sequence[str]) -> list[tuple[str, str]]:
    """Create a signing key for each of ``algs`` that has none in service, under the schema
    lock (two concurrent runs create one key each, not two); returns ``(kid, alg)`` created."""
    with engine.connect() as connection:
        lock_schema(connection)
        with Session(bind=connection) as db:
            before = set(db.scalars(select(SigningKey.kid)))
            ensure_keys(db, tuple(algs))
            db.flush()
            created = [
                (str(k.kid), str(k.alg))
                for k in db.scalars(select(SigningKey).order_by(SigningKey.alg))
                if k.kid not in before
            ]
        connection.commit()
    return created


def key_status(key: SigningKey, now: dt.datetime) -> str:
    """``signing``, ``published`` (waiting for its rollover instant) or ``retired``."""
    if key.retired_at is not None and key.retired_at <= now:
        return "retired"
    if key.activates_at is not None and key.activates_at > now:
        return "published"
    return "signing"


def list_keys(db: Session) -> list[dict[str, Any]]:
    now = utcnow()
    return [
        {
            "kid": k.kid,
            "alg": k.alg,
            "status": key_status(k, now),
            "created_at": _ts(k.created_at),
            "activates_at": _ts(k.activates_at),
            "retired_at": _ts(k.retired_at),
        }
        for k in db.scalars(select(SigningKey).order_by(SigningKey.created_at.desc()))
    ]


def _ts(v: dt.datetime | None) -> str | None:
    return v.isoformat() if v else None


# -- outbox queries ----------------------------------------------------------------------------


_Q = TypeVar("_Q", bound=Select)  # type: ignore[type-arg]


@dataclass(frozen=True)
class DeliveryFilter:
    """The filters of ``oidc-logout deliveries`` (None: any)."""

    states: tuple[str, ...] | None = None
    channel: str | None = None
    client_id: str | None = None
    termination_id: str | None = None

    def apply(self, q: _Q, *, states: bool = True) -> _Q:
        if states and self.states:
            q = q.where(Delivery.state.in_(list(self.states)))
        if self.channel:
            q = q.where(Delivery.channel == self.channel)
        if self.client_id:
            q = q.where(Delivery.client_id == self.client_id)
        if self.termination_id:
            q = q.where(Delivery.termination_id == self.termination_id)
        return q


def find_deliveries(db: Session, flt: DeliveryFilter, limit: int) -> list[Delivery]:
    """Matching rows, newest first."""
    q = flt.apply(select(Delivery)).order_by(Delivery.id.desc()).limit(limit)
    return list(db.scalars(q))


def state_counts(db: Session, flt: DeliveryFilter, *, states: bool = False) -> dict[str, int]:
    """Rows per state under ``flt`` (its state filter too if ``states``)."""
    q = flt.apply(select(Delivery.state, func.count()).group_by(Delivery.state), states=states)
    return {str(s): int(n) for s, n in db.execute(q).all()}


@dataclass(frozen=True)
class Unconfirmed:
    """The back-channel rows of one RP that are not delivered, by state."""

    client_id: str
    target_uri: str
    state: str
    count: int
    last_error: str | None


def unconfirmed_by_rp(db: Session, termination_id: str) -> list[Unconfirmed]:
    """Per (RP, state): the termination's back-channel rows that are not delivered, with one
    of their errors: 300 sessions at a broken RP are one line, not 300."""
    rows = db.execute(
        select(Delivery.client_id, Delivery.target_uri, Delivery.state, Delivery.last_error)
        .where(
            Delivery.termination_id == termination_id,
            Delivery.channel == Channel.BACKCHANNEL,
            Delivery.state != DeliveryState.DELIVERED,
        )
        .order_by(Delivery.id)
    ).all()
    counts: Counter[tuple[str, str, str]] = Counter()
    errors: dict[tuple[str, str, str], str | None] = {}
    for client_id, uri, state, error in rows:
        key = (str(client_id), str(uri), str(state))
        counts[key] += 1
        errors[key] = error or errors.get(key)
    return [Unconfirmed(c, u, s, n, errors[(c, u, s)]) for (c, u, s), n in counts.items()]


def outcome_code(counts: dict[str, int]) -> int:
    """The exit code of a set of back-channel rows by state: failed beats dead beats not
    finished; 0 only when every row was delivered."""
    if counts.get(DeliveryState.FAILED, 0):
        return EXIT_FAILED
    if counts.get(DeliveryState.DEAD, 0):
        return EXIT_DEAD
    if counts.get(DeliveryState.PENDING, 0) or counts.get(DeliveryState.IN_FLIGHT, 0):
        return EXIT_TIMEOUT
    return EXIT_OK


__all__ = [
    "EXIT_CODES",
    "EXIT_DATABASE",
    "EXIT_DEAD",
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "CLIError",
    "DeliveryFilter",
    "MigrationReport",
    "Unconfirmed",
    "create_keys",
    "find_deliveries",
    "list_keys",
    "migrate",
    "open_provider",
    "outcome_code",
    "state_counts",
    "unconfirmed_by_rp",
]
