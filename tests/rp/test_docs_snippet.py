"""The Flask snippet in docs/rp.md really runs and really logs a user out."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from .conftest import FakeOP
from .tokens import logout_token

DOC = Path(__file__).resolve().parents[2] / "docs" / "rp.md"


def test_flask_snippet_from_the_docs_ends_a_session_on_backchannel_logout(op: FakeOP) -> None:
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[0]
    code = code.replace('"https://op.example.com"', repr(op.issuer)).replace('"my-client"', '"rp-client-1"')
    ns: dict[str, Any] = {"__name__": "docs_snippet"}
    exec(compile(code, str(DOC), "exec"), ns)
    app = ns["app"]

    @app.get("/cb")
    def cb() -> str:
        ns["after_oidc_callback"]({"sub": "alice", "sid": "sid-doc"})
        return "ok"

    @app.get("/me")
    def me() -> str:
        from flask import session

        return session.get("user", "anonymous")

    client = app.test_client()
    client.get("/cb")
    assert client.get("/me").text == "alice"
    resp = client.post(
        "/oidc/backchannel-logout",
        data={"logout_token": logout_token(op.issuer, sid="sid-doc", now=time.time())},
    )
    assert resp.status_code == 200
    assert client.get("/me").text == "anonymous"
