"""Database set-up: engines with the right per-dialect settings, and Alembic upgrades."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.pool import StaticPool

MIGRATIONS = Path(__file__).with_name("migrations")
#: The PostgreSQL advisory lock key that serializes schema upgrades (and first-start key
#: creation) across processes: the bytes of "oidclgo1" as a signed 64-bit integer.
ADVISORY_LOCK_KEY = int.from_bytes(b"oidclgo1", "big", signed=True)
#: Alembic version table of this package (the same name as VERSION_TABLE in migrations/env.py).
VERSION_TABLE = "oidc_logout_alembic_version"


#: Seconds a new PostgreSQL connection may take (libpq ``connect_timeout``) unless the URL says.
PG_CONNECT_TIMEOUT = 10


class SchemaNotAtHead(RuntimeError):
    """The database schema is behind this release and auto-migration is off."""


def make_engine(url: str, **kwargs: object) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout, so the
    in-process dispatcher thread and request threads can share one file."""
    if url.startswith("sqlite"):
        if url in ("sqlite://", "sqlite:///:memory:"):
            kwargs.setdefault("poolclass", StaticPool)
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            if url not in ("sqlite://", "sqlite:///:memory:"):
                _set_wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if url.startswith("postgresql"):
        # libpq waits forever by default for a server that accepted the TCP connection and
        # never answers (or a host that drops the packets): a worker would hang there, deaf to
        # SIGTERM, instead of backing off and giving up. A connect_timeout in the URL wins.
        connect_args = dict(kwargs.get("connect_args") or {})  # type: ignore[call-overload]
        if "connect_timeout" not in connect_args and "connect_timeout" not in make_url(url).query:
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT
        kwargs["connect_args"] = connect_args
    return create_engine(url, **kwargs)


def _set_wal(cur: Any, attempts: int = 200) -> None:
    """Switch the file to WAL. Switching needs the database to itself and SQLite answers
    "database is locked" at once instead of waiting out the busy timeout, so several first
    connections at once (concurrent starts on a fresh file) retry briefly; the mode is
    persistent, so once one of them set it the others find it set."""
    for attempt in range(attempts):
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.01 + 0.02 * random.random())


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", os.fspath(MIGRATIONS))
    return cfg


def lock_schema(connection: Connection) -> None:
    """Serialize with every other migrator/first start until ``connection``'s transaction ends.

    PostgreSQL: a transaction-level advisory lock (released at commit or rollback).
    SQLite: the database write lock, taken up front (``BEGIN IMMEDIATE``) so a second
    starter waits out the busy timeout instead of failing on a stale snapshot; the
    connection must not be in a database transaction yet. Other dialects: nothing.
    """
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    elif dialect == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic (the only way tables are created).

    Takes :func:`lock_schema` first, inside the migration transaction: concurrent starts
    on a fresh database run one after the other, and the later ones find the schema at
    ``revision`` and do nothing."""
    cfg = alembic_config()
    with engine.connect() as connection, _sqlite_schema_change(connection):
        lock_schema(connection)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
        _check_foreign_keys(connection)
        connection.commit()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (``None``: never migrated)."""
    with engine.connect() as connection:
        ctx = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def head_revision() -> str | None:
    """The newest revision this release ships."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def check_at_head(engine: Engine) -> None:
    """Raise :class:`SchemaNotAtHead` unless the schema is at this release's head."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaNotAtHead(
            f"the oidc-logout database schema is at revision {current or '(none: empty database)'}, "
            f"this release needs {head}; run `oidc-logout migrate` (same OIDC_LOGOUT_DATABASE_URL) "
            "as a deploy step, or set OIDC_LOGOUT_AUTO_MIGRATE=true"
        )


def downgrade(engine: Engine, revision: str = "base") -> None:
    cfg = alembic_config()
    with engine.connect() as connection, _sqlite_schema_change(connection):
        lock_schema(connection)
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)
        _check_foreign_keys(connection)
        connection.commit()


@contextlib.contextmanager
def _sqlite_schema_change(connection: Connection) -> Iterator[None]:
    """SQLite: foreign keys off while the migration rebuilds tables, on again afterwards.

    SQLite's documented procedure for schema changes it cannot do in place
    (https://sqlite.org/lang_altertable.html#otheralter): a table rebuild drops a table other
    tables point at, which must not cascade or fail half-way; the pragma cannot change inside
    a transaction, so it is set before ``BEGIN`` and the result is checked before commit
    (:func:`_check_foreign_keys`). Other dialects: nothing."""
    if connection.dialect.name != "sqlite":
        yield
        return
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        if connection.in_transaction():
            connection.rollback()
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")


def _check_foreign_keys(connection: Connection) -> None:
    """SQLite: refuse to commit a migration that left a dangling reference."""
    if connection.dialect.name == "sqlite":
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(
                f"migration left {len(broken)} dangling foreign key(s), e.g. {tuple(broken[0])}"
            )


__all__ = ["MIGRATIONS", "alembic_config", "downgrade", "make_engine", "upgrade"]
