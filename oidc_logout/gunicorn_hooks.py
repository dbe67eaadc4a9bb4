"""gunicorn hooks that run the OP's background work (the embedded delivery dispatcher and the
session expiry sweep) in exactly one gunicorn worker at a time.

Each gunicorn worker is a separate process that builds its own app: left alone, every worker
would start its own dispatcher and sweep. These hooks elect one instead: after a worker has
loaded the app, a thread tries to take an exclusive lock on a file named after the database
(``flock``, released by the kernel when the process dies); the worker holding it starts the
background work, the others keep trying every second, so when that worker exits or crashes
another takes over. Every worker delivers the logouts it answers itself, at once
(``Provider.start_logout_delivery``); what it leaves (retries) is the elected claim loop's.

``oidc-logout serve`` installs them; a host app served by gunicorn itself uses them with
``gunicorn -c python:oidc_logout.gunicorn_hooks myidp:app`` and builds its extension with
``OIDCLogout(app, users=..., start_background=False)``. (The dispatcher is never started in
the gunicorn master: threads do not survive ``fork``.)
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import signal
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from .provider import Provider
from .rfc7009.fastpath import close_connections
from .stop_signals import guard_forks, requested

log = logging.getLogger(__name__)
_held: list[int] = []  # file descriptors of the locks this process holds (kept open)


def lock_path(database_url: str) -> str:
    """The election lock file of ``database_url`` (one dispatcher per machine and database)."""
    digest = hashlib.sha256(database_url.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"oidc-logout-dispatcher-{digest}.lock")


def provider_of(app: Any) -> Provider | None:
    """The :class:`Provider` of a Flask app with ``OIDCLogout`` (through WSGI middleware that
    keeps the wrapped app in ``.app``, such as werkzeug's ``ProxyFix``)."""
    for _ in range(5):
        state = getattr(app, "extensions", {}).get("oidc_logout")
        if state is not None:
            provider: Provider = state.provider
            return provider
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def elect_background(
    provider: Provider,
    path: str | None = None,
    retry: float = 1.0,
    announce: Callable[[str], None] | None = None,
    alive: Callable[[], bool] | None = None,
) -> threading.Thread:
    """Start a thread that runs ``provider.start_background()`` once this process holds the
    election lock (at once if free, else when its holder exits); ``announce`` gets one line
    when it does (default: this module's logger). ``alive`` (the gunicorn worker's own flag)
    stops the candidacy once the worker is shutting down: a graceful stop of every worker must
    not hand the dispatcher from one exiting worker to the next."""
    where = path or lock_path(provider.settings.database_url)

    def run() -> None:
        fd = os.open(where, os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            if alive is not None and not alive():
                os.close(fd)
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                threading.Event().wait(retry)
                continue
            _held.append(fd)
            (announce or log.info)(
                f"oidc-logout: process {os.getpid()} runs the delivery dispatcher and the expiry sweep"
            )
            provider.start_background()
            return

    thread = threading.Thread(target=run, name="oidc-logout-election", daemon=True)
    thread.start()
    return thread


#: The signals a gunicorn worker handles as "stop" (``Worker.init_signals``).
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def on_starting(server: Any) -> None:
    """gunicorn hook (master, before the first fork): a stop signal that reaches a worker between
    its fork and ``init_signals`` is noted instead of lost (:mod:`oidc_logout.stop_signals`);
    without this such a worker loads the app, runs the dispatcher and serves until the master
    kills it after its graceful timeout."""
    guard_forks(_STOP_SIGNALS)


def post_worker_init(worker: Any) -> None:
    """gunicorn hook: the worker has loaded the app; join the election, unless it was told to
    stop before gunicorn's own handlers were in place (then it stops now)."""
    if requested.is_set():
        worker.alive = False
        return
    provider = provider_of(worker.wsgi)
    if provider is None:
        worker.log.warning("oidc-logout: the app has no OIDCLogout extension; nothing to elect")
        return
    provider.start_logout_delivery()  # every worker delivers the logouts it answers itself
    elect_background(provider, announce=worker.log.info, alive=lambda: bool(getattr(worker, "alive", True)))


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook (master): a worker died; with ``PROMETHEUS_MULTIPROC_DIR`` set, its live
    gauges are dropped from the aggregated ``/metrics`` (prometheus-client multiprocess mode)."""
    from .metrics import gunicorn_child_exit

    gunicorn_child_exit(server, worker)


def worker_exit(server: Any, worker: Any) -> None:
    """gunicorn hook: stop the background work (in-flight attempts finish, bounded) and close
    the revocation fast path's own database connections (``rfc7009.fastpath``)."""
    provider = provider_of(getattr(worker, "wsgi", None))
    if provider is not None:
        provider.stop_background()
        close_connections(provider.engine)


__all__ = [
    "child_exit",
    "elect_background",
    "lock_path",
    "on_starting",
    "post_worker_init",
    "provider_of",
    "worker_exit",
]
