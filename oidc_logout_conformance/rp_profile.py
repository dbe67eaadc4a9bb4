"""The ``rp`` profile: the runner is the OP (issuer, discovery, JWKS, a sign-in that
approves at once, on loopback) and sends valid and invalid logout tokens to the RP's back-channel logout endpoint, then (with
``--frontchannel-uri``) front-channel logout requests to its front-channel logout URI."""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests

from .adapters import SessionAdapter
from .checks.rp_backchannel import RPChecks
from .checks.rp_frontchannel import FC_CHECKS, RPFrontChannelChecks
from .model import Recorder, Status
from .net import check_target
from .rp_op import RunnerOP


@dataclass
class RPOptions:
    backchannel_uri: str
    client_id: str
    sessions: SessionAdapter | None = None
    issuer_host: str = "127.0.0.1"
    issuer_port: int = 0
    wait_for_rp: float = 10.0
    allow_remote: bool = False
    frontchannel_uri: str | None = None
    #: the RP as a client of the runner's OP (sign-in through /authorize and /token):
    #: no secret is a public client; no redirect URIs accepts any loopback one
    client_secret: str | None = None
    redirect_uris: tuple[str, ...] = ()
    #: sub of the End-User a user agent without an OP session is signed in as
    test_user: str = "conformance-user"


def wait_reachable(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=2, allow_redirects=False)
            return True
        except requests.RequestException:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


def run_rp(opts: RPOptions, rec: Recorder, op: RunnerOP | None = None, announce: bool = True) -> None:
    check_target(opts.backchannel_uri, opts.allow_remote)
    if opts.frontchannel_uri:
        check_target(opts.frontchannel_uri, opts.allow_remote)
    own = op is None
    op = op or RunnerOP(opts.issuer_host, opts.issuer_port, opts.test_user)
    op.register_client(opts.client_id, opts.client_secret, opts.redirect_uris)
    bind = getattr(opts.sessions, "bind_op", None)
    if callable(bind):
        bind(op)  # LoginSessionAdapter signs in through this OP
    if own:
        op.start()
    rec.meta.update(
        {
            "issuer": op.issuer,
            "backchannel_uri": opts.backchannel_uri,
            "frontchannel_uri": opts.frontchannel_uri,
            "client_id": opts.client_id,
            "session_adapter": type(opts.sessions).__name__ if opts.sessions else None,
        }
    )
    if announce:
        print(f"ISSUER {op.issuer}", flush=True)
    try:
        if not wait_reachable(opts.backchannel_uri, opts.wait_for_rp):
            rec.record("RP-BCL-2.8-valid", Status.FAIL, f"{opts.backchannel_uri} is not reachable")
            rec.incomplete(
                "backchannel-endpoint",
                "waiting for the RP",
                f"{opts.backchannel_uri} did not answer within {opts.wait_for_rp}s",
            )
            rec.skip_rest("not reached: the back-channel logout URI is not reachable")
            return
        checks = RPChecks(rec, op, opts.backchannel_uri, opts.client_id, opts.sessions)
        checks.run_all()
        if opts.frontchannel_uri:
            RPFrontChannelChecks(
                rec, op.issuer, opts.frontchannel_uri, opts.sessions, checks._establish, checks._active
            ).run_all()
        else:
            for cid in FC_CHECKS:
                rec.skip(cid, "no --frontchannel-uri given")
    finally:
        # How the RP's sessions came to be: through the runner's OP, or a test hook (0 here).
        rec.meta["sign_in"] = {
            "authorization_requests": len(op.server.matching("/authorize")),
            "token_requests": len(op.server.matching("/token", "POST")),
            "id_tokens_issued": len(op.issued),
        }
        if own:
            op.stop()
