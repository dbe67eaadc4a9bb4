"""The session index lives as long as the session it points to (Redis and
SQL), and the SQL backends purge expired rows on a schedule. Otherwise a valid logout token
answers 200 and ends nothing (Back-Channel Logout 1.0 §2.7)."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import Clock, FakeOP, unique_table_prefix
from .rp_app import create_app
from .tokens import logout_token

BC = "/oidc/backchannel-logout"
ISS = "https://op.example"


def _post_logout(client: Any, issuer: str, sid: str, now: float) -> int:
    return int(client.post(BC, data={"logout_token": logout_token(issuer, now=now, sid=sid)}).status_code)


# -- Redis ------------------------------------------------------------------------------------


@pytest.mark.redis
def test_redis_index_ttl_is_never_shorter_than_the_session_ttl(
    op: FakeOP, redis_client: Any, redis_prefix: str
) -> None:
    """Flask's default session lifetime (31 days) is renewed on every write: the index
    entries must follow (the old index got a 30-day TTL once, at login)."""
    from oidc_logout.rp.redis import RedisSessionIndex, RedisSessionStore

    index = RedisSessionIndex(redis_client, prefix=redis_prefix)
    store = RedisSessionStore(redis_client, prefix=redis_prefix)
    app, _ = create_app(op.issuer, index=index, store=store)
    client = app.test_client()
    client.get("/callback", query_string={"sub": "alice", "sid": "sid-r1"})

    def ttls() -> tuple[int, int]:
        session_ttl = min(
            redis_client.ttl(k) for k in redis_client.scan_iter(match=redis_prefix + "session:*")
        )
        index_ttl = min(redis_client.ttl(k) for k in redis_client.scan_iter(match=redis_prefix + "idx:*"))
        return session_ttl, index_ttl

    session_ttl, index_ttl = ttls()
    assert session_ttl >= 31 * 86400 - 5
    assert index_ttl >= session_ttl
    client.get("/callback", query_string={"sub": "alice", "sid": "sid-r1"})  # a later write renews
    session_ttl, index_ttl = ttls()
    assert index_ttl >= session_ttl


@pytest.mark.redis
def test_redis_logout_still_ends_a_session_that_outlived_the_index_ttl(
    op: FakeOP, redis_client: Any, redis_prefix: str
) -> None:
    """The reported symptom, scaled down: index TTL 1 s, session 60 s; 2 s later a valid
    logout token must still end the session (it answered 200 and ended nothing)."""
    from oidc_logout.rp.redis import RedisSessionIndex, RedisSessionStore

    index = RedisSessionIndex(redis_client, prefix=redis_prefix, ttl=1)
    store = RedisSessionStore(redis_client, prefix=redis_prefix)
    app, _ = create_app(op.issuer, index=index, store=store)
    app.permanent_session_lifetime = datetime.timedelta(seconds=60)
    client = app.test_client()
    client.get("/callback", query_string={"sub": "alice", "sid": "sid-r2"})
    assert client.get("/protected").status_code == 200
    time.sleep(2.2)
    assert client.get("/protected").status_code == 200  # the session is alive
    assert _post_logout(app.test_client(), op.issuer, "sid-r2", time.time()) == 200
    assert client.get("/protected").status_code == 302


@pytest.mark.redis
def test_redis_registering_a_short_lived_session_never_shortens_a_shared_entry(
    redis_client: Any, redis_prefix: str
) -> None:
    """The (iss, sub) set is shared by all of a user's sessions: expiry only grows."""
    from oidc_logout.rp.redis import RedisSessionIndex

    long_lived = RedisSessionIndex(redis_client, prefix=redis_prefix, ttl=1000)
    short_lived = RedisSessionIndex(redis_client, prefix=redis_prefix, ttl=10)
    long_lived.register(ISS, "alice", "sid-a", "local-a")
    short_lived.register(ISS, "alice", "sid-b", "local-b")
    sub_key = short_lived._sub_key(ISS, "alice")
    assert redis_client.ttl(sub_key) > 900
    short_lived.touch("local-b", 5)  # touch never shortens either
    assert redis_client.ttl(short_lived._local_key("local-b")) > 5
    short_lived.touch("local-b", 5000)
    assert redis_client.ttl(short_lived._local_key("local-b")) > 4000
    assert redis_client.ttl(short_lived._sid_key(ISS, "sid-b")) > 4000
    short_lived.touch("never-registered", 100)  # ignored
    assert short_lived.local_sessions_for(ISS, sub="alice") == {"local-a", "local-b"}


# -- SQL --------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any]]:
    from oidc_logout.rp.sqla import RPTables

    engine = request.getfixturevalue("sqlite_engine" if request.param == "sqlite" else "pg_engine")
    tables = RPTables(unique_table_prefix())
    tables.create_all(engine)
    try:
        yield engine, tables
    finally:
        tables.drop_all(engine)


def _rows(engine: Any, table: Any) -> set[str]:
    from sqlalchemy import select

    with engine.connect() as conn:
        return set(conn.execute(select(table.c[table.primary_key.columns.keys()[0]])).scalars())


def test_sql_index_purge_is_scheduled_and_spares_renewed_entries(sql: tuple[Any, Any], clock: Clock) -> None:
    """Nothing used to purge the SQL index: rows of sessions that simply expired stayed
    forever. Now writes purge at most once per purge_interval; touch() keeps rows alive."""
    from oidc_logout.rp.sqla import SQLASessionIndex

    engine, tables = sql
    index = SQLASessionIndex(engine, tables, clock=clock, ttl=100, purge_interval=60)
    index.register(ISS, "alice", "sid-1", "expires")
    index.register(ISS, "bob", "sid-2", "renewed")
    index.touch("renewed", 1000)
    clock.advance(200)
    index.register(ISS, "carol", "sid-3", "fresh")  # a write: the scheduled purge runs
    assert _rows(engine, tables.index) == {"renewed", "fresh"}
    assert index.local_sessions_for(ISS, sid="sid-2") == {"renewed"}
    clock.advance(10)
    index.register(ISS, "dave", "sid-4", "other")  # within the interval: no second purge
    clock.advance(1000)
    assert index.purge_expired() == 3


def test_sql_store_and_replay_cache_purge_on_schedule(sql: tuple[Any, Any], clock: Clock) -> None:
    from oidc_logout.rp.sqla import SQLAReplayCache, SQLASessionStore

    engine, tables = sql
    store = SQLASessionStore(engine, tables, clock=clock, purge_interval=60)
    replay = SQLAReplayCache(engine, tables, clock=clock, purge_interval=60)
    store.save("old", {"u": 1}, 10)
    assert replay.add_if_absent(ISS, "old-jti", clock() + 10)
    clock.advance(100)
    store.save("new", {"u": 2}, 10)
    assert replay.add_if_absent(ISS, "new-jti", clock() + 10)
    assert _rows(engine, tables.session) == {"new"}
    from sqlalchemy import func, select

    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tables.replay)).scalar() == 1


def test_sql_logout_ends_a_session_that_outlived_the_index_ttl(
    op: FakeOP, sql: tuple[Any, Any], clock: Clock
) -> None:
    """End to end with RPLogout: index TTL 10 s, session lifetime 1 h, 20 s later (and after a
    scheduled purge) the logout token still finds and ends the session."""
    from oidc_logout.rp.sqla import SQLASessionIndex, SQLASessionStore

    engine, tables = sql
    index = SQLASessionIndex(engine, tables, clock=clock, ttl=10, purge_interval=1)
    store = SQLASessionStore(engine, tables, clock=clock)
    clock.now = time.time()
    app, _ = create_app(op.issuer, index=index, store=store, clock=clock)
    app.permanent_session_lifetime = datetime.timedelta(hours=1)
    client = app.test_client()
    client.get("/callback", query_string={"sub": "alice", "sid": "sid-s"})
    clock.advance(20)
    app.test_client().get("/callback", query_string={"sub": "bob", "sid": "sid-t"})  # purge runs
    assert client.get("/protected").status_code == 200
    assert _post_logout(app.test_client(), op.issuer, "sid-s", clock()) == 200
    assert client.get("/protected").status_code == 302
