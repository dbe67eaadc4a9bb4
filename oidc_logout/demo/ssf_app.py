"""The demo's Shared Signals receiver: a sample RP that registers no logout URI at all and
learns about sign-outs only through an SSF push stream (CAEP session-revoked), built on
:mod:`oidc_logout.rp` (:class:`~oidc_logout.rp.SSFReceiver` and its Flask adapter).

At demo start :meth:`SSFDemo.start_stream` reads the OP's Transmitter Configuration Metadata
(``/.well-known/ssf-configuration``, SSF 1.0 §7.2), gets a management token by client
credentials, creates a push stream to this app and asks for a verification event. Without a
transmitter it logs one line and the app keeps serving (sign-in works, no SETs arrive).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response
from markupsafe import escape

from ..rp import DiscoveryClient, JWKSCache, MemoryReplayCache, SETValidator
from ..rp.errors import OutboundHTTPError
from ..rp.flask_ssf import SSFPush
from ..rp.ssf import ACCOUNT_DISABLED, CREDENTIAL_CHANGE, SESSION_REVOKED
from ..rp.ssf_receiver import SSFReceiver
from ..rp.ssf_stream import StreamClient, client_credentials_token, fetch_transmitter_metadata
from .rp_app import ID_TOKEN_ALG, PAGE, RPConfig, create_rp_app

__all__ = ["SSF_EVENTS", "SSFDemo", "create_ssf_rp_app", "ssf_rp_config"]

log = logging.getLogger(__name__)

#: What the demo receiver asks for (CAEP Interoperability Profile §3: session revocation and
#: credential change; RISC account-disabled too).
SSF_EVENTS = (SESSION_REVOKED, CREDENTIAL_CHANGE, ACCOUNT_DISABLED)
#: CAEP Interoperability Profile §2.7.2 scopes of the stream management API.
SSF_SCOPES = "ssf.manage ssf.read"


def ssf_rp_config(issuer: str, base_url: str) -> RPConfig:
    """The receiver's OIDC client: no back-/front-channel logout URI (SSF is its only channel)."""
    return RPConfig(
        name="Shared Signals receiver",
        client_id="demo-ssf-receiver",
        client_secret="demo-ssf-receiver-secret-change-me",
        base_url=base_url,
        issuer=issuer,
        backchannel=False,
        frontchannel=False,
    )


def ssf_client_metadata(cfg: RPConfig) -> dict[str, Any]:
    """Its client registration: sign-in (code flow) plus client credentials for the stream API."""
    meta = cfg.client_metadata()
    meta["grant_types"] = [*meta["grant_types"], "client_credentials"]
    meta["scope"] = f"{meta['scope']} {SSF_SCOPES}"
    meta["client_name"] = cfg.name
    return meta


@dataclass
class SSFDemo:
    """The receiver app's stream bootstrap and what its page shows."""

    cfg: RPConfig
    receiver: SSFReceiver
    validator: SETValidator
    push_authorization: str
    #: One line for the page when the stream could not be set up (None: it was, or not yet).
    problem: str | None = None
    stream_id: str | None = None
    _started: threading.Event = field(default_factory=threading.Event)

    def start_stream(self) -> bool:
        """Create and verify a push stream at the OP's transmitter; False (one log line) if
        there is none or it refuses."""
        issuer = self.cfg.issuer
        try:
            meta = fetch_transmitter_metadata(issuer)
        except OutboundHTTPError as exc:
            self.problem = f"No SSF transmitter at {issuer} ({exc.reason}); serving without a stream."
            log.warning("SSF receiver: %s", self.problem)
            self._started.set()
            return False
        try:
            op = DiscoveryClient(issuer).get()
            token = client_credentials_token(
                op.token_endpoint or f"{issuer}/token", self.cfg.client_id, self.cfg.client_secret, SSF_SCOPES
            )
            client = StreamClient(meta, token)
            stream = client.create_push_stream(
                f"{self.cfg.base_url}/ssf/events",
                SSF_EVENTS,
                authorization_header=self.push_authorization,
                description="oidc-logout demo: Shared Signals receiver",
                # This transmitter's extension: session-revoked names the user and the OP session.
                extra={"subject_format": "complex"},
            )
            # SSF 1.0 §8.1.1: aud is Transmitter-Supplied; §4.1.4: keys from its jwks_uri.
            self.validator.audience = stream.aud
            if meta.jwks_uri:
                self.validator.keys = JWKSCache(meta.jwks_uri)
            self.receiver.critical_subject_members = frozenset(meta.critical_subject_members)
            self.receiver.set_stream(stream.stream_id)
            self.stream_id = stream.stream_id
            client.request_verification(stream.stream_id, self.receiver)
        except OutboundHTTPError as exc:
            self.problem = f"The SSF transmitter at {issuer} refused the push stream ({exc.reason})."
            log.warning("SSF receiver: %s", self.problem)
            return False
        finally:
            self._started.set()
        log.info("SSF receiver: push stream created at %s", issuer)
        return True

    def wait_started(self, timeout: float) -> bool:
        """True once :meth:`start_stream` has finished (either way) within ``timeout`` seconds."""
        return self._started.wait(timeout)

    def status_html(self) -> str:
        """The stream's state and the SETs received, with the local sessions each one ended."""
        s = self.receiver.stream
        if self.problem:
            head = f"<p id='ssf-problem'>{escape(self.problem)}</p>"
        elif self.stream_id is None:
            head = "<p id='ssf-stream'>Setting up the push stream…</p>"
        else:
            verified = (
                time.strftime("%H:%M:%S", time.localtime(s.verified_at)) if s.verified_at else "not yet"
            )
            head = (
                f"<p id='ssf-stream'>Push stream <code>{escape(self.stream_id[:12])}</code> · "
                f"verified: <span id='ssf-verified'>{escape(verified)}</span>"
                + (f" · status: {escape(s.status)}" if s.status else "")
                + "</p>"
            )
        rows = []
        for r in reversed(self.receiver.history):
            ended = ", ".join(_short(x) for x in sorted(r.ended)) or "–"
            rows.append(
                "<tr class='ssf-event'>"
                f"<td>{escape(time.strftime('%H:%M:%S', time.localtime(r.received_at)))}</td>"
                f"<td class='ssf-type'>{escape(r.event_type.rsplit('/', 1)[-1])}</td>"
                f"<td>{escape(r.subject)}</td><td class='ssf-outcome'>{escape(r.outcome)}</td>"
                f"<td class='ssf-ended'>{escape(ended)}</td></tr>"
            )
        table = (
            "<table id='ssf-events'><tr><th>time</th><th>event</th><th>subject</th>"
            "<th>outcome</th><th>local sessions ended</th></tr>" + "".join(rows) + "</table>"
            if rows
            else "<p id='ssf-none'>No security events received yet.</p>"
        )
        return "<h2>Shared Signals</h2>" + head + table


def _short(local_id: str) -> str:
    # Local session ids are the session cookies' values: show a digest, never the id.
    return "session " + hashlib.sha256(local_id.encode()).hexdigest()[:8]


def create_ssf_rp_app(cfg: RPConfig) -> tuple[Flask, SSFDemo]:
    """The sample RP with an SSF push endpoint at ``/ssf/events`` and the received SETs shown
    on its home page; call :meth:`SSFDemo.start_stream` once the OP is serving."""
    holder: dict[str, SSFDemo] = {}
    app = create_rp_app(cfg, extra_home=lambda: holder["demo"].status_html())
    rp_state = app.extensions["oidc_logout_rp"]
    validator = SETValidator(
        issuer=cfg.issuer,
        # Replaced by the stream's aud once the stream exists (SSF 1.0 §8.1.1).
        audience=cfg.client_id,
        keys=JWKSCache(discovery=DiscoveryClient(cfg.issuer)),
        allowed_algs=[ID_TOKEN_ALG],
        # The back-channel logout replay store of this RP (SET jtis are namespaced in it).
        replay_cache=shared
        if (shared := rp_state.receiver.validator.replay_cache) is not None
        else MemoryReplayCache(),
    )
    push_authorization = f"Bearer {secrets.token_urlsafe(24)}"
    ssf = SSFPush(app, validator=validator, push_authorization=push_authorization)
    assert ssf.receiver is not None
    demo = SSFDemo(cfg=cfg, receiver=ssf.receiver, validator=validator, push_authorization=push_authorization)
    holder["demo"] = demo

    @app.get("/ssf")
    def ssf_page() -> Any:
        resp = Response(PAGE.format(title=escape(cfg.name), body=demo.status_html()))
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        return resp

    return app, demo
