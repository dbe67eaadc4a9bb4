"""``/healthz`` and ``/readyz`` on the OP and on a worker: each readiness check named in the
body, 503 while any fails (a real PostgreSQL refusing connections, a schema behind, no worker,
an outbox falling behind), 200 again once it recovers."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time

import pytest
import requests
from sqlalchemy import create_engine, text, update
from sqlalchemy.orm import sessionmaker

from oidc_logout.delivery.worker import Worker
from oidc_logout.health import Heartbeat
from oidc_logout.keys import KeyRing
from oidc_logout.storage.base import utcnow
from oidc_logout.storage.models import Delivery
from oidc_logout.storage.schema import VERSION_TABLE, make_engine
from oidc_logout.termination import by_subject
from tests.conftest import PG_ADMIN_URL
from tests.support.servers import SilentServer

from .conftest import scrape, sign_in, value

CHECKS = {"database", "schema", "signing_key", "delivery", "outbox"}


def _ready(url: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    r = requests.get(f"{url}/readyz", timeout=15)
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers["Cache-Control"] == "no-store"
    return r.status_code, r.json()


def _failing(body: dict) -> set[str]:  # type: ignore[type-arg]
    return {name for name, c in body["checks"].items() if not c["ok"]}


def _wait_ready(url: str, status: int, timeout: float = 15.0) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        got, body = _ready(url)
        if got == status or time.monotonic() > deadline:
            assert got == status, body
            return body
        time.sleep(0.1)


def test_an_embedded_op_is_alive_and_ready_with_every_check_named(env_factory):
    env = env_factory()
    r = requests.get(f"{env.idp.url}/healthz", timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "alive"}
    status, body = _ready(env.idp.url)
    assert status == 200, body
    assert body["status"] == "ready"
    assert set(body["checks"]) == CHECKS
    assert body["checks"]["delivery"]["detail"] == "embedded dispatcher running"


@pytest.mark.postgres
def test_readyz_turns_503_while_postgresql_refuses_connections_and_200_when_it_is_back(pg_databases):
    from tests.termination.conftest import make_env

    url = pg_databases.new()
    name = url.rsplit("/", 1)[1]
    env = make_env(url)
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        _wait_ready(env.idp.url, 200)
        with admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            c.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            )
        body = _wait_ready(env.idp.url, 503)
        assert body["status"] == "unavailable"
        assert not body["checks"]["database"]["ok"]
        assert body["checks"]["database"]["detail"].startswith("unreachable")
        assert _failing(body) == CHECKS  # every check that needs the database says so
        # Liveness is not readiness: the process still answers.
        assert requests.get(f"{env.idp.url}/healthz", timeout=10).status_code == 200
        with admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        body = _wait_ready(env.idp.url, 200)
        assert _failing(body) == set()
    finally:
        with admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
        env.idp.stop()
        env.rps.stop()
        pg_databases.drop(url)


def test_a_schema_behind_this_release_is_not_ready(env_factory):
    env = env_factory()
    with env.idp.provider.engine.begin() as c:
        c.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0005'"))
    status, body = _ready(env.idp.url)
    assert status == 503
    assert _failing(body) == {"schema"}
    assert "need" in body["checks"]["schema"]["detail"]


def test_workers_mode_is_ready_only_while_a_worker_heartbeat_is_recent(env_factory):
    env = env_factory(embedded_dispatcher=False, health_worker_stale_after=2.0)
    provider = env.idp.provider
    status, body = _ready(env.idp.url)
    assert status == 503 and _failing(body) == {"delivery"}
    assert body["checks"]["delivery"]["detail"].startswith("no worker seen")
    beat = Heartbeat(provider.session_factory, "test-worker", 60)
    beat.beat()
    status, body = _ready(env.idp.url)
    assert status == 200, body
    time.sleep(2.2)  # the heartbeat goes stale (no timing is asserted, only staleness)
    status, body = _ready(env.idp.url)
    assert status == 503 and _failing(body) == {"delivery"}


def test_an_outbox_falling_behind_is_not_ready(env_factory):
    env = env_factory(embedded_dispatcher=False, health_outbox_max_lag=60.0)
    provider = env.idp.provider
    sign_in(env, names=("rp-a",))
    Heartbeat(provider.session_factory, "test-worker", 60).beat()
    out = provider.terminate_now(by_subject("alice"), reason="test", initiator="test", wait=0)
    assert _ready(env.idp.url)[0] == 200  # due just now: not behind
    with provider.session_factory.begin() as db:
        db.execute(
            update(Delivery)
            .where(Delivery.termination_id == out.termination_id)
            .values(next_attempt_at=utcnow() - dt.timedelta(minutes=10))
        )
    status, body = _ready(env.idp.url)
    assert status == 503 and _failing(body) == {"outbox"}
    assert "not keeping up" in body["checks"]["outbox"]["detail"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, timeout: float = 15.0) -> None:
    """The worker starts its server in its own thread: wait until the port accepts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def worker_ports() -> tuple[int, int]:
    return _free_port(), _free_port()


def test_a_worker_serves_metrics_and_health_on_its_own_ports_and_heartbeats(env_factory, worker_ports):
    metrics_port, health_port = worker_ports
    env = env_factory(embedded_dispatcher=False)
    provider = env.idp.provider
    settings = provider.settings.replace(
        worker_metrics_port=metrics_port, worker_health_port=health_port, worker_heartbeat_interval=0.5
    )
    engine = make_engine(settings.database_url)
    factory = sessionmaker(engine, expire_on_commit=False)
    worker = Worker(factory, KeyRing(factory), settings, poll_interval=0.1)
    thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False}, daemon=True)
    thread.start()
    try:
        health_url = f"http://127.0.0.1:{health_port}"
        _wait_listening(health_port)
        _wait_ready(health_url, 200)
        assert requests.get(f"{health_url}/healthz", timeout=10).json() == {"status": "alive"}
        assert requests.get(f"{health_url}/metrics", timeout=10).status_code == 404  # not on this port
        # The OP in workers mode sees the worker's heartbeat.
        _wait_ready(env.idp.url, 200)
        # The worker delivers a logout, and its own /metrics shows it.
        sign_in(env, names=("rp-a",))
        metrics_url = f"http://127.0.0.1:{metrics_port}"
        _wait_listening(metrics_port)
        before = scrape(metrics_url)
        provider.terminate_now(by_subject("alice"), reason="test", initiator="test", wait=5)
        env.rps.wait_for(1, 5, path="/rp-a")
        deadline = time.monotonic() + 10
        name = "oidc_logout_deliveries_total"
        while True:
            after = scrape(metrics_url)
            moved = value(after, name, channel="backchannel", outcome="delivered") - value(
                before, name, channel="backchannel", outcome="delivered"
            )
            if moved >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert moved == 1
        assert value(after, "oidc_logout_database_up") == 1
    finally:
        worker.request_stop()
        thread.join(15)
        engine.dispose()
    assert not thread.is_alive()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{health_port}/healthz", timeout=2)


def test_readyz_answers_within_its_bound_while_the_database_accepts_and_never_answers():
    from oidc_logout.config import Settings
    from oidc_logout.health import health_body, readiness_within

    silent = SilentServer()
    engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{silent.port}/test")
    settings = Settings(health_check_timeout=0.5)
    never = lambda _db: (_ for _ in ()).throw(AssertionError("not reached"))  # noqa: E731
    try:
        results = []
        for _ in range(3):
            checks = readiness_within(engine, sessionmaker(engine), settings, never)
            results.append(health_body(checks))
        # The first probe waited out its bound; the later ones answered while the first
        # check is still blocked (one blocked thread, not one per probe).
        assert all(status == 503 for status, _ in results)
        details = [body["checks"]["database"]["detail"] for _, body in results]
        assert details[0] == "no answer within 0.5 s"
        assert all("still waiting" in d for d in details[1:])
        blocked = [t for t in threading.enumerate() if t.name == "oidc-logout-readiness"]
        assert len(blocked) == 1
    finally:
        silent.close()
        engine.dispose()


def test_delivery_is_ready_in_a_worker_that_delivers_its_own_logouts_and_not_once_stopped(tmp_path):
    """A worker of a multi-process server delivers the logouts it answers
    (``Provider.start_logout_delivery``) while the claim loop runs in the elected worker: it is
    ready; with no dispatcher, or a stopped one, it is not."""
    from oidc_logout.config import Settings
    from oidc_logout.health import embedded_dispatcher_check
    from oidc_logout.provider import Provider

    provider = Provider(
        Settings(issuer="http://127.0.0.1:9", database_url=f"sqlite:///{tmp_path / 'op.db'}", dev_mode=True)
    )
    try:
        assert not embedded_dispatcher_check(provider.dispatcher)(None).ok  # type: ignore[arg-type]
        provider.start_logout_delivery()
        own = embedded_dispatcher_check(provider.dispatcher)(None)  # type: ignore[arg-type]
        assert own.ok and "claim loop runs in the elected worker" in own.detail
        dispatcher = provider.dispatcher
        provider.stop_background(1.0)
        assert not embedded_dispatcher_check(dispatcher)(None).ok  # type: ignore[arg-type]
    finally:
        provider.engine.dispose()


def test_a_readiness_probe_is_forgotten_with_its_engine(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The probe of an engine goes with it: probes keyed by ``id(engine)`` outlived their
    engine, and a new engine at a reused address inherited a dead one's probe."""
    import gc
    import weakref

    from oidc_logout import health
    from oidc_logout.config import Settings

    engine = make_engine(f"sqlite:///{tmp_path / 'op.db'}")
    checks = health.readiness_within(
        engine,
        sessionmaker(engine),
        Settings(health_check_timeout=5.0),
        lambda _db: health.Check("x", True, ""),
    )
    assert checks[0].name == "database" and checks[0].ok
    probe = weakref.ref(health._PROBES[engine])
    gone = weakref.ref(engine)
    engine.dispose()
    del engine
    for _ in range(50):  # the probe's thread lets go of the engine when it ends
        gc.collect()
        if gone() is None:
            break
        time.sleep(0.05)
    assert gone() is None
    gc.collect()
    assert probe() is None  # nothing holds it any more: forgotten
