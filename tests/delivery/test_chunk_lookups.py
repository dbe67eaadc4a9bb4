"""How often the delivery loop looks for chunked terminations (:func:`oidc_logout.chunks.advance`):
at the first cycle after a kick (a termination committed here, or NOTIFY), otherwise at most
once per poll interval while none runs. A cycle follows every batch of finished attempts, and
a look at each one was a write transaction per cycle on SQLite for nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from oidc_logout.delivery.dispatcher import Dispatcher

from .conftest import DB, fast_settings


@pytest.fixture
def termination_statements(outbox_db: DB) -> Iterator[list[str]]:
    """The SQL statements that touch the termination table, as they run."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "oidc_logout_termination" in statement:
            seen.append(statement)

    event.listen(outbox_db.engine, "before_cursor_execute", record)
    yield seen
    event.remove(outbox_db.engine, "before_cursor_execute", record)


def test_cycles_without_a_kick_look_for_running_terminations_once_per_poll_interval(
    outbox_db: DB, termination_statements: list[str]
) -> None:
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, fast_settings(), poll_interval=30.0)
    try:
        for _ in range(20):
            disp._cycle()
        looks = len(termination_statements)
        assert looks >= 1  # the first cycle looks
        disp._cycle()
        assert len(termination_statements) == looks  # not again within the poll interval
        disp.kick()  # a termination committed: the next cycle looks at once
        disp._cycle()
        assert len(termination_statements) > looks
    finally:
        disp.stop()
