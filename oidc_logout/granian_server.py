"""Run the OP (or a host's WSGI app with ``OIDCLogout``) under granian, with the embedded
dispatcher and the expiry sweep in exactly one worker at a time.

granian serves HTTP from Rust (hyper) and calls the WSGI app on a pool of Python threads per
worker process: what gunicorn does in Python per request (parsing, the ``environ``, keep-alive
bookkeeping, the ``gthread`` selector loop) costs a fraction of the CPU there. Measured for
RFC 7009 revocation in docs/performance.md ("Production server"): that per-request cost was
most of the OP's CPU under gunicorn.

Worker lifecycle, the same as :mod:`oidc_logout.gunicorn_hooks` gives gunicorn workers:

* after a worker has built the app, it joins the election for the background work
  (:func:`oidc_logout.gunicorn_hooks.elect_background`: an ``flock`` on a file named after the
  database; the holder starts the dispatcher and the sweep, the others take over if it dies);
* when a worker stops, it leaves the election, stops its background work (in-flight attempts
  finish, bounded) and closes the revocation fast path's own connections
  (:func:`oidc_logout.rfc7009.fastpath.close_connections`); with ``PROMETHEUS_MULTIPROC_DIR``
  set, its live gauges are dropped from the aggregated ``/metrics``.

granian has no per-worker hooks, so the worker's entry point is wrapped (:func:`_worker`):
granian calls the app loader inside it, and the ``finally`` runs when the worker's serve loop
returns after the master's SIGTERM/SIGINT.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .gunicorn_hooks import elect_background, provider_of
from .rfc7009.fastpath import close_connections
from .stop_signals import guard_forks, requested

log = logging.getLogger(__name__)

WSGIApp = Callable[..., Any]

#: This worker process's app and whether it is still serving (read by its election thread).
_worker_app: list[WSGIApp] = []
_serving = threading.Event()


@dataclass(frozen=True)
class Bind:
    """Where granian listens: a TCP ``address``/``port`` or a Unix socket ``uds``."""

    address: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None


def parse_bind(bind: str) -> Bind:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``unix:PATH`` (gunicorn's ``--bind`` forms)."""
    if bind.startswith("unix:"):
        return Bind(uds=bind[len("unix:") :])
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--bind {bind!r}: expected HOST:PORT, [IPv6]:PORT or unix:PATH")
    host = host.strip("[]") or "127.0.0.1"
    if host != "localhost":
        try:
            ipaddress.ip_address(host)  # granian binds an IP literal; a typo fails here, not later
        except ValueError:
            raise ValueError(f"--bind {bind!r}: the host must be an IP address or localhost") from None
    return Bind(address="127.0.0.1" if host == "localhost" else host, port=int(port))


def _load_in_worker(load: Callable[[], WSGIApp]) -> WSGIApp:
    """granian's app loader, run in each worker: build the app, then join the election (unless
    the worker was told to stop meanwhile)."""
    app = load()
    _worker_app.append(app)
    if requested.is_set():
        return app  # granian's handlers, once installed, stop the worker at once (below)
    _serving.set()
    provider = provider_of(app)
    if provider is None:
        log.warning("oidc-logout: the app has no OIDCLogout extension; nothing to elect")
    else:
        provider.start_logout_delivery()  # every worker delivers the logouts it answers itself
        elect_background(provider, alive=_serving.is_set)
    return app


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # what granian's workers handle


def _install_worker_signals() -> None:
    """Chain this module into the worker's stop handling once granian installs its handlers:

    * a stop signal that came while the app was loading stops the worker at once;
    * a stop signal (SIGTERM/SIGINT, sent by the master to every worker at once) ends the
      worker's candidacy before granian's handler runs: a graceful stop of every worker must
      not hand the dispatcher from one exiting worker to the next (the holder's lock is
      released when its process exits, while the others are still draining)."""
    from granian import _signals

    installs = _signals.set_sync_signals

    def set_sync_signals() -> Any:
        event = installs()  # type: ignore[no-untyped-call]
        for sig in _STOP_SIGNALS:
            granian_handler = signal.getsignal(sig)
            if callable(granian_handler):

                def chained(signum: int, frame: Any, handler: Callable[..., Any] = granian_handler) -> None:
                    _serving.clear()
                    handler(signum, frame)

                signal.signal(sig, chained)
        if requested.is_set():
            _serving.clear()
            event.set()
        return event

    _signals.set_sync_signals = set_sync_signals


def _worker(*args: Any, **kwargs: Any) -> None:
    """A granian WSGI worker, then this worker's share of a clean stop."""
    from granian.server.mp import MPServer

    _install_worker_signals()
    try:
        if not requested.is_set():
            MPServer._spawn_wsgi_worker(*args, **kwargs)
    finally:
        _serving.clear()  # a stopping worker must not take the dispatcher over
        for app in _worker_app:
            provider = provider_of(app)
            if provider is not None:
                provider.stop_background()
                close_connections(provider.engine)
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def run(load: Callable[[], WSGIApp], *, bind: str, workers: int, threads: int, stop_timeout: int) -> int:
    """Serve ``load()``'s app with granian in this process (it becomes the master) until
    SIGTERM/SIGINT; ``stop_timeout`` bounds a worker's graceful stop before it is killed."""
    from granian.constants import HTTPModes, Interfaces
    from granian.server.mp import MPServer

    where = parse_bind(bind)
    # granian forks its workers where the start method is "fork" and spawns them otherwise
    # (Python 3.14 defaults to forkserver on Linux); the loader is a closure over the settings
    # the master checked, so the workers are forked, as gunicorn's are.
    multiprocessing.set_start_method("fork", force=True)
    # granian installs a worker's stop handlers only after the app has loaded: a stop signal
    # that comes while it loads is noted (stop_signals) and acted on then, not lost.
    guard_forks(_STOP_SIGNALS)
    server = MPServer(
        "oidc-logout",
        address=where.address,
        port=where.port,
        uds=None if where.uds is None else Path(where.uds),
        interface=Interfaces.WSGI,
        workers=workers,
        blocking_threads=threads,
        http=HTTPModes.http1,
        backlog=2048,
        # No access log: query strings of /end_session and /authorize may carry tokens.
        log_access=False,
        respawn_failed_workers=True,
        workers_kill_timeout=stop_timeout,
        # Named in ps/top only where setproctitle is installed (granian[pname]), as gunicorn does.
        process_name="oidc-logout" if importlib.util.find_spec("setproctitle") else None,
    )
    server.serve(spawn_target=_worker, target_loader=lambda: _load_in_worker(load), wrap_loader=False)
    return 0


__all__ = ["Bind", "parse_bind", "run"]
