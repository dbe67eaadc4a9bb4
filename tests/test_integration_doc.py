"""docs/integration.md is a program: every Python block runs, in order, against a real
database, and what it claims happens does happen. The page names only public imports."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import select

from oidc_logout.storage.models import Client, OPSession, Termination

DOC = Path(__file__).resolve().parents[1] / "docs" / "integration.md"
PUBLIC_MODULES = {"oidc_logout.op", "oidc_logout.rp", "oidc_logout.testing"}


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_integration_doc_names_only_public_modules_and_names():
    text = DOC.read_text()
    modules = set(re.findall(r"\b(oidc_logout(?:\.\w+)+)", text))
    assert modules <= PUBLIC_MODULES | {m + ".Settings" for m in PUBLIC_MODULES}, modules - PUBLIC_MODULES
    for block in _blocks():
        for names in re.findall(r"from oidc_logout[.\w]* import ([^\n]+)", block):
            assert not any(n.strip().startswith("_") for n in names.split(",")), names


def test_integration_doc_blocks_run_and_do_what_they_say(sqlite_url: str, tmp_path: Path) -> None:
    ns: dict[str, Any] = {
        "__name__": "integration_doc",
        "load_secret": lambda: "doc-secret-" + "x" * 32,
        "ISSUER": "http://127.0.0.1:5999",
        "DATABASE_URL": sqlite_url,
        "BILLING_SECRET": "billing-secret-" + "y" * 24,
    }
    blocks = _blocks()
    assert len(blocks) >= 6
    try:
        for i, block in enumerate(blocks):
            exec(compile(block, f"{DOC}:block{i}", "exec"), ns)
            if "def my_login" in block:
                _sign_in_through_the_host_login(ns)
    finally:
        if ns.get("provider") is not None:
            ns["provider"].stop_background()

    provider = ns["provider"]
    assert provider.settings.database_url == sqlite_url
    with provider.session_factory() as db:
        assert db.get(Client, "billing") is not None
        terms = list(db.scalars(select(Termination).order_by(Termination.created_at)))
        # terminate_now by subject, the secret rotation, and the termination in the host's
        # own transaction handed over with dispatch()
        assert [t.target_kind for t in terms] == ["subject", "credential", "subject"]
        assert terms[0].sessions_ended == 1  # the session the host login started
        assert db.scalar(select(OPSession).where(OPSession.ended_at.is_(None))) is None
    assert ns["outcome"].termination_id == terms[-1].id


def _sign_in_through_the_host_login(ns: dict[str, Any]) -> None:
    """Block 4's login view starts an OP session carrying the host's amr and acr."""
    client = ns["app"].test_client()
    bad = client.post("/my-login", data={"username": "alice@example.com", "password": "nope"})
    assert bad.status_code == 401
    resp = client.post("/my-login", data={"username": "alice@example.com", "password": "correct horse"})
    assert resp.status_code == 303
    with ns["provider"].session_factory() as db:
        row = db.scalar(select(OPSession).where(OPSession.subject == "u-alice"))
        assert row is not None and row.amr == ["pwd", "otp"] and row.acr == "urn:example:mfa"
