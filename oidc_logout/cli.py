"""oidc-logout: run the OP (``serve``) and its delivery workers, migrate the schema, create
signing keys, terminate sessions and inspect, show and retry their RP notifications.

Every command reads the same settings as the OP: defaults, then ``--config FILE`` (or
OIDC_LOGOUT_CONFIG_FILE, TOML), then OIDC_LOGOUT_* variables, then flags
(``oidc-logout config show`` prints them with their source). Only ``migrate`` changes the
schema and only ``keys create`` (or ``migrate --create-keys``) creates signing keys.

Exit codes: 0 done (every back-channel logout delivered), 1 an RP refused a logout (failed),
2 usage or settings error, 3 a delivery is dead, 4 timed out with deliveries still pending,
5 not found, 6 database missing, unreachable, not migrated or without signing keys,
70 internal error (``--debug`` shows the traceback)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
import traceback
from collections import Counter
from typing import Any

from . import __version__
from .cli_output import Output
from .cli_support import (
    EXIT_DATABASE,
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CLIError,
    DeliveryFilter,
    create_keys,
    database_error,
    default_algs,
    find_deliveries,
    list_keys,
    migrate,
    open_provider,
    outcome_code,
    state_counts,
    unconfirmed_by_rp,
)
from .config import (
    LoadedSettings,
    Settings,
    SettingsError,
    check_production,
    load_settings,
    production_problems,
)
from .host_models import HostTableMissing
from .serve import DEFAULT_SERVER as SERVE_DEFAULT_SERVER
from .serve import DEFAULT_THREADS as SERVE_THREADS
from .serve import DEFAULT_WORKERS as SERVE_WORKERS
from .serve import SERVERS as SERVE_SERVERS
from .vocabulary import Channel, DeliveryState

DEFAULT_PASSWORD = "wonderland"
_FINAL_BACK = (DeliveryState.DELIVERED, DeliveryState.FAILED, DeliveryState.DEAD)


# -- settings ----------------------------------------------------------------------------------


def _loaded(args: argparse.Namespace) -> LoadedSettings:
    return load_settings(
        config_file=getattr(args, "config", None),
        flags={"database_url": getattr(args, "database_url", None), "issuer": getattr(args, "issuer", None)},
    )


def _settings(args: argparse.Namespace, *, signs: bool) -> Settings:
    """The OP's settings for this command; outside dev mode a development issuer (when this
    process signs) or the development database refuses to start."""
    settings = _loaded(args).settings
    check_production(settings, signs=signs)
    return settings


def _out(args: argparse.Namespace) -> Output:
    out: Output = args.out
    return out


def _initiator() -> str:
    return f"cli:{os.environ.get('USER', 'unknown')}"


# -- commands ----------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo.run import run_demo

    return run_demo(
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        password=args.demo_password,
        clients_file=args.clients,
        dev=args.dev,
        rps=not args.no_rps,
    )


def cmd_config_show(args: argparse.Namespace) -> int:
    out = _out(args)
    loaded = _loaded(args)
    problems = production_problems(loaded.settings)
    if out.json_mode:
        out.json(
            {
                "config_file": loaded.config_file,
                "settings": {key: {"value": value, "source": source} for key, value, source in loaded.rows()},
                "production_problems": problems,
            }
        )
        return EXIT_OK
    out.line(f"config file: {loaded.config_file or '(none)'}")
    out.table(("setting", "value", "source"), loaded.rows())
    for p in problems:
        out.note(f"would refuse to start: {p}")
    return EXIT_OK


def cmd_terminate(args: argparse.Namespace) -> int:
    from .termination import by_client, by_sid, by_subject

    out = _out(args)
    settings = _settings(args, signs=True)
    embedded = settings.embedded_dispatcher
    provider = open_provider(settings, need_keys=embedded)
    target = by_sid(args.sid) if args.sid else by_subject(args.sub) if args.sub else by_client(args.client)
    try:
        if embedded:
            # Embedded mode: this process delivers, with the OP's settings (issuer, policy).
            provider.start_background()
        outcome = provider.terminate_now(
            target, reason=args.reason, initiator=_initiator(), include_offline=args.include_offline, wait=0
        )
        tid = outcome.termination_id
        # Workers (or this process's dispatcher) deliver; we watch the termination's
        # back-channel rows reach a final state, at most --wait seconds.
        flt = DeliveryFilter(channel=Channel.BACKCHANNEL, termination_id=tid)
        deadline = time.monotonic() + max(args.wait, 0.0)
        pause = 0.05
        with provider.session_factory() as db:
            total = sum(state_counts(db, flt).values())
        chunks_left = True
        with out.progress("delivering", total) as bar:
            while True:
                with provider.session_factory() as db:
                    # A chunked termination writes more rows until its progress completes.
                    chunks_left = _chunks_left(db, tid)
                    counts = state_counts(db, flt)
                total = sum(counts.values())
                done = sum(counts.get(s, 0) for s in _FINAL_BACK)
                bar.update(done, _counts_text(counts), total=total)
                if (done >= total and not chunks_left) or time.monotonic() >= deadline:
                    break
                time.sleep(pause)
                pause = min(pause * 1.5, 0.5)
            elapsed = bar.elapsed
        with provider.session_factory() as db:
            report = provider.termination_report(db, tid) or {}
            unconfirmed = unconfirmed_by_rp(db, tid)
            front = sum(state_counts(db, DeliveryFilter(termination_id=tid)).values()) - total
    finally:
        provider.stop_background()
        provider.engine.dispose()
    code = outcome_code(counts)
    if chunks_left and code == 0:
        code = EXIT_TIMEOUT  # not everything was even written yet: not "all delivered"
    result = {
        "exit_code": code,
        "backchannel": counts,
        "frontchannel_rows": front,
        "waited_seconds": round(elapsed, 3),
        "delivered_by": "this process (embedded dispatcher)" if embedded else "the workers",
        "not_confirmed": [dataclasses.asdict(u) for u in unconfirmed],
    }
    if out.json_mode:
        out.json(report | {"result": result})
    else:
        target_text = f"{report['target']['kind']} {report['target']['value']}"
        out.line(
            f"termination {tid}: {target_text}: {report['sessions_ended']} session(s) ended, "
            f"{report['tokens_revoked']} token(s) revoked"
        )
        rate = f" ({done / elapsed:,.0f}/s)" if elapsed > 0 and done else ""
        out.line(
            f"back-channel: {total} notification(s): {_counts_text(counts) or 'none'} "
            f"in {elapsed:.1f} s{rate}, delivered by {result['delivered_by']}"
        )
        if front:
            out.line(f"front-channel: {front} row(s): only a browser on the logout page can confirm them")
    for u in unconfirmed:
        # The termination committed (sessions ended, tokens revoked); these RPs have not
        # confirmed the logout (yet): say which, once per RP and state.
        out.note(
            f"RP {u.client_id} ({u.target_uri}) has not confirmed {u.count} logout(s): {u.state}"
            + (f": {u.last_error}" if u.last_error else "")
        )
    if chunks_left:
        # A large scoped termination: everything was cut off at commit; sessions, tokens and
        # outbox rows are still being written in chunks by the delivery loops.
        out.note(
            f"cut off at commit; the rest of its sessions, tokens and RP notifications are written "
            f"in chunks by the delivery workers (`oidc-logout show {tid}` shows the progress)"
        )
    if code == EXIT_TIMEOUT:
        out.note(
            f"stopped waiting after {args.wait:g} s; the rest is delivered in the background "
            f"(`oidc-logout show {tid}` follows it)"
        )
    return code


def _chunks_left(db: Any, termination_id: str) -> bool:
    """Whether a chunked termination still has per-row work to run (docs/performance.md,
    "Kill switch at scale")."""
    from .storage.models import Termination
    from .termination import RUNNING

    term = db.get(Termination, termination_id)
    return term is not None and term.state == RUNNING


def _counts_text(counts: dict[str, int]) -> str:
    order = [str(s) for s in DeliveryState]
    return ", ".join(f"{counts[s]} {s}" for s in sorted(counts, key=order.index) if counts[s])


def cmd_deliveries(args: argparse.Namespace) -> int:
    from .provider import delivery_to_dict

    out = _out(args)
    provider = open_provider(_settings(args, signs=False))
    flt = DeliveryFilter(
        states=tuple(args.state) if args.state else None,
        channel=args.channel,
        client_id=args.client,
        termination_id=args.termination,
    )
    try:
        with provider.session_factory() as db:
            rows = find_deliveries(db, flt, args.limit)
            counts = state_counts(db, flt)
    finally:
        provider.engine.dispose()
    if out.json_mode:
        out.json({"summary": counts, "deliveries": [delivery_to_dict(d, attempts=False) for d in rows]})
        return EXIT_OK
    out.table(
        ("id", "created", "termination", "channel", "client", "state", "attempts", "last"),
        (
            (
                d.id,
                _short_time(d.created_at),
                d.termination_id,
                d.channel,
                d.client_id,
                d.state,
                d.attempts,
                _last(d.last_status, d.last_error),
            )
            for d in rows
        ),
    )
    out.line(f"{len(rows)} shown, newest first; all matching: {_counts_text(counts) or 'none'}")
    return EXIT_OK


def _short_time(v: Any) -> str:
    return v.strftime("%Y-%m-%d %H:%M:%S") if v else ""


def _last(status: int | None, error: str | None) -> str:
    return " ".join(x for x in (str(status) if status else "", error or "") if x)


def cmd_show(args: argparse.Namespace) -> int:
    out = _out(args)
    provider = open_provider(_settings(args, signs=False))
    try:
        with provider.session_factory() as db:
            report = provider.termination_report(db, args.termination_id, limit=1000)
            if report is None:
                raise CLIError(
                    f"no termination {args.termination_id}",
                    "`oidc-logout deliveries` lists recent ones (column termination)",
                    EXIT_NOT_FOUND,
                )
            while len(report["deliveries"]) < report["deliveries_total"]:
                page = provider.termination_report(
                    db, args.termination_id, limit=1000, offset=len(report["deliveries"])
                )
                if not page or not page["deliveries"]:
                    break
                report["deliveries"].extend(page["deliveries"])
    finally:
        provider.engine.dispose()
    deliveries = report["deliveries"]
    report["sessions"] = sorted({d["sid"] for d in deliveries if d["sid"]})
    if out.json_mode:
        out.json(report)
        return EXIT_OK
    out.line(f"termination {report['id']}  {report['created_at']}")
    out.line(f"  target:    {report['target']['kind']} {report['target']['value']}")
    out.line(f"  reason:    {report['reason']}   asked by {report['initiator']}")
    out.line(
        f"  ended:     {report['sessions_ended']} session(s), {report['tokens_revoked']} token(s) revoked"
        + (" (offline_access included)" if report["include_offline"] else "")
    )
    if report["sessions"]:
        out.line(f"  sessions:  {', '.join(report['sessions'])}")
    out.line(f"  deliveries: {_counts_text(report['delivery_summary']) or 'none'}")
    if deliveries:
        out.table(
            ("id", "channel", "client", "sid", "target", "state", "attempts", "last"),
            (
                (
                    d["id"],
                    d["channel"],
                    d["client_id"],
                    d["sid"],
                    d["target_uri"],
                    d["state"],
                    d["attempts"],
                    _last(d["last_status"], d["last_error"]),
                )
                for d in deliveries
            ),
            title="deliveries",
        )
        attempts = [(d["id"], a) for d in deliveries for a in d.get("attempt_log", [])]
        if attempts:
            out.table(
                ("delivery", "#", "started", "ms", "http", "outcome", "error"),
                (
                    (
                        i,
                        a["number"],
                        a["started_at"],
                        a["duration_ms"],
                        a["http_status"],
                        a["outcome"],
                        a["error"],
                    )
                    for i, a in attempts
                ),
                title="attempts",
            )
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from .delivery import outbox
    from .storage.models import Delivery

    out = _out(args)
    states = tuple(args.state or (DeliveryState.FAILED, DeliveryState.DEAD))
    provider = open_provider(_settings(args, signs=args.now), need_keys=args.now)
    try:
        with provider.session_factory.begin() as db:
            q = select(Delivery.id, Delivery.attempts).where(
                Delivery.channel == Channel.BACKCHANNEL, Delivery.state.in_(states)
            )
            if args.id:
                q = q.where(Delivery.id.in_(args.id))
            attempts_before: dict[int, int] = {int(i): int(n) for i, n in db.execute(q)}
            ids = sorted(attempts_before)
            missing = sorted(set(args.id or ()) - set(ids))
            if missing:
                # Nothing changes: an id that is not there is a mistake to fix first.
                raise CLIError(
                    f"no back-channel delivery in state {'/'.join(states)} with id "
                    + ", ".join(map(str, missing)),
                    "`oidc-logout deliveries --state failed --state dead` lists them",
                    EXIT_NOT_FOUND,
                )
            n = outbox.retry_now(db, states=states, ids=ids)
        result: dict[str, Any] = {"requeued": n, "ids": ids}
        code = EXIT_OK
        if args.now and ids:
            from .delivery.dispatcher import Dispatcher

            # Each requeued row gets its attempt here, or from the service's dispatcher where
            # that one claimed it first (the rows are due at commit, for every dispatcher).
            dispatcher = Dispatcher(provider.session_factory, provider.keyring, provider.settings)
            try:
                stats = dispatcher.attempt_each(attempts_before, stall_timeout=args.wait)
            finally:
                dispatcher.stop(timeout=provider.settings.delivery_timeout)
            with provider.session_factory() as db:
                counts = dict(Counter(state for state, _n in outbox.progress(db, ids).values()))
            result |= {"attempts": stats, "states": counts}
            code = outcome_code(counts)
    finally:
        provider.engine.dispose()
    if out.json_mode:
        out.json(result | {"exit_code": code})
    else:
        out.line(
            f"requeued {n} deliver{'y' if n == 1 else 'ies'}"
            + (f": {', '.join(map(str, ids))}" if ids else "")
        )
        if "states" in result:
            out.line(f"delivered now in this process: {_counts_text(result['states'])}")
        elif n:
            out.line("the OP's dispatcher or the workers deliver them (due now)")
    return code


def cmd_worker(args: argparse.Namespace) -> int:
    from .delivery.worker import run_worker

    settings = _settings(args, signs=True)
    settings = settings.replace(
        worker_metrics_port=args.metrics_port or settings.worker_metrics_port,
        worker_health_port=args.health_port or settings.worker_health_port,
    )
    if args.db_unreachable_exit_after is not None:
        settings = settings.replace(worker_db_unreachable_exit_after=args.db_unreachable_exit_after)
    return int(run_worker(settings) or 0)


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import check_app_uri, serve

    if args.app is not None:
        try:
            check_app_uri(args.app)  # before the database is touched and workers start: exit 2
        except ValueError as exc:
            raise CLIError(str(exc), "e.g. --app mymodule:app or --app mymodule:create_app()") from None

    if args.server == "granian":
        from .granian_server import parse_bind

        try:
            parse_bind(args.bind)  # before the database is touched: a usage error, exit 2
        except ValueError as exc:
            raise CLIError(
                str(exc), "e.g. --bind 127.0.0.1:8000, --bind [::1]:8000 or --bind unix:/run/op.sock"
            ) from None
    return serve(
        _settings(args, signs=True),
        bind=args.bind,
        workers=args.workers,
        threads=args.threads,
        app=args.app,
        password=args.demo_password,
        clients_file=args.clients,
        timeout=args.timeout,
        secret_key_file=args.secret_key_file,
        server=args.server,
    )


def cmd_rotate_secret(args: argparse.Namespace) -> int:
    from .errors import NotFound

    out = _out(args)
    provider = open_provider(_settings(args, signs=False))
    try:
        secret, outcome = provider.rotate_client_secret(
            args.client, end_previous=not args.keep_previous, reason=args.reason, initiator=_initiator()
        )
    except NotFound:
        raise CLIError(
            f"no client {args.client!r}", "check the client_id (as registered or loaded)", EXIT_NOT_FOUND
        ) from None
    finally:
        provider.engine.dispose()
    result: dict[str, Any] = {"client_id": args.client, "client_secret": secret}
    if outcome:
        result["termination_id"] = outcome.termination_id
        result["deliveries"] = len(outcome.delivery_ids)
    if out.json_mode:
        out.json(result)
        return EXIT_OK
    out.line(f"client {args.client}: new client_secret (shown once): {secret}")
    if outcome:
        out.line(
            f"termination {outcome.termination_id}: grants of the previous secret ended; "
            f"{len(outcome.delivery_ids)} back-channel notification(s) queued"
        )
    return EXIT_OK


def cmd_rotate_key(args: argparse.Namespace) -> int:
    from .keys import rotate_key
    from .ssf.events import key_rotated

    out = _out(args)
    provider = open_provider(_settings(args, signs=False))
    period = (
        0.0
        if args.immediately
        else (args.publish_for if args.publish_for is not None else provider.settings.key_rollover_period)
    )
    try:
        with provider.session_factory.begin() as db:
            kid, activates = rotate_key(db, args.alg, publish_for=period)
            key_rotated(
                db, kid=kid, alg=args.alg, initiator=f"cli:{os.environ.get('USER', 'unknown')}"
            )  # SSF
    finally:
        provider.engine.dispose()
    # Two-step rollover: the new key is in the JWKS of every OP instance within the key ring's
    # cache TTL (30 s) and signs only from ``activates_at``; the key it replaces signs until
    # then and stays published afterwards, so tokens it signed still verify.
    result = {"alg": args.alg, "kid": kid, "activates_at": activates.isoformat()}
    if out.json_mode:
        out.json(result)
    else:
        out.line(f"new {args.alg} key {kid}: published now, signs from {activates.isoformat()}")
    return EXIT_OK


def cmd_expire(args: argparse.Namespace) -> int:
    out = _out(args)
    provider = open_provider(_settings(args, signs=False))
    try:
        terminations = provider.expire_sessions()
    finally:
        provider.engine.dispose()
    if out.json_mode:
        out.json({"terminations": terminations})
    else:
        out.line(
            f"{len(terminations)} termination(s) for expired sessions: {', '.join(terminations) or 'none'}"
        )
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import DBAPIError

    from .storage.schema import make_engine

    # Always migrates, whatever OIDC_LOGOUT_AUTO_MIGRATE says: this is the deploy step.
    out = _out(args)
    settings = _settings(args, signs=False)
    engine = make_engine(settings.database_url)
    try:
        report = migrate(engine)
        created = create_keys(engine, args.alg or default_algs(settings)) if args.create_keys else []
    except DBAPIError as exc:
        raise database_error(settings, exc) from None
    finally:
        engine.dispose()
    if out.json_mode:
        out.json(dataclasses.asdict(report) | {"keys_created": [{"kid": k, "alg": a} for k, a in created]})
        return EXIT_OK
    if report.applied:
        out.line(f"applied {len(report.applied)} migration(s): {', '.join(report.applied)}")
        out.line(f"schema is at head ({report.after})")
    else:
        out.line(f"already at head ({report.after}): nothing to apply")
    for kid, alg in created:
        out.line(f"created {alg} signing key {kid}")
    if args.create_keys and not created:
        out.line("signing keys: every algorithm already has one")
    return EXIT_OK


def cmd_keys_create(args: argparse.Namespace) -> int:
    out = _out(args)
    settings = _settings(args, signs=False)
    provider = open_provider(settings)
    try:
        created = create_keys(provider.engine, args.alg or default_algs(settings))
    finally:
        provider.engine.dispose()
    if out.json_mode:
        out.json({"created": [{"kid": k, "alg": a} for k, a in created]})
    elif created:
        for kid, alg in created:
            out.line(f"created {alg} signing key {kid}")
    else:
        out.line(
            "every algorithm asked for already has a signing key (`oidc-logout rotate-key` replaces one)"
        )
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace) -> int:
    out = _out(args)
    provider = open_provider(_settings(args, signs=False))
    try:
        with provider.session_factory() as db:
            keys = list_keys(db)
    finally:
        provider.engine.dispose()
    if out.json_mode:
        out.json({"keys": keys})
    else:
        out.table(
            ("kid", "alg", "status", "created", "activates", "retired"),
            (
                (k["kid"], k["alg"], k["status"], k["created_at"], k["activates_at"], k["retired_at"])
                for k in keys
            ),
        )
        if not keys:
            out.note("no signing keys: `oidc-logout keys create` makes them")
    return EXIT_OK


# -- parser ------------------------------------------------------------------------------------


def _common(*, top: bool) -> argparse.ArgumentParser:
    """Options every command takes, before or after the command name."""
    p = argparse.ArgumentParser(add_help=False)
    default: Any = None if top else argparse.SUPPRESS
    p.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help="TOML settings file (default: OIDC_LOGOUT_CONFIG_FILE); the environment overrides it",
    )
    p.add_argument(
        "--database-url", metavar="URL", default=default, help="overrides OIDC_LOGOUT_DATABASE_URL"
    )
    p.add_argument("--issuer", metavar="URL", default=default, help="overrides OIDC_LOGOUT_ISSUER")
    p.add_argument(
        "--json",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="JSON output for machines",
    )
    p.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="show the traceback of an error",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="oidc-logout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(top=True)],
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    common = [_common(top=False)]

    d = sub.add_parser(
        "demo",
        help="run the demo IdP with sample RPs (development server)",
        description="Run the demo IdP (users alice and bob) with sample relying parties.",
    )
    d.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    d.add_argument(
        "--port", type=int, default=5000, help="IdP port (default 5000); the RPs use the next ports"
    )
    d.add_argument(
        "--database-url",
        default="sqlite:///demo-data/oidc-logout.db",
        help="SQLAlchemy URL (default: SQLite file demo-data/oidc-logout.db)",
    )
    d.add_argument(
        "--demo-password",
        default=DEFAULT_PASSWORD,
        help=f"password of the demo users alice and bob (default {DEFAULT_PASSWORD!r}, printed at start)",
    )
    d.add_argument(
        "--clients",
        metavar="FILE",
        help="JSON array of RFC 7591 client metadata with client_id and client_secret, loaded at start",
    )
    d.add_argument(
        "--dev",
        action="store_true",
        help="development mode: allows http and loopback URIs (the demo turns it on and says so)",
    )
    d.add_argument("--no-rps", action="store_true", help="do not start the sample relying parties")
    d.set_defaults(func=cmd_demo)

    sv = sub.add_parser(
        "serve",
        parents=common,
        help="run the OP under a production WSGI server (granian or gunicorn)",
        description="Run the OP under granian (default) or gunicorn: the bundled OP, or --app "
        "MODULE:NAME (your Flask app with OIDCLogout). The embedded dispatcher and the expiry "
        "sweep run in exactly one worker at a time (a file lock elects it; another takes over if "
        "it dies).",
    )
    sv.add_argument(
        "--server",
        choices=SERVE_SERVERS,
        default=SERVE_DEFAULT_SERVER,
        help=f"production WSGI server (default {SERVE_DEFAULT_SERVER}; docs/operations.md)",
    )
    sv.add_argument("--bind", default="127.0.0.1:8000", help="address:port (default 127.0.0.1:8000)")
    sv.add_argument(
        "--workers",
        type=int,
        default=SERVE_WORKERS,
        help=f"worker processes (default {SERVE_WORKERS})",
    )
    sv.add_argument(
        "--threads",
        type=int,
        default=SERVE_THREADS,
        help=f"app threads per worker (default {SERVE_THREADS}; gunicorn: gthread, with keep-alive)",
    )
    sv.add_argument(
        "--timeout",
        type=int,
        default=30,
        help="gunicorn: worker timeout; granian: bound on a worker's graceful stop (s, default 30)",
    )
    sv.add_argument(
        "--app",
        metavar="MODULE:NAME",
        help="serve this WSGI app (a Flask app or a factory called without arguments) "
        "instead of the bundled OP",
    )
    sv.add_argument(
        "--demo-password",
        default=os.environ.get("OIDC_LOGOUT_SERVE_PASSWORD", DEFAULT_PASSWORD),
        help="bundled OP only: password of its users alice and bob",
    )
    sv.add_argument("--clients", metavar="FILE", help="bundled OP only: JSON client metadata loaded at start")
    sv.add_argument(
        "--secret-key-file",
        metavar="FILE",
        help="bundled OP only: Flask secret key (CSRF) shared by every instance; default: a "
        "random key per start, shared by its workers",
    )
    sv.set_defaults(func=cmd_serve)

    w = sub.add_parser("worker", parents=common, help="run a delivery worker (PostgreSQL, SKIP LOCKED)")
    w.add_argument("--metrics-port", type=int, help="serve /metrics on this port (docs/operations.md)")
    w.add_argument("--health-port", type=int, help="serve /healthz and /readyz on this port")
    w.add_argument(
        "--db-unreachable-exit-after",
        type=float,
        metavar="SECONDS",
        help="exit 69 once the database has been unreachable this long (0: never; "
        "default OIDC_LOGOUT_WORKER_DB_UNREACHABLE_EXIT_AFTER, 300)",
    )
    w.set_defaults(func=cmd_worker)

    m = sub.add_parser(
        "migrate",
        parents=common,
        help="bring the schema to head under a lock and say what was applied (a deploy step)",
    )
    m.add_argument("--create-keys", action="store_true", help="also create missing signing keys")
    m.add_argument(
        "--alg", action="append", choices=["RS256", "PS256", "ES256"], help="with --create-keys: algorithms"
    )
    m.set_defaults(func=cmd_migrate)

    k = sub.add_parser("keys", help="signing keys: create the first ones, list them")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kc = ksub.add_parser(
        "create", parents=common, help="create a signing key for each algorithm that has none in service"
    )
    kc.add_argument(
        "--alg",
        action="append",
        choices=["RS256", "PS256", "ES256"],
        help="algorithm (repeatable; default RS256, ES256 and OIDC_LOGOUT_DEFAULT_ID_TOKEN_ALG)",
    )
    kc.set_defaults(func=cmd_keys_create)
    kl = ksub.add_parser("list", parents=common, help="list signing keys: signing, published, retired")
    kl.set_defaults(func=cmd_keys_list)

    c = sub.add_parser("config", help="settings")
    csub = c.add_subparsers(dest="config_command", required=True)
    cs = csub.add_parser(
        "show",
        parents=common,
        help="print the effective settings and where each comes from (secrets redacted)",
    )
    cs.set_defaults(func=cmd_config_show)

    t = sub.add_parser(
        "terminate",
        parents=common,
        help="end sessions, revoke tokens, notify RPs and wait for the outcome",
        description="End sessions and revoke tokens (one transaction), then wait at most --wait seconds "
        "for the back-channel notifications: delivered by this process with the embedded dispatcher, "
        "by the workers when OIDC_LOGOUT_EMBEDDED_DISPATCHER=false. Exit 0 only when every RP confirmed.",
    )
    g = t.add_mutually_exclusive_group(required=True)
    g.add_argument("--sid", help="one OP session")
    g.add_argument("--sub", help="every session of a subject")
    g.add_argument("--client", help="everything of one client (kill switch)")
    t.add_argument("--reason", required=True)
    t.add_argument("--include-offline", action="store_true", help="also revoke offline_access refresh tokens")
    t.add_argument("--wait", type=float, default=30.0, help="seconds to wait for deliveries (default 30)")
    t.set_defaults(func=cmd_terminate)

    dl = sub.add_parser(
        "deliveries", parents=common, help="list RP notifications, newest first (every state, both channels)"
    )
    dl.add_argument(
        "--state",
        action="append",
        choices=[str(s) for s in DeliveryState],
        help="only this state (repeatable)",
    )
    dl.add_argument("--channel", choices=[str(c) for c in Channel], help="only this channel")
    dl.add_argument("--client", metavar="CLIENT_ID", help="only this client")
    dl.add_argument("--termination", metavar="ID", help="only this termination")
    dl.add_argument("--limit", type=_positive_int, default=100, help="at most this many rows (default 100)")
    dl.set_defaults(func=cmd_deliveries)

    sh = sub.add_parser(
        "show", parents=common, help="one termination: sessions, tokens, each RP's delivery with its attempts"
    )
    sh.add_argument("termination_id", metavar="TERMINATION_ID")
    sh.set_defaults(func=cmd_show)

    r = sub.add_parser("retry", parents=common, help="requeue failed or dead deliveries")
    r.add_argument(
        "--state",
        action="append",
        choices=[str(DeliveryState.FAILED), str(DeliveryState.DEAD), str(DeliveryState.PENDING)],
        help="states to requeue (default failed and dead)",
    )
    r.add_argument("--id", type=int, action="append", help="only these delivery ids (each must exist)")
    r.add_argument("--now", action="store_true", help="deliver them now in this process")
    r.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="with --now: give up when no requeued row has had an attempt for this long (default 30)",
    )
    r.set_defaults(func=cmd_retry)

    rs = sub.add_parser(
        "rotate-secret", parents=common, help="rotate a client secret, ending what the old one issued"
    )
    rs.add_argument("--client", required=True)
    rs.add_argument("--reason", default="client secret rotated")
    rs.add_argument("--keep-previous", action="store_true", help="do not end grants of the previous secret")
    rs.set_defaults(func=cmd_rotate_secret)

    rk = sub.add_parser(
        "rotate-key",
        parents=common,
        help="publish a new signing key now, sign with it after the rollover period (the old one stays published)",
    )
    rk.add_argument("--alg", default="RS256", choices=["RS256", "PS256", "ES256"])
    rk.add_argument(
        "--publish-for",
        type=float,
        metavar="SECONDS",
        help="seconds the new key is published before it signs (default: OIDC_LOGOUT_KEY_ROLLOVER_PERIOD, 3600)",
    )
    rk.add_argument(
        "--immediately",
        action="store_true",
        help="sign with the new key at once (a compromised key): RPs holding a cached "
        "JWKS refuse tokens until they refetch; those deliveries are retried",
    )
    rk.set_defaults(func=cmd_rotate_key)

    e = sub.add_parser("expire", parents=common, help="end sessions past their idle or absolute lifetime now")
    e.set_defaults(func=cmd_expire)
    return p


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    out = Output(json_mode=bool(getattr(args, "json", False)))
    args.out = out
    library = logging.getLogger("oidc_logout")
    level_before = library.level
    _quiet_library_logs(args, debug)
    try:
        return int(args.func(args))
    except CLIError as exc:
        _trace(debug)
        out.error(exc.message, exc.hint)
        return exc.code
    except HostTableMissing as exc:
        # The host's model is fine, the database is not the host's (or lacks its table).
        _trace(debug)
        out.error(str(exc), "`oidc-logout config show` says which database this is")
        return EXIT_DATABASE
    except SettingsError as exc:
        # One line naming the setting, the usage exit code: a typo never runs with a default.
        _trace(debug)
        out.error(str(exc), "`oidc-logout config show` prints every setting and where it comes from")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from sqlalchemy.exc import DBAPIError

        from .errors import NotFound, OIDCLogoutError
        from .storage.schema import SchemaNotAtHead

        _trace(debug)
        if isinstance(exc, SchemaNotAtHead):
            out.error(str(exc).split("; ")[0], "run `oidc-logout migrate` first")
            return EXIT_DATABASE
        if isinstance(exc, DBAPIError):
            err = database_error(_loaded_or_default(args), exc)
            out.error(err.message, err.hint)
            return EXIT_DATABASE
        if isinstance(exc, OIDCLogoutError):
            out.error(f"{exc.error}: {exc.description}")
            return EXIT_NOT_FOUND if isinstance(exc, NotFound) else EXIT_FAILED
        out.error(f"{type(exc).__name__}: {exc}", "run again with --debug for the traceback")
        return EXIT_INTERNAL
    finally:
        library.setLevel(level_before)  # main() may run inside a longer process (tests, a host)


#: Long-running commands whose log lines are their output (they configure logging themselves).
_LOGGING_COMMANDS = frozenset({"worker", "serve", "demo"})


def _quiet_library_logs(args: argparse.Namespace, debug: bool) -> None:
    """One-shot commands report outcomes in their own summary (one line per RP, not one per
    delivery): the library's per-attempt log lines show only with ``--debug``."""
    if getattr(args, "command", None) in _LOGGING_COMMANDS:
        return
    logging.getLogger("oidc_logout").setLevel(logging.DEBUG if debug else logging.ERROR)
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")


def _trace(debug: bool) -> None:
    if debug:
        traceback.print_exc()


def _loaded_or_default(args: argparse.Namespace) -> Settings:
    try:
        return _loaded(args).settings
    except SettingsError:
        return Settings()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["main"]
