"""``oidc-logout serve``: the OP under a production WSGI server, granian (default) or gunicorn.

The master process checks the settings and the database once (and, for the bundled OP,
migrates when ``auto_migrate`` is on, creates the first signing keys and loads ``--clients``)
before it forks; each worker then builds the app and joins the election of the one worker that
runs the embedded dispatcher and the expiry sweep (:mod:`oidc_logout.granian_server`,
:mod:`oidc_logout.gunicorn_hooks`).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import Settings

WSGIApp = Callable[..., Any]

#: The deployment ``serve`` recommends by default (docs/operations.md): 2 worker processes with
#: 4 threads each for the app. Threads: a logout waits for its deliveries
#: (``logout_wait_bound``) while the worker serves other requests; connections stay alive
#: between requests.
DEFAULT_WORKERS = 2
DEFAULT_THREADS = 4
#: The production servers ``serve`` runs. granian (HTTP in Rust, the app on a thread pool per
#: worker) costs about half the OP CPU per revocation request that gunicorn ``gthread`` costs
#: (docs/performance.md, "Production server"); gunicorn stays for deployments built around it.
SERVERS = ("granian", "gunicorn")
DEFAULT_SERVER = "granian"


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
    server: str = DEFAULT_SERVER,
) -> int:
    """Run ``server`` (granian or gunicorn) in this process (it becomes the master) until
    SIGTERM/SIGINT. ``timeout``: gunicorn's worker timeout; for granian, the bound on a
    worker's graceful stop."""
    if server not in SERVERS:
        raise ValueError(f"unknown server {server!r}: one of {', '.join(SERVERS)}")
    if app is None:
        prepare_database(settings, clients_file)
        key = Path(secret_key_file).read_text().strip() if secret_key_file else secrets.token_urlsafe(32)

        def load() -> WSGIApp:
            return bundled_app(settings, password=password, secret_key=key)
    else:
        uri = app
        _cwd_on_path()

        def load() -> WSGIApp:
            return import_app(uri)

    from .logs import configure_logging

    configure_logging(settings.log_format)  # OIDC_LOGOUT_LOG_FORMAT=json: one object a line
    if server == "granian":
        from .granian_server import run

        return run(load, bind=bind, workers=workers, threads=threads, stop_timeout=timeout)
    return _run_gunicorn(load, bind=bind, workers=workers, threads=threads, timeout=timeout)


def _cwd_on_path() -> None:
    """As gunicorn does: ``--app`` names a module of the directory serve runs in (the console
    script's own directory is what Python put on the path)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _parse_app_uri(uri: str) -> tuple[str, str, bool]:
    """(module, attribute, whether to call it) of ``MODULE:NAME`` / ``MODULE:FACTORY()``."""
    module_name, sep, name = uri.partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"--app {uri!r}: expected MODULE:NAME or MODULE:FACTORY()")
    call = name.endswith("()")
    attr = name[:-2] if call else name
    if not attr.isidentifier():
        raise ValueError(f"--app {uri!r}: {attr!r} is not a name (only a call without arguments)")
    return module_name, attr, call


def check_app_uri(uri: str) -> None:
    """Refuse, before any worker starts, an ``--app`` that is malformed, names a module that
    cannot be found (from the directory serve runs in, as the workers will look), or names an
    attribute the module's source does not define. The module is not imported here: the
    workers import it, and a host app's import may open connections or start threads that must
    not be forked; its source is read instead (:func:`_source_binds`), and where that cannot
    tell, the workers find out."""
    module_name, attr, _call = _parse_app_uri(uri)
    _cwd_on_path()
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):  # a parent package is missing, or a bad name
        found = None
    if found is None:
        raise ValueError(f"--app {uri!r}: no module named {module_name!r} in {os.getcwd()} or on the path")
    if found.submodule_search_locations is not None:
        try:  # a package's submodule becomes its attribute once anything imports it
            if importlib.util.find_spec(f"{module_name}.{attr}") is not None:
                return
        except (ImportError, ValueError):
            pass
    if found.origin and _source_binds(found.origin, attr) is False:
        raise ValueError(f"--app {uri!r}: module {module_name!r} ({found.origin}) defines no {attr!r}")


#: Calls through which a module can bind names its source does not spell out.
_DYNAMIC_BINDERS = frozenset({"globals", "vars", "exec", "eval", "setattr", "__import__"})


def _source_binds(path: str, name: str) -> bool | None:
    """Whether the Python source at ``path`` binds ``name`` at module level: True, False, or
    None when the source cannot say (not Python source, unreadable, or a module that may bind
    names dynamically: ``from ... import *``, a module ``__getattr__`` (PEP 562), a
    ``globals()``/``exec``/``setattr`` call, ``sys.modules`` tricks). Errs towards True: a
    binding anywhere outside function and class bodies counts, in any branch."""
    if not path.endswith(".py"):
        return None
    try:
        tree = ast.parse(Path(path).read_bytes(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None  # the workers' import reports it, with the interpreter's own message
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            return None
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _DYNAMIC_BINDERS
        ):
            return None
        if isinstance(node, ast.Attribute) and node.attr == "modules":
            return None
        if isinstance(node, ast.Global):  # a function may bind a module name
            bound.update(node.names)
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)  # its body has names of its own
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".", 1)[0] for a in node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            bound.add(node.rest)
        pending.extend(ast.iter_child_nodes(node))
    if "__getattr__" in bound:
        return None
    return name in bound


def import_app(uri: str) -> WSGIApp:
    """The WSGI app named by ``MODULE:NAME`` or ``MODULE:FACTORY()`` (called without arguments),
    as gunicorn's ``import_app`` reads them."""
    module_name, attr, call = _parse_app_uri(uri)
    target = getattr(importlib.import_module(module_name), attr)
    loaded: WSGIApp = target() if call else target
    if not callable(loaded):
        raise ValueError(f"--app {uri!r} is not a WSGI app")
    return loaded


def _run_gunicorn(load: Callable[[], WSGIApp], *, bind: str, workers: int, threads: int, timeout: int) -> int:
    """gunicorn (``gthread`` when ``threads`` > 1) with :mod:`oidc_logout.gunicorn_hooks`."""
    from gunicorn.app.base import BaseApplication

    from . import gunicorn_hooks

    options: dict[str, Any] = {
        "bind": [bind],
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread" if threads > 1 else "sync",
        "timeout": timeout,
        "on_starting": gunicorn_hooks.on_starting,
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

    Application().run()
    return 0


__all__ = ["DEFAULT_SERVER", "SERVERS", "bundled_app", "import_app", "prepare_database", "serve"]
