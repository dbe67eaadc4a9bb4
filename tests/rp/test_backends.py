"""Replay cache, session index and session store: memory, SQLAlchemy (SQLite, PostgreSQL), Redis."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from oidc_logout.rp import MemoryReplayCache, MemorySessionIndex, MemorySessionStore

from .conftest import Clock, unique_table_prefix

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=BACKENDS)
def backends(request: pytest.FixtureRequest, clock: Clock) -> Iterator[dict[str, Any]]:
    """replay cache, session index and session store of one kind, sharing ``clock``."""
    kind = request.param
    if kind == "memory":
        yield {
            "replay": MemoryReplayCache(clock=clock),
            "index": MemorySessionIndex(),
            "store": MemorySessionStore(clock=clock),
        }
    elif kind in ("sqlite", "postgres"):
        from oidc_logout.rp.sqla import RPTables, SQLAReplayCache, SQLASessionIndex, SQLASessionStore

        engine = request.getfixturevalue("sqlite_engine" if kind == "sqlite" else "pg_engine")
        tables = RPTables(unique_table_prefix())
        tables.create_all(engine)
        try:
            yield {
                "replay": SQLAReplayCache(engine, tables, clock=clock),
                "index": SQLASessionIndex(engine, tables),
                "store": SQLASessionStore(engine, tables, clock=clock),
            }
        finally:
            tables.drop_all(engine)
    else:
        from oidc_logout.rp.redis import RedisReplayCache, RedisSessionIndex, RedisSessionStore

        client = request.getfixturevalue("redis_client")
        prefix = request.getfixturevalue("redis_prefix")
        yield {
            "replay": RedisReplayCache(client, prefix=prefix, clock=clock),
            "index": RedisSessionIndex(client, prefix=prefix),
            "store": RedisSessionStore(client, prefix=prefix),
        }


def test_first_jti_is_accepted_and_second_is_a_replay(backends: dict[str, Any], clock: Clock) -> None:
    replay = backends["replay"]
    assert replay.add_if_absent("https://op", "j1", clock() + 60) is True
    assert replay.add_if_absent("https://op", "j1", clock() + 60) is False


def test_same_jti_from_another_issuer_is_not_a_replay(backends: dict[str, Any], clock: Clock) -> None:
    replay = backends["replay"]
    assert replay.add_if_absent("https://op-a", "j1", clock() + 60)
    assert replay.add_if_absent("https://op-b", "j1", clock() + 60)


def test_concurrent_deliveries_of_one_jti_let_exactly_one_through(
    backends: dict[str, Any], clock: Clock
) -> None:
    replay = backends["replay"]
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def deliver() -> None:
        barrier.wait()
        results.append(replay.add_if_absent("https://op", "race", clock() + 60))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


def test_expired_jti_is_forgotten(
    backends: dict[str, Any], clock: Clock, request: pytest.FixtureRequest
) -> None:
    replay = backends["replay"]
    if "redis" in request.node.callspec.id:
        assert replay.add_if_absent("https://op", "short", clock() + 1)
        key = next(iter(replay.client.scan_iter(match=replay.prefix + "jti:*")))
        assert 0 < replay.client.pttl(key) <= 1000
        return
    assert replay.add_if_absent("https://op", "j", clock() + 10)
    clock.advance(11)
    assert replay.add_if_absent("https://op", "j", clock() + 10) is True
    if hasattr(replay, "__len__"):
        assert len(replay) == 1


def test_session_index_finds_sessions_by_sid_and_by_sub(backends: dict[str, Any]) -> None:
    index = backends["index"]
    index.register("https://op", "alice", "sid-1", "local-a1")
    index.register("https://op", "alice", "sid-2", "local-a2")
    index.register("https://op", "bob", "sid-3", "local-b")
    index.register("https://other-op", "alice", "sid-1", "local-x")
    assert index.local_sessions_for("https://op", sid="sid-1") == {"local-a1"}
    assert index.local_sessions_for("https://op", sub="alice") == {"local-a1", "local-a2"}
    assert index.local_sessions_for("https://op", sub="nobody") == set()
    index.forget("local-a1")
    assert index.local_sessions_for("https://op", sub="alice") == {"local-a2"}
    assert index.local_sessions_for("https://op", sid="sid-1") == set()


def test_session_index_accepts_sub_only_registrations(backends: dict[str, Any]) -> None:
    index = backends["index"]
    index.register("https://op", "carol", None, "local-c")
    assert index.local_sessions_for("https://op", sub="carol") == {"local-c"}
    index.forget("local-c")
    index.forget("local-c")  # idempotent
    assert index.local_sessions_for("https://op", sub="carol") == set()


def test_session_store_deletes_on_the_server(backends: dict[str, Any]) -> None:
    store = backends["store"]
    assert store.save("s" * 43, {"user": "alice", "n": 1}, 60) is True
    assert store.load("s" * 43) == {"user": "alice", "n": 1}
    store.delete("s" * 43)
    assert store.load("s" * 43) is None


def test_deleted_session_is_not_resurrected_by_a_late_save(backends: dict[str, Any]) -> None:
    store = backends["store"]
    store.save("sess", {"user": "alice"}, 60)
    store.delete("sess")
    assert store.save("sess", {"user": "alice", "late": True}, 60, must_exist=True) is False
    assert store.load("sess") is None
