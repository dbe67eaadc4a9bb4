"""``oidc-logout demo``: the demo IdP and its sample RPs, each on its own loopback port."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

from werkzeug.serving import make_server

from .._redact import install_server_log_redaction
from ..config import settings_from_env
from .idp import create_idp_app, read_clients_file
from .rp_app import RPConfig, create_rp_app
from .ssf_app import create_ssf_rp_app, ssf_client_metadata, ssf_rp_config

SAMPLE_RPS = [
    ("Notes", "demo-notes", True, False),
    ("Calendar", "demo-calendar", True, False),
    ("Files", "demo-files", True, True),
    ("Wiki", "demo-wiki", False, True),
]


def sample_rps(issuer: str, host: str, first_port: int) -> list[RPConfig]:
    return [
        RPConfig(
            name=name,
            client_id=cid,
            client_secret=f"{cid}-secret-change-me",
            base_url=f"http://{host}:{first_port + i}",
            issuer=issuer,
            backchannel=back,
            frontchannel=front,
        )
        for i, (name, cid, back, front) in enumerate(SAMPLE_RPS)
    ]


def run_demo(
    *,
    host: str,
    port: int,
    database_url: str,
    password: str,
    clients_file: str | None,
    dev: bool,
    rps: bool = True,
) -> int:
    if database_url.startswith("sqlite:///") and not database_url.startswith("sqlite:////"):
        Path(database_url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    install_server_log_redaction()
    issuer = f"http://{host}:{port}"
    settings = settings_from_env().replace(issuer=issuer, database_url=database_url, dev_mode=dev)
    rp_configs = sample_rps(issuer, host, port + 1) if rps else []
    clients = [c.client_metadata() for c in rp_configs]
    # The Shared Signals receiver: the next port after the sample RPs, no logout URI registered.
    ssf_cfg = ssf_rp_config(issuer, f"http://{host}:{port + 1 + len(rp_configs)}") if rps else None
    if ssf_cfg is not None:
        clients.append(ssf_client_metadata(ssf_cfg))
    clients.append(
        {
            "client_id": "demo-admin",
            "client_secret": "demo-admin-secret-change-me",
            "client_name": "Demo admin (termination API)",
            "grant_types": ["client_credentials"],
            "response_types": [],
            "scope": f"{settings.admin_scope} oidc_logout:introspect",
            "token_endpoint_auth_method": "client_secret_basic",
        }
    )
    if clients_file:
        clients.extend(read_clients_file(clients_file))
    idp = create_idp_app(settings, password=password, clients=clients)
    servers = [make_server(host, port, idp, threaded=True)]
    servers += [
        make_server(host, int(c.base_url.rsplit(":", 1)[1]), create_rp_app(c), threaded=True)
        for c in rp_configs
    ]
    ssf_demo = None
    if ssf_cfg is not None:
        ssf_app, ssf_demo = create_ssf_rp_app(ssf_cfg)
        servers.append(make_server(host, int(ssf_cfg.base_url.rsplit(":", 1)[1]), ssf_app, threaded=True))
    if dev:
        print("Development mode is ON: http and loopback URIs are accepted (never use this in production).")
    print(f"Issuer:    {issuer}")
    print(f"Discovery: {issuer}/.well-known/openid-configuration")
    print(f"Users:     alice, bob   password: {password!r}")
    for c in rp_configs:
        channels = " + ".join(
            x for x, on in (("back-channel", c.backchannel), ("front-channel", c.frontchannel)) if on
        )
        print(f"RP {c.name:9} {c.base_url}   client_id={c.client_id} ({channels} logout)")
    if ssf_cfg is not None:
        print(
            f"SSF receiver {ssf_cfg.base_url}   client_id={ssf_cfg.client_id} (Shared Signals push stream only)"
        )
    print(
        "Admin API client: demo-admin / demo-admin-secret-change-me (client_credentials, "
        f"scope {settings.admin_scope})"
    )
    print(json.dumps({"sample_client": rp_configs[0].client_metadata() if rp_configs else None}, indent=2))
    print("Sign in at each RP, then sign out at one: every RP session ends. Ctrl-C stops the demo.")
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    if ssf_demo is not None:
        # The OP serves now: create the receiver's push stream (one log line if it cannot).
        threading.Thread(target=ssf_demo.start_stream, daemon=True, name="ssf-stream").start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    for s in servers:
        s.shutdown()
    idp.extensions["oidc_logout"].provider.stop_background()
    return 0


__all__ = ["SAMPLE_RPS", "run_demo", "sample_rps"]
