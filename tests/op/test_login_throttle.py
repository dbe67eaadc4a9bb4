"""Issue 12 item 9: sign-in throttling per account and per address (sliding window, kept in
the database). A throttled attempt answers 429 with the login page and never checks the
password."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.idp import PASSWORD, Browser, IdP, start_idp


class CountingUsers:
    """The demo user directory, counting password checks."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.checks = 0

    def authenticate(self, username: str, password: str) -> str | None:
        self.checks += 1
        return self.inner.authenticate(username, password)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def idp(database_url: str) -> Iterator[IdP]:
    server = start_idp(
        database_url,
        login_max_failures_per_account=3,
        login_max_failures_per_address=6,
        login_throttle_window=600,
    )
    server.provider.users = CountingUsers(server.provider.users)
    yield server
    server.stop()


def _checks(idp: IdP) -> int:
    return idp.provider.users.checks  # type: ignore[attr-defined, no-any-return]


def test_account_is_throttled_after_failures_and_the_password_is_not_checked(idp: IdP) -> None:
    """After login_max_failures_per_account failures, even the right password gets 429 (the
    login page, Retry-After) without a password check, and no session starts."""
    browser = Browser(idp.url)
    for _ in range(3):
        assert browser.login(password="wrong").status_code == 401
    before = _checks(idp)
    resp = browser.login(password=PASSWORD)
    assert resp.status_code == 429, resp.text[:200]
    assert 'name="password"' in resp.text and "Too many failed sign-ins" in resp.text
    assert int(resp.headers["Retry-After"]) > 0
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert _checks(idp) == before, "a throttled attempt must not check the password"
    assert idp.settings.session_cookie_name not in browser.http.cookies
    # Another account from the same address is not (yet) throttled.
    assert Browser(idp.url).login(username="bob").status_code == 303


def test_account_throttle_ignores_case_and_padding(idp: IdP) -> None:
    """One account, however its name is cased or padded."""
    browser = Browser(idp.url)
    for name in ("alice", "ALICE", " Alice "):
        assert browser.login(username=name, password="wrong").status_code == 401
    assert browser.login().status_code == 429


def test_address_is_throttled_across_accounts(idp: IdP) -> None:
    """Password spraying: login_max_failures_per_address failures over many names throttle
    the address, also for an account with no failures."""
    browser = Browser(idp.url)
    for i in range(6):
        assert browser.login(username=f"user{i}", password="wrong").status_code == 401
    assert browser.login(username="bob").status_code == 429


def test_success_resets_the_account_count(idp: IdP) -> None:
    """A successful sign-in clears the account's failures (not the address's)."""
    browser = Browser(idp.url)
    for _ in range(2):
        assert browser.login(password="wrong").status_code == 401
    assert browser.login().status_code == 303
    for _ in range(2):
        assert Browser(idp.url).login(password="wrong").status_code == 401
    assert Browser(idp.url).login().status_code == 303


def test_failures_outside_the_window_do_not_count(sqlite_url: str) -> None:
    """A sliding window: with a 1 s window, old failures expire."""
    import time

    idp = start_idp(sqlite_url, login_max_failures_per_account=2, login_throttle_window=1)
    try:
        browser = Browser(idp.url)
        for _ in range(2):
            assert browser.login(password="wrong").status_code == 401
        assert browser.login().status_code == 429
        time.sleep(1.2)
        assert browser.login().status_code == 303
    finally:
        idp.stop()
