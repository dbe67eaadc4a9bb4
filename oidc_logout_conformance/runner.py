"""``oidc-logout-conformance``: run the op or rp profile and write report.json + report.html.

Exit status: 0 when no check failed and every core scenario ran (warnings and skips
allowed), 1 when a check failed, 2 on a usage or setup error, 3 when no check failed but a
core scenario could not execute (result ``incomplete``: a run that proved nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .adapters import FormLoginAdapter, Hints, HttpSessionAdapter, LoginSessionAdapter, load_object
from .model import Recorder
from .net import TargetNotAllowed, check_target
from .report import write


def _kv(values: list[str] | None, option: str = "--adapter-arg") -> dict[str, str]:
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{option} {item!r} must be key=value")
        out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="oidc-logout-conformance",
        description="OIDC logout conformance suite (back-channel, front-channel, "
        "RP-initiated logout, RFC 7009, RFC 7662)",
    )
    sub = p.add_subparsers(dest="profile", required=True)

    op = sub.add_parser("op", help="test an OpenID Provider")
    op.add_argument("--issuer", required=True, help="the OP's issuer URL (discovery is fetched from it)")
    op.add_argument(
        "--login-adapter",
        default="form",
        help="'form' (built-in HTML form login) or module:attribute of a LoginAdapter factory",
    )
    op.add_argument("--username", help="End-User username for the form adapter")
    op.add_argument("--password", help="End-User password for the form adapter")
    op.add_argument("--username-field", default="username")
    op.add_argument("--password-field", default="password")
    op.add_argument(
        "--field",
        action="append",
        metavar="NAME=VALUE",
        help="form adapter hint: set this field on any OP form that has it (repeatable)",
    )
    op.add_argument(
        "--submit",
        action="append",
        metavar="NAME[=VALUE]",
        help="form adapter hint: press this button when a form has several, e.g. a consent or "
        "logout confirmation button (repeatable; default: the first button that does not decline)",
    )
    op.add_argument(
        "--client-config",
        help="JSON array of pre-registered clients (client_id, client_secret, "
        "redirect_uris, post_logout_redirect_uris, backchannel_logout_uri, ...); "
        "default: register clients dynamically (RFC 7591)",
    )
    op.add_argument(
        "--registration-token", help="initial access token for dynamic registration (RFC 7591 §3)"
    )
    op.add_argument("--clients", type=int, default=2, help="clients to register (>= 2)")
    op.add_argument(
        "--scope",
        default="openid",
        help="scope requested (no offline_access: §2.7 checks refresh tokens of the session)",
    )
    op.add_argument(
        "--prompt",
        default="",
        help="prompt for the main session's authorization requests (default: none sent)",
    )
    op.add_argument(
        "--token-scope",
        default="openid offline_access",
        help="scope of the RFC 7009/7662 session (offline_access is dropped when the OP does not "
        "list it in scopes_supported)",
    )
    op.add_argument(
        "--token-prompt",
        default="consent",
        help="prompt of the RFC 7009/7662 session: Core §11 lets OPs issue refresh tokens for "
        "offline_access only with consent ('' to send none)",
    )
    op.add_argument("--receiver-host", default="127.0.0.1")
    op.add_argument(
        "--receiver-port",
        type=int,
        default=0,
        help="port of the runner's RP endpoints (fixed when using --client-config)",
    )
    op.add_argument(
        "--wait", type=float, default=10.0, help="max seconds to wait for back-channel deliveries"
    )
    op.add_argument("--settle", type=float, default=1.0, help="extra seconds to catch duplicate deliveries")
    op.add_argument(
        "--browser",
        metavar="CHROMIUM",
        help="path of a Chromium executable (e.g. /usr/bin/chromium; needs the playwright package): "
        "load the logged-out page in it and watch the front-channel iframes and the post-logout "
        "redirect arrive (FCL-4-browser; skipped without this option)",
    )

    rp = sub.add_parser("rp", help="test a relying party's back-channel (and front-channel) logout endpoints")
    rp.add_argument("--backchannel-uri", required=True)
    rp.add_argument(
        "--frontchannel-uri",
        help="the RP's frontchannel_logout_uri (optional: the RP-FCL checks are skipped without it)",
    )
    rp.add_argument("--client-id", required=True, help="the RP's client_id (the aud of the logout tokens)")
    rp.add_argument("--issuer-host", default="127.0.0.1")
    rp.add_argument(
        "--issuer-port",
        type=int,
        default=0,
        help="port of the runner's OP; the RP must trust http://HOST:PORT as issuer",
    )
    rp.add_argument(
        "--client-secret",
        help="the RP's client_secret at the runner's OP (client_secret_basic or _post at /token); "
        "none: a public client (PKCE required)",
    )
    rp.add_argument(
        "--redirect-uri",
        action="append",
        help="a redirect URI registered for the RP at the runner's OP (repeatable); none: any "
        "loopback redirect URI is accepted",
    )
    rp.add_argument(
        "--test-user",
        default="conformance-user",
        help="sub of the End-User the runner's OP signs in when a user agent has no OP session",
    )
    rp.add_argument(
        "--session-adapter",
        default=None,
        help="'login' (built-in: sign in through the runner's OP and watch --session-check-url, as "
        "a user would), 'http' (built-in: an RP test hook at --session-login-url creates the "
        "session) or module:attribute of a SessionAdapter factory; none: session checks are skipped",
    )
    rp.add_argument(
        "--session-login-url",
        help="http adapter: URL creating an RP session, with {sub} and {sid}; login adapter "
        "(optional): where a user starts signing in (default: --session-check-url)",
    )
    rp.add_argument(
        "--session-check-url",
        help="a protected URL of the RP: answers --session-active-status while the session lives "
        "(login adapter: a redirect or 401/403 means logged out)",
    )
    rp.add_argument("--session-active-status", type=int, default=200)
    rp.add_argument("--wait-for-rp", type=float, default=10.0, help="seconds to wait for the RP to come up")

    for sp in (op, rp):
        sp.add_argument("--report-dir", required=True)
        sp.add_argument("--adapter-arg", action="append", help="key=value for a module:attribute adapter")
        sp.add_argument(
            "--allow-remote",
            action="store_true",
            help="allow non-loopback targets (default: 127.0.0.1/::1/localhost only)",
        )
    return p


def _login_adapter(args: argparse.Namespace) -> Any:
    if args.login_adapter == "form":
        if not args.username or not args.password:
            raise SystemExit("the form login adapter needs --username and --password")
        hints = Hints(fields=_kv(args.field, "--field"), submit=list(args.submit or []))
        return FormLoginAdapter(args.username, args.password, args.username_field, args.password_field, hints)
    return load_object(args.login_adapter, **_kv(args.adapter_arg))


def _session_adapter(args: argparse.Namespace) -> Any:
    if args.session_adapter is None:
        return None
    if args.session_adapter == "login":
        if not args.session_check_url:
            raise SystemExit("the login session adapter needs --session-check-url (a protected URL)")
        for url in (args.session_login_url, args.session_check_url):
            if url:
                check_target(url, args.allow_remote)
        return LoginSessionAdapter(
            args.session_check_url, args.session_login_url, args.session_active_status, args.allow_remote
        )
    if args.session_adapter == "http":
        if not args.session_login_url or not args.session_check_url:
            raise SystemExit("the http session adapter needs --session-login-url and --session-check-url")
        for url in (args.session_login_url, args.session_check_url):
            check_target(url.replace("{sub}", "x").replace("{sid}", "x"), args.allow_remote)
        return HttpSessionAdapter(args.session_login_url, args.session_check_url, args.session_active_status)
    return load_object(args.session_adapter, **_kv(args.adapter_arg))


def run(args: argparse.Namespace) -> dict[str, Any]:
    rec = Recorder(args.profile)
    if args.profile == "op":
        from .op_profile import OPOptions, OPRun

        check_target(args.issuer, args.allow_remote)
        config = None
        if args.client_config:
            config = json.loads(Path(args.client_config).read_text())
            if not isinstance(config, list):
                raise SystemExit("--client-config must be a JSON array")
        opts = OPOptions(
            issuer=args.issuer,
            login_adapter=_login_adapter(args),
            client_config=config,
            clients=max(2, args.clients),
            receiver_host=args.receiver_host,
            receiver_port=args.receiver_port,
            wait=args.wait,
            settle=args.settle,
            allow_remote=args.allow_remote,
            scope=args.scope,
            prompt=args.prompt,
            token_scope=args.token_scope,
            token_prompt=args.token_prompt,
            registration_token=args.registration_token,
            browser=args.browser,
        )
        rec.meta.update(
            {
                "issuer": args.issuer,
                "login_adapter": args.login_adapter,
                "clients": "configured" if config else f"dynamic x{opts.clients}",
                "wait": args.wait,
                "scope": args.scope,
                "browser": args.browser,
            }
        )
        OPRun(opts, rec).run()
    else:
        from .rp_profile import RPOptions, run_rp

        opts_rp = RPOptions(
            backchannel_uri=args.backchannel_uri,
            frontchannel_uri=args.frontchannel_uri,
            client_id=args.client_id,
            sessions=_session_adapter(args),
            issuer_host=args.issuer_host,
            issuer_port=args.issuer_port,
            wait_for_rp=args.wait_for_rp,
            allow_remote=args.allow_remote,
            client_secret=args.client_secret,
            redirect_uris=tuple(args.redirect_uri or ()),
            test_user=args.test_user,
        )
        for uri in opts_rp.redirect_uris:
            check_target(uri, args.allow_remote)
        run_rp(opts_rp, rec)
    return write(rec, args.report_dir)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except TargetNotAllowed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = report["summary"]
    print(
        f"{args.profile} profile: {s['pass']} pass, {s['fail']} fail, {s['warning']} warning, "
        f"{s['skipped']} skipped -> {Path(args.report_dir) / 'report.html'}"
    )
    for c in report["checks"]:
        if c["status"] in ("fail", "warning"):
            print(f"  {c['status'].upper():7} {c['id']}: {c['reason']}")
    for sc in report["scenarios"]:
        if sc["status"] == "incomplete":
            print(f"  INCOMPLETE scenario {sc['name']}: stopped at {sc['step']}: {sc['reason']}")
    print(f"result: {report['result']}")
    return EXIT[report["result"]]


#: Exit status per result (2 is a usage error).
EXIT = {"pass": 0, "fail": 1, "incomplete": 3}


if __name__ == "__main__":
    raise SystemExit(main())
