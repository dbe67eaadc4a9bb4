"""``--clients FILE``: RFC 7591 metadata with client_id and client_secret, loaded at start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples.authlib_idp.app import read_clients_file, seed
from examples.authlib_idp.models import OAuth2Client, db

from .conftest import RP, WEBAPP, Browser, client_meta, exchange, run_code_flow, start_example


def test_clients_from_the_file_can_sign_users_in(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    path.write_text(json.dumps([client_meta("from-file")]))
    meta = read_clients_file(path)[0]
    idp = start_example(database_url, clients=read_clients_file(path))
    try:
        browser = Browser(idp.url)
        browser.login()
        resp = exchange(idp.url, meta, run_code_flow(browser, meta))
        assert resp.status_code == 200, resp.text
        with idp.app.app_context():
            client = db.session.scalar(db.select(OAuth2Client).filter_by(client_id="from-file"))
            assert client.client_name == "The from-file app"
            assert client.client_id_issued_at > 0
    finally:
        idp.stop()


def test_loading_again_updates_the_client(database_url: str) -> None:
    """A second start with changed metadata and secret updates the row (upsert)."""
    idp = start_example(database_url, clients=[WEBAPP])
    try:
        changed = {
            **WEBAPP,
            "client_secret": "rotated-secret-" + "r" * 20,
            "redirect_uris": [f"{RP}/new/callback"],
            "client_name": "Renamed",
        }
        seed(idp.app, password="ignored for existing users", clients=[changed])
        with idp.app.app_context():
            rows = db.session.scalars(db.select(OAuth2Client).filter_by(client_id="webapp")).all()
            assert len(rows) == 1
            assert rows[0].client_name == "Renamed"
            assert rows[0].redirect_uris == [f"{RP}/new/callback"]
        browser = Browser(idp.url)
        browser.login()  # the users' password did not change
        flow = run_code_flow(browser, changed)
        assert exchange(idp.url, WEBAPP, flow).status_code == 401  # old secret
        assert exchange(idp.url, changed, flow).status_code == 200
    finally:
        idp.stop()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({**WEBAPP, "client_secret": None}, "client_secret is required"),
        ({**WEBAPP, "client_id": ""}, "client_id"),
        ({**WEBAPP, "client_id": "x" * 49}, "client_id"),
        ({**WEBAPP, "scope": "openid admin"}, "invalid_client_metadata"),
        ({**WEBAPP, "redirect_uris": []}, "invalid_redirect_uri"),
    ],
    ids=["no-secret", "empty-id", "long-id", "scope", "no-redirect"],
)
def test_bad_entries_are_refused(sqlite_url: str, entry: dict, message: str) -> None:
    idp = start_example(sqlite_url)
    try:
        with pytest.raises(ValueError, match=message):
            seed(idp.app, password="x", clients=[entry])
    finally:
        idp.stop()


def test_the_file_must_be_an_array_of_objects(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    path.write_text(json.dumps({"client_id": "x"}))
    with pytest.raises(ValueError, match="JSON array"):
        read_clients_file(path)
