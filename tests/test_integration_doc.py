"""docs/integration.md is a program and a diff: every Python block runs, in order, against a
real database, and what it claims happens does happen; every diff block is the adoption of
examples/authlib_idp as the example's files hold it now. The page names only public imports."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

from sqlalchemy import select

from oidc_logout.storage.models import OPSession, Termination

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "integration.md"
EXAMPLE = ROOT / "examples" / "authlib_idp"
PUBLIC_MODULES = {"oidc_logout.op", "oidc_logout.rp", "oidc_logout.testing"}


def _blocks(kind: str = "python") -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), re.S)


def test_integration_doc_names_only_public_modules_and_names():
    text = DOC.read_text()
    modules = set(re.findall(r"\b(oidc_logout(?:\.\w+)+)", text))
    assert modules <= PUBLIC_MODULES | {m + ".Settings" for m in PUBLIC_MODULES}, modules - PUBLIC_MODULES
    for block in _blocks() + _blocks("diff"):
        for names in re.findall(r"from oidc_logout[.\w]* import ([^\n]+)", block):
            assert not any(n.strip().startswith("_") for n in names.split(",")), names


def test_integration_doc_diff_is_the_examples_adoption_and_counts_its_lines():
    """Every added and context line of the doc's diff blocks is a line of the example's
    oauth2.py or routes.py, every removed line is gone from them, and the count the doc
    states is the count of added lines it shows."""
    lines = set()
    for name in ("oauth2.py", "routes.py"):
        lines |= {line.rstrip() for line in (EXAMPLE / name).read_text().splitlines()}
    added = 0
    for block in _blocks("diff"):
        for line in block.splitlines():
            mark, body = line[:1], line[1:].rstrip()
            if mark == "+":
                added += 1
                assert body in lines, f"not in the example: {body!r}"
            elif mark == "-":
                assert body not in lines, f"still in the example: {body!r}"
            elif mark == " " and body.strip():
                assert body in lines, f"context not in the example: {body!r}"
    assert f"{added} non-blank lines added" in " ".join(DOC.read_text().split())


def test_integration_doc_blocks_run_and_do_what_they_say(sqlite_url: str) -> None:
    ns: dict[str, Any] = {
        "__name__": "integration_doc",
        "load_secret": lambda: "doc-secret-" + "x" * 32,
        "ISSUER": "http://127.0.0.1:5999",
        "DATABASE_URL": sqlite_url,
        "BILLING_SECRET": "billing-secret-" + "y" * 24,
    }
    blocks = _blocks()
    assert len(blocks) == 3
    app = None
    try:
        for i, block in enumerate(blocks):
            exec(compile(block, f"{DOC}:block{i}", "exec"), ns)
            if "seed(" in block:
                app = ns["app"]
                _sign_in_through_the_host_login(app)
                ns["_pre_adoption_token"] = _token_issued_the_way_the_before_app_did(app)
    finally:
        if app is not None:
            app.extensions["oidc_logout"].provider.stop_background()

    from examples.authlib_idp.models import OAuth2Token, db

    assert app is not None
    with app.app_context():
        terms = list(db.session.scalars(select(Termination).order_by(Termination.created_at)))
        # terminate_now by subject, then the termination in the host's own transaction
        assert [t.target_kind for t in terms] == ["subject", "subject"]
        assert terms[0].sessions_ended == 1  # the session the host's login started
        assert terms[0].tokens_revoked == 1  # the host token from before adoption
        assert db.session.scalar(select(OPSession).where(OPSession.ended_at.is_(None))) is None
        row = db.session.scalar(
            select(OAuth2Token).where(OAuth2Token.access_token == ns["_pre_adoption_token"])
        )
        assert row is not None and row.access_token_revoked_at > 0 and row.refresh_token_revoked_at > 0
    assert ns["outcome"].termination_id == terms[-1].id


def _sign_in_through_the_host_login(app: Any) -> None:
    """The example's own login form starts an OP session carrying its amr."""
    from examples.authlib_idp.models import db

    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    bad = client.post("/login", data={"username": "alice", "password": "nope", "csrf_token": csrf[1]})
    assert bad.status_code == 401
    resp = client.post(
        "/login", data={"username": "alice", "password": "correct horse", "csrf_token": csrf[1]}
    )
    assert resp.status_code == 303
    with app.app_context():
        row = db.session.scalar(select(OPSession).where(OPSession.subject == "1"))
        assert row is not None and row.amr == ["pwd"]


def _token_issued_the_way_the_before_app_did(app: Any) -> str:
    """A token row written by Authlib's create_save_token_func, as the example did before the
    adoption: no OP session, no side-table row."""
    from authlib.integrations.sqla_oauth2 import create_save_token_func
    from authlib.oauth2.rfc6749 import OAuth2Request

    from examples.authlib_idp.models import OAuth2Token, User, db

    access = secrets.token_urlsafe(32)
    with app.test_request_context():
        request = OAuth2Request("POST", "https://idp.example/oauth/token")
        request.user = db.session.get(User, 1)
        request.client = type("Client", (), {"client_id": "billing"})()
        create_save_token_func(db.session, OAuth2Token)(
            {
                "token_type": "Bearer",
                "access_token": access,
                "refresh_token": secrets.token_urlsafe(32),
                "scope": "openid profile",
                "expires_in": 3600,
            },
            request,
        )
    return access
