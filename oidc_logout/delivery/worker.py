"""The standalone delivery worker (``oidc-logout worker``): run N of these processes against
PostgreSQL when the OP runs with ``embedded_dispatcher`` off.

Each worker claims batches with ``FOR UPDATE SKIP LOCKED`` under a lease (so workers never
share a row and a crashed worker's rows come back), delivers them in parallel and records the
results. While attempts run, it renews the leases of the rows it holds (a heartbeat every
quarter of ``delivery_lease_seconds``), so the lease can be short and a killed worker's rows
are taken over within seconds. SIGTERM/SIGINT: stop claiming, let running attempts finish
(bounded by the delivery timeouts), give back claims that never started, exit 0.

A database that cannot be reached is retried with a capped exponential backoff, one warning
line per step; after ``worker_db_unreachable_exit_after`` seconds (default 300) the worker
exits with :data:`EXIT_DB_UNREACHABLE` (69, ``EX_UNAVAILABLE`` of sysexits.h) so that its
supervisor restarts it and someone is told. If the database returns before that, the worker
carries on.

Configuration comes from ``OIDC_LOGOUT_*`` environment variables (:func:`settings_from_env`),
e.g. ``OIDC_LOGOUT_DATABASE_URL``, ``OIDC_LOGOUT_ISSUER``, ``OIDC_LOGOUT_DELIVERY_CONCURRENCY``.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import signal
import threading
from types import FrameType

from sqlalchemy.orm import sessionmaker

from ..config import Settings, SettingsError, settings_from_env
from ..health import start_worker_observability
from ..host_models import install_host_models
from ..keys import KeyRing
from ..logs import configure_logging
from ..storage.schema import make_engine
from .dispatcher import Dispatcher, default_owner
from .notify import Listener
from .outbox import SessionFactory

__all__ = ["EXIT_DB_UNREACHABLE", "Worker", "main", "run_worker"]

#: Exit code of a worker that gave up on an unreachable database (sysexits.h EX_UNAVAILABLE).
EXIT_DB_UNREACHABLE = 69

logger = logging.getLogger(__name__)


class Worker:
    """A foreground claim-deliver-record loop with graceful shutdown on SIGTERM/SIGINT."""

    def __init__(
        self,
        session_factory: SessionFactory,
        keyring: KeyRing,
        settings: Settings,
        owner: str | None = None,
        *,
        poll_interval: float = 0.5,
    ) -> None:
        self.settings = settings
        self._session_factory = session_factory
        self.owner = (owner or default_owner())[:64]
        exit_after = settings.worker_db_unreachable_exit_after
        self.dispatcher = Dispatcher(
            session_factory,
            keyring,
            settings,
            self.owner,
            poll_interval=poll_interval,
            db_unreachable_exit_after=exit_after if exit_after > 0 else None,
        )

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """Stop claiming (safe to call from a signal handler)."""
        if signum is not None:
            logger.info("worker %s: signal %s, finishing in-flight deliveries", self.owner, signum)
        self.dispatcher.request_stop()

    def run(self, *, install_signal_handlers: bool = True) -> int:
        """Run until stopped; returns the process exit code (0 on a graceful stop,
        :data:`EXIT_DB_UNREACHABLE` when the database stayed unreachable too long)."""
        previous = {}
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self.request_stop)
        bind = getattr(self._session_factory, "kw", {}).get("bind")
        listener = Listener(bind, self.dispatcher.kick).start() if bind is not None else None
        observed = start_worker_observability(self._session_factory, self.settings, self.owner)
        try:
            self.dispatcher.run_forever()
        finally:
            if listener is not None:
                listener.stop()
            observed.close()
            # In-flight attempts are bounded by connect + read timeouts; allow a margin.
            grace = (self.settings.delivery_connect_timeout + self.settings.delivery_timeout) * 2
            finished = self.dispatcher.stop(timeout=grace + 1.0)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if not finished:
            logger.warning("worker %s: some attempts did not finish; their leases will expire", self.owner)
        logger.info("worker %s exiting: %s", self.owner, dict(self.dispatcher.stats))
        if self.dispatcher.gave_up:
            return EXIT_DB_UNREACHABLE
        return 0


def run_worker(settings: Settings | None = None) -> int:
    """Entry point for ``oidc-logout worker``: build the engine, key ring and worker from
    ``settings`` (default: the environment) and run until SIGTERM/SIGINT."""
    # ``oidc-logout worker`` reaches here without configuring logging: an operator must see
    # the start, the per-attempt outcomes and the shutdown summary on stderr.
    configure_logging((settings or settings_from_env()).log_format)
    listener = _log_off_thread()
    try:
        return _run(settings)
    finally:
        if listener is not None:
            listener.stop()  # flushes every queued record
            logging.getLogger().handlers[:] = list(listener.handlers)


def _log_off_thread() -> logging.handlers.QueueListener | None:
    """Move the root logger's stream handlers behind a queue: the worker logs one line per
    attempt from up to ``delivery_concurrency`` threads, and with the handlers called in those
    threads each line took the handler lock around a write to stderr (a pipe that may be slow
    to drain), so attempt threads queued on that lock. Records now go through a queue to one
    listener thread that writes them, in order. Only plain stream handlers are moved."""
    root = logging.getLogger()
    if not root.handlers or not all(type(h) is logging.StreamHandler for h in root.handlers):
        return None
    handlers = list(root.handlers)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=True)
    root.handlers[:] = [logging.handlers.QueueHandler(records)]
    listener.start()
    return listener


def _run(settings: Settings | None) -> int:
    settings = settings or settings_from_env()
    engine = make_engine(settings.database_url)
    try:
        # Extension mode: chunks of large terminations run here revoke the host's tokens and
        # read its clients (OIDC_LOGOUT_HOST_*_MODEL); a bad setting stops the start.
        install_host_models(engine, settings, check_tables=True)
        if engine.dialect.name == "sqlite":
            logger.warning(
                "the standalone worker is meant for PostgreSQL; on SQLite prefer the embedded dispatcher"
            )
        factory = sessionmaker(engine, expire_on_commit=False)
        return Worker(factory, KeyRing(factory), settings).run()
    finally:
        engine.dispose()


def main() -> int:  # ``python -m oidc_logout.delivery.worker``
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run_worker()
    except SettingsError as exc:  # one line, as ``oidc-logout worker`` says it
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
