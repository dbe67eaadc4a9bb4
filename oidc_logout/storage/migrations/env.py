"""Alembic environment: runs on the connection handed over by oidc_logout.storage.schema."""

from __future__ import annotations

from alembic import context

import oidc_logout.storage.models  # noqa: F401  (registers the tables)
from oidc_logout.storage.base import Base

config = context.config
#: Our own version table, so a host IdP's Alembic history and ours never collide.
VERSION_TABLE = "oidc_logout_alembic_version"
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        from sqlalchemy import create_engine

        engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://")
        with engine.begin() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=True,
                version_table=VERSION_TABLE,
            )
            with context.begin_transaction():
                context.run_migrations()
        return
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
