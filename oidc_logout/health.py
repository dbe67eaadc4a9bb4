"""Liveness and readiness of the OP and of its delivery workers, framework-free.

* ``/healthz``: the process answers (nothing else is checked: a liveness probe that fails
  when the database is down would restart healthy processes in a loop).
* ``/readyz``: every check of :func:`readiness` passes: the database answers, its schema is at
  this release's head, a signing key is in service, deliveries are being made (the embedded
  dispatcher thread is alive, or - workers mode - a worker heartbeat is recent) and the outbox
  is not falling behind (the oldest *due* back-channel row has not waited longer than
  ``health_outbox_max_lag``). Any failure: HTTP 503 with the failing check named.

The Flask routes live in :mod:`oidc_logout.flask.admin_views`; the worker serves the same
answers (and ``/metrics``) from :class:`WorkerEndpoints`, a small HTTP server thread started
by :func:`start_worker_observability`. Workers also write :class:`WorkerHeartbeat` rows here.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import Engine, delete, func, or_, select, update
from sqlalchemy.orm import Session

from .config import Settings
from .storage.base import utcnow
from .storage.models import Delivery, SigningKey, WorkerHeartbeat
from .storage.schema import current_revision, head_revision
from .vocabulary import Channel, DeliveryState

__all__ = [
    "Backlog",
    "Check",
    "Heartbeat",
    "WorkerEndpoints",
    "health_body",
    "outbox_backlog",
    "readiness",
    "readiness_within",
    "start_worker_observability",
]

logger = logging.getLogger(__name__)

#: Heartbeat rows older than this are deleted by the next worker that starts.
HEARTBEAT_RETENTION = dt.timedelta(days=1)


@dataclass(frozen=True)
class Check:
    """One readiness check: its name, whether it passed, and a short operator-facing detail
    (never a secret, a URL with credentials or a stack trace)."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Backlog:
    """The back-channel outbox at a glance (shared by ``/readyz`` and the metrics gauges)."""

    #: Rows not yet settled: pending (due or waiting out a backoff) or in flight.
    pending: int
    #: Dead letters (retries exhausted).
    dead: int
    #: Seconds the oldest due pending row has waited past its due time (0: none due).
    oldest_due_lag: float


def outbox_backlog(db: Session, now: dt.datetime | None = None) -> Backlog:
    """Three small queries on the ``(state, next_attempt_at)`` index: counts of unsettled and
    dead back-channel rows and the oldest due time among due pending rows."""
    now = now or utcnow()
    back = Delivery.channel == Channel.BACKCHANNEL
    pending = db.scalar(
        select(func.count())
        .select_from(Delivery)
        .where(back, Delivery.state.in_([DeliveryState.PENDING, DeliveryState.IN_FLIGHT]))
    )
    dead = db.scalar(
        select(func.count()).select_from(Delivery).where(back, Delivery.state == DeliveryState.DEAD)
    )
    oldest = db.scalar(
        select(func.min(Delivery.next_attempt_at)).where(
            back, Delivery.state == DeliveryState.PENDING, Delivery.next_attempt_at <= now
        )
    )
    if oldest is not None and oldest.tzinfo is None:  # pragma: no cover - UTCDateTime is aware
        oldest = oldest.replace(tzinfo=dt.UTC)
    lag = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
    return Backlog(int(pending or 0), int(dead or 0), lag)


@functools.lru_cache(maxsize=1)
def _head() -> str | None:
    return head_revision()


def readiness(
    engine: Engine,
    session_factory: Callable[[], Session],
    settings: Settings,
    delivering: Callable[[Session], Check],
    now: dt.datetime | None = None,
) -> list[Check]:
    """Every readiness check, in order; when the database cannot be reached, the checks that
    need it fail with that reason (without trying again)."""
    now = now or utcnow()
    checks: list[Check] = []
    try:
        revision = current_revision(engine)  # one connection: reachability and schema at once
    except Exception as exc:
        return _database_failed(f"unreachable ({type(exc).__name__})")
    checks.append(Check("database", True, "reachable"))
    head = _head()
    checks.append(
        Check(
            "schema",
            revision == head,
            f"at {revision}" if revision == head else f"at {revision}, need {head}",
        )
    )
    try:
        with session_factory() as db:
            checks.append(_signing_key(db, now))
            checks.append(delivering(db))
            checks.append(_outbox(db, settings, now))
    except Exception as exc:
        checks.append(Check("queries", False, f"failed ({type(exc).__name__})"))
    return checks


class _Probe:
    """The readiness check of one process that is still running (at most one at a time)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: threading.Thread | None = None


#: One probe per engine, forgotten with its engine (keyed by id() they outlived it: a new
#: engine at a reused address inherited a dead engine's probe, still waiting on its database).
_PROBES: weakref.WeakKeyDictionary[Engine, _Probe] = weakref.WeakKeyDictionary()
_PROBES_LOCK = threading.Lock()


def readiness_within(
    engine: Engine,
    session_factory: Callable[[], Session],
    settings: Settings,
    delivering: Callable[[Session], Check],
    timeout: float | None = None,
) -> list[Check]:
    """:func:`readiness`, answered within ``timeout`` seconds (``settings.health_check_timeout``).

    A database that accepts connections and then says nothing (a stalled primary, a network
    that drops packets) would otherwise hold the probe until the load balancer's own timeout,
    and every probe after it would pile up one more blocked thread. Here the checks run in a
    daemon thread; past the bound the answer is a failed ``database`` check, and while that
    thread is still blocked, later probes answer the same at once instead of starting another.
    """
    bound = settings.health_check_timeout if timeout is None else timeout
    if bound <= 0:
        return readiness(engine, session_factory, settings, delivering)
    with _PROBES_LOCK:
        probe = _PROBES.setdefault(engine, _Probe())
    result: list[list[Check]] = []
    with probe.lock:
        if probe.running is not None and probe.running.is_alive():
            return _database_failed(f"no answer within {bound:g} s (an earlier check is still waiting)")
        thread = threading.Thread(
            target=lambda: result.append(readiness(engine, session_factory, settings, delivering)),
            name="oidc-logout-readiness",
            daemon=True,
        )
        probe.running = thread
        thread.start()
    thread.join(bound)
    if result:
        return result[0]
    return _database_failed(f"no answer within {bound:g} s")


def _database_failed(reason: str) -> list[Check]:
    """The database check failed for ``reason``; every check that needs it fails with it."""
    return [Check("database", False, reason)] + [
        Check(name, False, "database " + reason) for name in ("schema", "signing_key", "delivery", "outbox")
    ]


def _signing_key(db: Session, now: dt.datetime) -> Check:
    kid = db.scalar(
        select(SigningKey.kid)
        .where(
            or_(SigningKey.retired_at.is_(None), SigningKey.retired_at > now),
            or_(SigningKey.activates_at.is_(None), SigningKey.activates_at <= now),
        )
        .limit(1)
    )
    return Check("signing_key", kid is not None, "in service" if kid else "no signing key in service")


def _outbox(db: Session, settings: Settings, now: dt.datetime) -> Check:
    backlog = outbox_backlog(db, now)
    bound = settings.health_outbox_max_lag
    ok = bound <= 0 or backlog.oldest_due_lag <= bound
    detail = (
        f"{backlog.pending} pending, {backlog.dead} dead, oldest due waited {backlog.oldest_due_lag:.1f} s"
    )
    if not ok:
        detail += f" (more than {bound:g} s: deliveries are not keeping up)"
    return Check("outbox", ok, detail)


def embedded_dispatcher_check(dispatcher: Any) -> Callable[[Session], Check]:
    """``delivery`` check of an OP delivering in-process: its dispatcher's claim loop is alive,
    or (a worker of a multi-process server, :meth:`.Provider.start_logout_delivery`) it
    delivers its own logouts and the claim loop runs in the elected worker."""

    def check(_db: Session) -> Check:
        if dispatcher is None or getattr(dispatcher, "_closed", False):
            return Check("delivery", False, "embedded dispatcher not running")
        thread = getattr(dispatcher, "_thread", None)
        if thread is None:
            return Check(
                "delivery",
                True,
                # Not verified from this process: the election hands the claim loop to a
                # surviving worker within a second of its holder's death.
                "delivers its own logouts; the claim loop runs in the elected worker (not checked here)",
            )
        alive = thread.is_alive()
        return Check(
            "delivery", alive, "embedded dispatcher running" if alive else "embedded dispatcher not running"
        )

    return check


def worker_heartbeat_check(settings: Settings, now: dt.datetime | None = None) -> Callable[[Session], Check]:
    """``delivery`` check of an OP whose workers deliver: some worker heartbeat is recent."""

    def check(db: Session) -> Check:
        at = now or utcnow()
        cut = at - dt.timedelta(seconds=settings.health_worker_stale_after)
        live = db.scalar(
            select(func.count()).select_from(WorkerHeartbeat).where(WorkerHeartbeat.seen_at >= cut)
        )
        n = int(live or 0)
        if n:
            return Check(
                "delivery", True, f"{n} worker(s) seen in the last {settings.health_worker_stale_after:g} s"
            )
        return Check(
            "delivery", False, f"no worker seen in the last {settings.health_worker_stale_after:g} s"
        )

    return check


def health_body(checks: Sequence[Check]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of ``/readyz``: 200 when every check passed, else 503."""
    ok = all(c.ok for c in checks)
    body = {
        "status": "ready" if ok else "unavailable",
        "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
    }
    return (200 if ok else 503), body


# -- workers -----------------------------------------------------------------------------------
class Heartbeat:
    """A daemon thread upserting this worker's :class:`WorkerHeartbeat` row every
    ``interval`` seconds. A failed write is logged once when it starts failing and once when
    it recovers (a database outage must not produce a line per beat)."""

    def __init__(self, session_factory: Callable[[], Session], owner: str, interval: float) -> None:
        self._session_factory = session_factory
        self.owner = owner[:64]
        self.interval = max(0.2, interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="oidc-logout-heartbeat", daemon=True)
        self._failing = False
        #: Monotonic time of the last successful beat (None: none yet).
        self.last_beat: float | None = None
        self._started = utcnow()

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def beat(self) -> None:
        now = utcnow()
        with self._session_factory() as db, db.begin():
            res = db.execute(
                update(WorkerHeartbeat).where(WorkerHeartbeat.owner == self.owner).values(seen_at=now)
            )
            if not res.rowcount:  # type: ignore[attr-defined]
                db.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.seen_at < now - HEARTBEAT_RETENTION))
                db.add(WorkerHeartbeat(owner=self.owner, started_at=self._started, seen_at=now))
        self.last_beat = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
                if self._failing:
                    logger.info("worker %s: heartbeat written again", self.owner)
                self._failing = False
            except Exception as exc:
                if not self._failing:
                    logger.warning("worker %s: heartbeat failed (%s)", self.owner, type(exc).__name__)
                self._failing = True
            self._stop.wait(self.interval)

    def alive(self) -> bool:
        """Beating: the thread runs and the last beat is at most three intervals old."""
        return (
            self._thread.is_alive()
            and self.last_beat is not None
            and time.monotonic() - self.last_beat <= 3 * self.interval
        )

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


class WorkerEndpoints:
    """The worker's HTTP server: ``/metrics`` on the metrics port, ``/healthz`` and
    ``/readyz`` on the health port (one server when both ports are the same)."""

    def __init__(
        self,
        engine: Engine,
        session_factory: Callable[[], Session],
        settings: Settings,
        heartbeat: Heartbeat,
        *,
        host: str,
        metrics_port: int = 0,
        health_port: int = 0,
    ) -> None:
        self.engine = engine
        self.session_factory = session_factory
        self.settings = settings
        self.heartbeat = heartbeat
        self.servers: list[ThreadingHTTPServer] = []
        ports: dict[int, set[str]] = {}
        if metrics_port:
            ports.setdefault(metrics_port, set()).add("metrics")
        if health_port:
            ports.setdefault(health_port, set()).add("health")
        for port, serves in ports.items():
            server = ThreadingHTTPServer((host, port), self._handler(frozenset(serves)))
            server.daemon_threads = True
            self.servers.append(server)
            threading.Thread(
                target=server.serve_forever, name=f"oidc-logout-http-{port}", daemon=True
            ).start()

    @property
    def ports(self) -> list[int]:
        return [int(s.server_address[1]) for s in self.servers]

    def _delivering(self, _db: Session) -> Check:
        alive = self.heartbeat.alive()
        return Check(
            "delivery", alive, "worker heartbeat current" if alive else "worker heartbeat not current"
        )

    def answer(self, path: str, serves: frozenset[str]) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of ``path``."""
        if path == "/metrics" and "metrics" in serves:
            from .metrics import exposition

            body, ctype = exposition(self.session_factory)
            return 200, ctype, body
        if path == "/healthz" and "health" in serves:
            return 200, "application/json", b'{"status": "alive"}'
        if path == "/readyz" and "health" in serves:
            status, doc = health_body(
                readiness_within(self.engine, self.session_factory, self.settings, self._delivering)
            )
            return status, "application/json", json.dumps(doc).encode()
        return 404, "application/json", b'{"error": "not_found"}'

    def _handler(self, serves: frozenset[str]) -> type[BaseHTTPRequestHandler]:
        endpoints = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                try:
                    status, ctype, body = endpoints.answer(self.path.split("?", 1)[0], serves)
                except Exception as exc:  # never a traceback to the scraper
                    logger.warning("worker %s failed: %s", self.path, type(exc).__name__)
                    status, ctype, body = 500, "application/json", b'{"error": "server_error"}'
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes and probes every few seconds: not worth a log line each

        return Handler

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


class WorkerObservability:
    """What :func:`start_worker_observability` started; :meth:`close` stops it all."""

    def __init__(self, heartbeat: Heartbeat, endpoints: WorkerEndpoints | None) -> None:
        self.heartbeat = heartbeat
        self.endpoints = endpoints

    def close(self) -> None:
        if self.endpoints is not None:
            self.endpoints.close()
        self.heartbeat.stop()


def start_worker_observability(
    session_factory: Callable[[], Session], settings: Settings, owner: str
) -> WorkerObservability:
    """Start the worker's heartbeat and, if ``worker_metrics_port`` / ``worker_health_port``
    are set, its HTTP server (the worker calls this once at start and ``close()`` at exit)."""
    heartbeat = Heartbeat(session_factory, owner, settings.worker_heartbeat_interval).start()
    endpoints = None
    if settings.worker_metrics_port or settings.worker_health_port:
        bind = getattr(session_factory, "kw", {}).get("bind")
        if not isinstance(bind, Engine):
            with session_factory() as db:
                bind = db.get_bind()
        assert isinstance(bind, Engine), "the worker's session factory is bound to an Engine"
        endpoints = WorkerEndpoints(
            bind,
            session_factory,
            settings,
            heartbeat,
            host=settings.worker_http_host,
            metrics_port=settings.worker_metrics_port,
            health_port=settings.worker_health_port,
        )
        logger.info("worker %s: serving %s on %s", owner, _serving(settings), settings.worker_http_host)
    return WorkerObservability(heartbeat, endpoints)


def _serving(settings: Settings) -> str:
    parts = []
    if settings.worker_metrics_port:
        parts.append(f"/metrics on port {settings.worker_metrics_port}")
    if settings.worker_health_port:
        parts.append(f"/healthz and /readyz on port {settings.worker_health_port}")
    return ", ".join(parts)
