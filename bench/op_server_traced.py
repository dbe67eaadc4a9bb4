"""Bench only: the demo IdP of bench/op_server.py with a timeline of every ``/end_session``
request, to show what runs between the logout request and the first back-channel POST.

Wraps (in the gunicorn worker processes only, nothing in oidc_logout changes) the functions on
that path and logs when each call starts and ends (wall clock, comparable across the workers):

* in the request's thread: the request itself, id_token_hint validation, ``terminate()``
  (inside the termination transaction), the commit (``Provider._deliver`` starts right after
  it), the response;
* in every dispatcher (any worker: the other worker's dispatcher may claim the rows first):
  each claim, each delivery attempt, its logout-token signing and its POST.

Each event is one JSON line in ``$BENCH_TRACE_DIR/<pid>.jsonl``;
:func:`timelines` merges the files into one timeline per logout. Served by gunicorn as
``bench.op_server_traced:wsgi_app()``.
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

_local = threading.local()
_lock = threading.Lock()
_out: Path | None = None


def _log(event: dict[str, Any]) -> None:
    if _out is None:
        return
    line = json.dumps(event) + "\n"
    with _lock, _out.open("a") as f:
        f.write(line)


def _wrap(owner: Any, attr: str, name: str, request_scoped: bool) -> None:
    """Log start and end of every call of ``owner.attr`` (``request_scoped``: only calls made
    while this thread serves an end_session request, tagged with that request)."""
    fn: Callable[..., Any] = getattr(owner, attr)

    def traced(*args: Any, **kwargs: Any) -> Any:
        req = getattr(_local, "request", None)
        if request_scoped and req is None:
            return fn(*args, **kwargs)
        t0 = time.time()
        result: Any = None
        try:
            result = fn(*args, **kwargs)
            return result
        finally:
            event = {"ev": name, "start": t0, "end": time.time(), "req": req, "pid": os.getpid()}
            if isinstance(result, list):
                event["n"] = len(result)  # rows claimed
            _log(event)

    setattr(owner, attr, traced)


def _install() -> None:
    from oidc_logout import provider
    from oidc_logout.backchannel import request
    from oidc_logout.delivery import dispatcher, outbox
    from oidc_logout.rpinitiated import end_session

    _wrap(end_session.EndSessionEndpoint, "validate_request", "validate", True)
    _wrap(provider, "terminate", "terminate", True)
    _wrap(provider.Provider, "_deliver", "deliver", True)  # starts right after the commit
    _wrap(outbox, "claim_due", "claim", False)
    _wrap(dispatcher, "attempt_delivery", "attempt", False)
    _wrap(request, "sign_logout_token", "sign", False)
    _wrap(request, "post_logout_token", "post", False)
    # Phase profile of the whole fan-out (bench/profile_fanout.py): every group commit of
    # results, end_session's bounded wait, and the claim taken inside the termination
    # transaction (where the dispatcher has one).
    _wrap(dispatcher.Dispatcher, "_write", "record", False)
    _wrap(dispatcher.Dispatcher, "wait_for", "wait", True)
    if hasattr(outbox, "claim_rows"):
        _wrap(outbox, "claim_rows", "claim", False)


def wsgi_app():  # type: ignore[no-untyped-def]
    global _out
    _install()
    app = op_server.wsgi_app()
    _out = Path(os.environ["BENCH_TRACE_DIR"]) / f"{os.getpid()}.jsonl"

    def traced_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/end_session":
            return app(environ, start_response)  # type: ignore[no-any-return]
        t0 = time.time()
        _local.request = f"{os.getpid()}-{t0}"
        try:
            body = list(app(environ, start_response))
        finally:
            _log(
                {"ev": "request", "start": t0, "end": time.time(), "req": _local.request, "pid": os.getpid()}
            )
            _local.request = None
        return body

    traced_app.app = app  # type: ignore[attr-defined]  # serve's election finds the extension here
    return traced_app


def timelines(trace_dir: Path) -> list[dict[str, float]]:
    """One dict per end_session request: ms after the request reached the app of ``validated``,
    ``terminate_start``/``_end``, ``committed``, the first claim's start/end, the first attempt,
    the first signing's start/end, the first POST's start/end (any worker) and ``response``."""
    events = [json.loads(x) for f in trace_dir.glob("*.jsonl") for x in f.read_text().splitlines() if x]
    out = []
    for r in sorted((e for e in events if e["ev"] == "request"), key=lambda e: e["start"]):
        t0, mine = r["start"], [e for e in events if e.get("req") == r["req"]]

        def one(name: str, evs: list[dict[str, Any]] = mine) -> dict[str, Any] | None:
            return min((e for e in evs if e["ev"] == name), key=lambda e: e["start"], default=None)

        rec: dict[str, float] = {"response": (r["end"] - t0) * 1000}
        for name, key in (("validate", "validated"), ("deliver", "committed")):
            e = one(name)
            if e:
                rec[key] = ((e["end"] if name == "validate" else e["start"]) - t0) * 1000
        e = one("terminate")
        if e:
            rec["terminate_start"], rec["terminate_end"] = (e["start"] - t0) * 1000, (e["end"] - t0) * 1000
        committed = t0 + rec.get("committed", 0.0) / 1000
        after = [
            e for e in events if e.get("req") is None and e["start"] >= committed and e["start"] <= r["end"]
        ]
        # A claim that was waiting for the database (SQLite's write lock) during the commit
        # takes the rows the moment it ends: the first claim *ending* after the commit.
        claims = [
            e for e in events if e["ev"] == "claim" and e["end"] >= committed and e["start"] <= r["end"]
        ]
        for name in ("claim", "attempt", "sign", "post"):
            e = min(claims, key=lambda x: x["end"], default=None) if name == "claim" else one(name, after)
            if e:
                rec[f"first_{name}_start"] = (e["start"] - t0) * 1000
                rec[f"first_{name}_end"] = (e["end"] - t0) * 1000
        out.append(rec)
    return out
