"""Bench only: the demo IdP of bench/op_server.py with a timeline of every ``/end_session``
request, to show what runs between the logout request and the first back-channel POST.

Wraps (in this worker process only, nothing in oidc_logout changes) the functions on that path
and records when each first starts and ends after the request arrived: id_token_hint validation,
``terminate()`` (inside the termination transaction), the commit (``Provider._deliver`` starts
right after it), the dispatcher's claim, the first delivery attempt, its logout-token signing
and its POST. One JSON line per request goes to ``$BENCH_TRACE_DIR/<pid>.jsonl`` when the
response is done. Served by gunicorn as ``bench.op_server_traced:wsgi_app()``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import op_server

_lock = threading.Lock()
_current: dict[str, float] | None = None


def _mark(name: str, after: str | None) -> bool:
    now = time.perf_counter()
    with _lock:
        if _current is not None and name not in _current and (after is None or after in _current):
            _current[name] = now
            return True
    return False


def _wrap(owner: Any, attr: str, start: str | None, end: str | None, after: str | None = None) -> None:
    """Mark ``start``/``end`` around the first call of ``owner.attr`` during an end_session
    request (and, with ``after``, only once that mark exists: the dispatcher's periodic claims
    before the commit are not this logout's)."""
    fn: Callable[..., Any] = getattr(owner, attr)

    def traced(*args: Any, **kwargs: Any) -> Any:
        mine = _mark(start, after) if start else True
        try:
            return fn(*args, **kwargs)
        finally:
            if end and mine:  # the end of the very call whose start was marked
                _mark(end, after)

    setattr(owner, attr, traced)


def _install() -> None:
    from oidc_logout import provider
    from oidc_logout.backchannel import request
    from oidc_logout.delivery import dispatcher, outbox
    from oidc_logout.rpinitiated import end_session

    _wrap(end_session.EndSessionEndpoint, "validate_request", None, "validated")
    _wrap(provider, "terminate", "terminate_start", "terminate_end")
    _wrap(provider.Provider, "_deliver", "committed", None)
    _wrap(outbox, "claim_due", "claim_start", "claim_end", after="committed")
    _wrap(dispatcher, "attempt_delivery", "first_attempt_start", None, after="committed")
    _wrap(request, "sign_logout_token", "first_sign_start", "first_sign_end", after="committed")
    _wrap(request, "post_logout_token", "first_post_start", "first_post_end", after="committed")


def wsgi_app():  # type: ignore[no-untyped-def]
    _install()
    app = op_server.wsgi_app()
    out = Path(os.environ["BENCH_TRACE_DIR"]) / f"{os.getpid()}.jsonl"

    def traced_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        global _current
        if environ.get("PATH_INFO") != "/end_session":
            return app(environ, start_response)  # type: ignore[no-any-return]
        t0 = time.perf_counter()
        with _lock:
            _current = {"request": t0}
        try:
            body = list(app(environ, start_response))
        finally:
            with _lock:
                rec, _current = _current or {}, None
            rec["response"] = time.perf_counter()
            with out.open("a") as f:
                f.write(json.dumps({k: (v - t0) * 1000 for k, v in rec.items()}) + "\n")
        return body

    return traced_app
