"""A migrated engine over the database_url fixture (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from oidc_logout.storage.schema import make_engine, upgrade


@pytest.fixture
def migrated_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
