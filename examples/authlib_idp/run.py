"""Run the example IdP on werkzeug's threaded server.

    python examples/authlib_idp/run.py --host 127.0.0.1 --port 5000 \\
        --database-url sqlite:///idp.db --password PW [--clients FILE] [--dev]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

from werkzeug.serving import make_server

if __package__:
    from .app import create_app, read_clients_file, seed
else:  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from authlib_idp.app import create_app, read_clients_file, seed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="An OpenID Connect provider built with Authlib + Flask.",
        epilog="Set REGISTRATION_TOKEN in the environment to require that initial access token "
        "for RFC 7591 registration at /oauth/register.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument(
        "--database-url",
        required=True,
        help="SQLAlchemy URL, e.g. sqlite:///idp.db or postgresql+psycopg://user@host/db",
    )
    parser.add_argument("--password", required=True, help="password of the users alice and bob")
    parser.add_argument(
        "--clients",
        metavar="FILE",
        help="JSON array of RFC 7591 client metadata with client_id and client_secret",
    )
    parser.add_argument(
        "--issuer",
        help="the public https URL of this IdP (behind your TLS proxy); default http://HOST:PORT, "
        "which only --dev accepts",
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development mode: accept http and loopback URIs, open registration",
    )
    return parser.parse_args(argv)


def database_url(url: str) -> str:
    """A relative SQLite path is taken from the current directory (Flask-SQLAlchemy would take
    it from the application's instance folder)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        path = Path(url[len(prefix) :]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return url


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dev:
        # Authlib refuses OAuth requests over plain http except on loopback addresses.
        os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"
    host = f"[{args.host}]" if ":" in args.host else args.host
    issuer = args.issuer or f"http://{host}:{args.port}"
    app = create_app(
        {
            "ISSUER": issuer,
            "SQLALCHEMY_DATABASE_URI": database_url(args.database_url),
            # Sessions (who is signed in) do not outlive the process.
            "SECRET_KEY": secrets.token_hex(32),
            "DEV_MODE": args.dev,
            "REGISTRATION_TOKEN": os.environ.get("REGISTRATION_TOKEN") or None,
        }
    )
    try:
        clients = read_clients_file(args.clients) if args.clients else None
        seed(app, password=args.password, clients=clients)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    server = make_server(args.host, args.port, app, threaded=True)
    if args.dev:
        print("Development mode: http and loopback redirect URIs are accepted.", flush=True)
    print(f"Issuer: {issuer}", flush=True)
    print(f"Discovery: {issuer}/.well-known/openid-configuration", flush=True)
    print("Users: alice, bob", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
