"""oidc-logout: run the demo, terminate sessions, inspect and retry deliveries, run a
delivery worker, rotate client secrets and signing keys, expire sessions, migrate the schema."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from . import __version__
from .config import SettingsError, settings_from_env
from .provider import Provider
from .vocabulary import Channel, DeliveryState

DEFAULT_PASSWORD = "wonderland"


def _provider(args: argparse.Namespace, migrate: bool | None = None) -> Provider:
    """The OP core as an operator command needs it: no user directory (operators terminate,
    inspect and rotate; they never sign anyone in). ``migrate``: see ``Provider.setup``."""
    settings = settings_from_env()
    if getattr(args, "database_url", None):
        settings = settings.replace(database_url=args.database_url)
    provider = Provider(settings)
    provider.setup(migrate=migrate)
    return provider


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


def cmd_terminate(args: argparse.Namespace) -> int:
    from .errors import OIDCLogoutError
    from .termination import by_client, by_sid, by_subject

    provider = _provider(args)
    target = by_sid(args.sid) if args.sid else by_subject(args.sub) if args.sub else by_client(args.client)
    provider.start_background() if args.wait > 0 else None
    try:
        outcome = provider.terminate_now(
            target,
            reason=args.reason,
            initiator=f"cli:{os.environ.get('USER', 'unknown')}",
            include_offline=args.include_offline,
            wait=args.wait,
        )
    except OIDCLogoutError as exc:
        print(f"error: {exc.error}: {exc.description}", file=sys.stderr)
        return 2
    with provider.session_factory() as db:
        report = provider.termination_report(db, outcome.termination_id)
    provider.stop_background()
    print(json.dumps(report, indent=2))
    unconfirmed = [
        d
        for d in (report or {}).get("deliveries", [])
        if d["channel"] == Channel.BACKCHANNEL and d["state"] != DeliveryState.DELIVERED
    ]
    for d in unconfirmed:
        # The termination committed (sessions ended, tokens revoked); these RPs have not
        # confirmed yet (or refused): say which, and exit non-zero.
        print(
            f"oidc-logout: RP {d['client_id']} ({d['target_uri']}) has not confirmed the logout: "
            f"{d['state']}{': ' + d['last_error'] if d.get('last_error') else ''}",
            file=sys.stderr,
        )
    return 1 if unconfirmed else 0


def cmd_deliveries(args: argparse.Namespace) -> int:
    from .delivery.outbox import list_deliveries, summary
    from .provider import delivery_to_dict

    provider = _provider(args)
    with provider.session_factory() as db:
        states = tuple(args.state) if args.state else None
        channel = args.channel or None
        rows = [
            delivery_to_dict(d, attempts=False)
            for d in list_deliveries(db, states, channel=channel, limit=args.limit, newest_first=True)
        ]
        print(json.dumps({"summary": summary(db, channel), "deliveries": rows}, indent=2))
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from .delivery.outbox import retry_now

    provider = _provider(args)
    with provider.session_factory.begin() as db:
        n = retry_now(db, states=tuple(args.state or ("failed", "dead")), ids=args.id or None)
    print(json.dumps({"requeued": n}))
    if args.now:
        from .delivery.dispatcher import Dispatcher

        d = Dispatcher(provider.session_factory, provider.keyring, provider.settings)
        print(json.dumps(d.run_once(), default=str))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from .delivery.worker import run_worker

    settings = settings_from_env()
    if args.database_url:
        settings = settings.replace(database_url=args.database_url)
    if args.db_unreachable_exit_after is not None:
        settings = settings.replace(worker_db_unreachable_exit_after=args.db_unreachable_exit_after)
    return int(run_worker(settings) or 0)


def cmd_rotate_secret(args: argparse.Namespace) -> int:
    provider = _provider(args)
    secret, outcome = provider.rotate_client_secret(
        args.client,
        end_previous=not args.keep_previous,
        reason=args.reason,
        initiator=f"cli:{os.environ.get('USER', 'unknown')}",
    )
    out: dict[str, Any] = {"client_id": args.client, "client_secret": secret}
    if outcome:
        out["termination_id"] = outcome.termination_id
        out["deliveries"] = len(outcome.delivery_ids)
    print(json.dumps(out, indent=2))
    return 0


def cmd_rotate_key(args: argparse.Namespace) -> int:
    from .keys import rotate_key

    provider = _provider(args)
    period = (
        0.0
        if args.immediately
        else (args.publish_for if args.publish_for is not None else provider.settings.key_rollover_period)
    )
    with provider.session_factory.begin() as db:
        kid, activates = rotate_key(db, args.alg, publish_for=period)
    # Two-step rollover: the new key is in the JWKS of every OP instance within the key ring's
    # cache TTL (30 s) and signs only from ``activates_at``; the key it replaces signs until
    # then and stays published afterwards, so tokens it signed still verify.
    print(json.dumps({"alg": args.alg, "kid": kid, "activates_at": activates.isoformat()}))
    return 0


def cmd_expire(args: argparse.Namespace) -> int:
    provider = _provider(args)
    print(json.dumps({"terminations": provider.expire_sessions()}))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    # Always migrates, whatever OIDC_LOGOUT_AUTO_MIGRATE says: this is the deploy step.
    _provider(args, migrate=True)
    print("schema is at head")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="oidc-logout", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser(
        "demo",
        help="run the demo IdP with sample RPs",
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

    t = sub.add_parser("terminate", help="end sessions, revoke tokens and notify RPs")
    g = t.add_mutually_exclusive_group(required=True)
    g.add_argument("--sid", help="one OP session")
    g.add_argument("--sub", help="every session of a subject")
    g.add_argument("--client", help="everything of one client (kill switch)")
    t.add_argument("--reason", required=True)
    t.add_argument("--include-offline", action="store_true", help="also revoke offline_access refresh tokens")
    t.add_argument("--wait", type=float, default=10.0, help="seconds to wait for deliveries (default 10)")
    t.add_argument("--database-url")
    t.set_defaults(func=cmd_terminate)

    dl = sub.add_parser("deliveries", help="list RP notifications, newest first (every state, both channels)")
    dl.add_argument(
        "--state",
        action="append",
        choices=[str(s) for s in DeliveryState],
        help="filter by state (repeatable)",
    )
    dl.add_argument("--channel", choices=[str(c) for c in Channel], help="only this channel")
    dl.add_argument("--limit", type=int, default=100, help="at most this many rows (newest first)")
    dl.add_argument("--database-url")
    dl.set_defaults(func=cmd_deliveries)

    r = sub.add_parser("retry", help="requeue failed or dead deliveries")
    r.add_argument(
        "--state",
        action="append",
        choices=[str(DeliveryState.FAILED), str(DeliveryState.DEAD), str(DeliveryState.PENDING)],
        help="states to requeue (default failed and dead)",
    )
    r.add_argument("--id", type=int, action="append", help="only these delivery ids")
    r.add_argument("--now", action="store_true", help="deliver them now in this process")
    r.add_argument("--database-url")
    r.set_defaults(func=cmd_retry)

    w = sub.add_parser("worker", help="run a delivery worker (PostgreSQL, SKIP LOCKED)")
    w.add_argument("--database-url")
    w.add_argument(
        "--db-unreachable-exit-after",
        type=float,
        metavar="SECONDS",
        help="exit 69 once the database has been unreachable this long (0: never; "
        "default OIDC_LOGOUT_WORKER_DB_UNREACHABLE_EXIT_AFTER, 300)",
    )
    w.set_defaults(func=cmd_worker)

    rs = sub.add_parser("rotate-secret", help="rotate a client secret, ending what the old one issued")
    rs.add_argument("--client", required=True)
    rs.add_argument("--reason", default="client secret rotated")
    rs.add_argument("--keep-previous", action="store_true", help="do not end grants of the previous secret")
    rs.add_argument("--database-url")
    rs.set_defaults(func=cmd_rotate_secret)

    rk = sub.add_parser(
        "rotate-key",
        help="publish a new signing key now, sign with it after "
        "the rollover period (the old one stays published)",
    )
    rk.add_argument("--alg", default="RS256", choices=["RS256", "PS256", "ES256"])
    rk.add_argument(
        "--publish-for",
        type=float,
        metavar="SECONDS",
        help="seconds the new key is published before it signs "
        "(default: OIDC_LOGOUT_KEY_ROLLOVER_PERIOD, 3600)",
    )
    rk.add_argument(
        "--immediately",
        action="store_true",
        help="sign with the new key at once (a compromised key): RPs holding a cached "
        "JWKS refuse tokens until they refetch; those deliveries are retried",
    )
    rk.add_argument("--database-url")
    rk.set_defaults(func=cmd_rotate_key)

    e = sub.add_parser("expire", help="end sessions past their idle or absolute lifetime now")
    e.add_argument("--database-url")
    e.set_defaults(func=cmd_expire)

    m = sub.add_parser("migrate", help="bring the database schema to head (Alembic)")
    m.add_argument("--database-url")
    m.set_defaults(func=cmd_migrate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        # One line naming the setting, the usage exit code: a typo never runs with a default.
        print(f"oidc-logout: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["main"]
