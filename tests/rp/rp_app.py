"""A small Flask RP used by the HTTP tests, in-process or as a separate process.

Run as ``python -m tests.rp.rp_app --issuer URL --redis-prefix P`` to serve it on a
loopback port with the Redis backends; it prints ``PORT <n>`` once listening.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, redirect, request, session

from oidc_logout.rp import (
    DiscoveryClient,
    JWKSCache,
    LogoutTokenValidator,
    MemoryReplayCache,
    MemorySessionIndex,
    MemorySessionStore,
)
from oidc_logout.rp.flask import RPLogout

CLIENT_ID = "rp-client-1"


def create_app(
    issuer: str,
    *,
    replay: Any = None,
    index: Any = None,
    store: Any = None,
    clock: Callable[[], float] = time.time,
    **rp_options: Any,
) -> tuple[Flask, RPLogout]:
    """``rp_options`` go to :class:`RPLogout` (e.g. ``frontchannel=True``)."""
    app = Flask(__name__)
    keys = JWKSCache(discovery=DiscoveryClient(issuer, clock=clock), clock=clock)
    validator = LogoutTokenValidator(
        issuer=issuer,
        client_id=CLIENT_ID,
        keys=keys,
        clock=clock,
        replay_cache=replay or MemoryReplayCache(clock=clock),
    )
    rp = RPLogout(
        app,
        validator=validator,
        session_index=index or MemorySessionIndex(),
        session_store=store or MemorySessionStore(clock=clock),
        **rp_options,
    )

    @app.get("/callback")
    def callback() -> str:
        # Stands in for the OIDC callback after the ID token was validated.
        session["user"] = request.args["sub"]
        rp.register_login(sub=request.args["sub"], sid=request.args.get("sid"))
        return "logged in"

    @app.get("/protected")
    def protected() -> Any:
        if "user" not in session:
            return redirect("/login")
        return f"hello {session['user']}"

    @app.get("/logout")
    def logout() -> Any:
        rp.logout_local()
        return redirect("/login")

    return app, rp


def main() -> None:
    import redis
    from werkzeug.serving import make_server

    from oidc_logout.rp.redis import RedisReplayCache, RedisSessionIndex, RedisSessionStore

    parser = argparse.ArgumentParser()
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--redis-prefix", required=True)
    args = parser.parse_args()
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    app, _ = create_app(
        args.issuer,
        replay=RedisReplayCache(client, prefix=args.redis_prefix),
        index=RedisSessionIndex(client, prefix=args.redis_prefix),
        store=RedisSessionStore(client, prefix=args.redis_prefix),
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(f"PORT {server.server_port}", flush=True)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
