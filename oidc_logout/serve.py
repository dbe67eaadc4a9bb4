"""``oidc-logout serve``: the OP under gunicorn, a production WSGI server.

The master process checks the settings and the database once (and, for the bundled OP,
migrates when ``auto_migrate`` is on, creates the first signing keys and loads ``--clients``)
before it forks; each worker then builds the app; :mod:`oidc_logout.gunicorn_hooks` elects
the one worker that runs the embedded dispatcher and the expiry sweep.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import Settings

WSGIApp = Callable[..., Any]

#: The deployment ``serve`` recommends by default (docs/operations.md): 2 worker processes of
#: gunicorn's ``gthread`` class with 4 threads each. Threads, not sync workers: a sync worker
#: closes the connection after every response (a new TCP connection, ``accept`` and graceful
#: close per request) and blocks its whole process while a logout waits for its deliveries
#: (``logout_wait_bound``); ``gthread`` keeps connections alive between requests (gunicorn's
#: ``keepalive``, 2 s by default) and serves other requests meanwhile. Measured for RFC 7009
#: revocation in docs/performance.md ("Against node-oidc-provider").
DEFAULT_WORKERS = 2
DEFAULT_THREADS = 4


def bundled_app(settings: Settings, *, password: str, secret_key: str) -> WSGIApp:
    """The bundled OP (the demo's IdP app and user directory) without background threads:
    the gunicorn hooks start those in one worker. All workers share ``secret_key`` (CSRF
    tokens signed by one worker verify in the others)."""
    from .demo.idp import create_idp_app

    return create_idp_app(settings, password=password, secret_key=secret_key, start_background=False)


def prepare_database(settings: Settings, clients_file: str | None) -> None:
    """Once, in the master: the schema (migrated if ``auto_migrate``, else checked), the
    first signing keys (turnkey start-up, as ``Provider.setup`` does) and the clients file."""
    from .clients import load_clients, read_clients_file
    from .provider import Provider

    provider = Provider(settings)
    try:
        provider.setup()
        if clients_file:
            load_clients(provider, read_clients_file(clients_file))
    finally:
        provider.engine.dispose()


def serve(
    settings: Settings,
    *,
    bind: str,
    workers: int,
    threads: int,
    app: str | None = None,
    password: str = "wonderland",
    clients_file: str | None = None,
    timeout: int = 30,
    secret_key_file: str | None = None,
) -> int:
    """Run gunicorn in this process (it becomes the master) until SIGTERM/SIGINT."""
    from gunicorn.app.base import BaseApplication
    from gunicorn.util import import_app

    from . import gunicorn_hooks

    if app is None:
        prepare_database(settings, clients_file)
        key = Path(secret_key_file).read_text().strip() if secret_key_file else secrets.token_urlsafe(32)

        def load() -> WSGIApp:
            return bundled_app(settings, password=password, secret_key=key)
    else:
        uri = app

        def load() -> WSGIApp:
            loaded: WSGIApp = import_app(uri)
            return loaded

    options: dict[str, Any] = {
        "bind": [bind],
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread" if threads > 1 else "sync",
        "timeout": timeout,
        "post_worker_init": gunicorn_hooks.post_worker_init,
        "worker_exit": gunicorn_hooks.worker_exit,
        "child_exit": gunicorn_hooks.child_exit,
        # No access log: query strings of /end_session and /authorize may carry tokens.
        "accesslog": None,
        "proc_name": "oidc-logout",
    }

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for name, value in options.items():
                self.cfg.set(name, value)
            if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 25.1
                # One control socket per user by default: two OPs on one host would share it.
                self.cfg.set("control_socket_disable", True)

        def load(self) -> WSGIApp:
            return load()

    from .logs import configure_logging

    configure_logging(settings.log_format)  # OIDC_LOGOUT_LOG_FORMAT=json: one object a line
    Application().run()
    return 0


__all__ = ["bundled_app", "prepare_database", "serve"]
