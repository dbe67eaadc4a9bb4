"""The demo IdP (``oidc_logout.demo.idp.create_idp_app``) as a benchmark server process.

Configured by environment (see :func:`bench.common.op_env`). ``python -m bench.op_server``
serves it with werkzeug (threaded, one process, like ``oidc-logout demo``); gunicorn loads
``bench.op_server:wsgi_app()``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys

from oidc_logout.config import Settings
from oidc_logout.demo.idp import create_idp_app

PASSWORD = "bench-password"


def wsgi_app():  # type: ignore[no-untyped-def]
    settings = Settings(
        issuer=os.environ["BENCH_OP_ISSUER"],
        database_url=os.environ["BENCH_OP_DB"],
        dev_mode=True,
        expiry_sweep_interval=0,
        **json.loads(os.environ.get("BENCH_OP_SETTINGS") or "{}"),
    )
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    return create_idp_app(
        settings,
        password=PASSWORD,
        secret_key="bench-secret-key-" + "k" * 20,
        start_background=os.environ.get("BENCH_OP_BACKGROUND", "1") == "1",
    )


def main() -> None:
    from werkzeug.serving import make_server

    app = wsgi_app()
    port = int(os.environ["BENCH_OP_ISSUER"].rsplit(":", 1)[1])
    server = make_server("127.0.0.1", port, app, threaded=True)
    server.socket.listen(1024)

    def _stop(*_a):  # type: ignore[no-untyped-def]
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    print(f"READY {port}", flush=True)
    try:
        server.serve_forever()
    finally:
        app.extensions["oidc_logout"].provider.stop_background(2.0)
    sys.exit(0)


if __name__ == "__main__":
    main()
