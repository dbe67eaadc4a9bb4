"""RFC 7591 §3: with an initial access token configured, registration needs it."""

from __future__ import annotations

import requests

from tests.support.idp import start_idp

META = {"redirect_uris": ["http://127.0.0.1:9/cb"], "client_name": "x"}


def test_registration_requires_the_configured_initial_access_token(sqlite_url):
    """Without or with a wrong bearer token: 401 invalid_token and no client; with it: 201."""
    idp = start_idp(sqlite_url, registration_token="initial-" + "k" * 24)
    try:
        url = f"{idp.url}/register"
        assert requests.post(url, json=META, timeout=5).status_code == 401
        wrong = requests.post(url, json=META, headers={"Authorization": "Bearer nope"}, timeout=5)
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_token"
        ok = requests.post(url, json=META, headers={"Authorization": "Bearer initial-" + "k" * 24}, timeout=5)
        assert ok.status_code == 201 and ok.json()["client_id"]
    finally:
        idp.stop()
