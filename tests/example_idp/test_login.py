"""The IdP's own sign-in page and its local sign-out."""

from __future__ import annotations

from .conftest import Browser, ExampleIdP, forms


def test_right_password_signs_in(idp: ExampleIdP) -> None:
    """The form with ``username`` and ``password`` signs the user in and goes to ``next``."""
    browser = Browser(idp.url)
    resp = browser.login("alice")
    assert resp.status_code == 303
    assert resp.headers["Location"] == "/"
    assert "Signed in as alice" in browser.http.get(f"{idp.url}/", timeout=10).text


def test_both_users_exist(idp: ExampleIdP) -> None:
    """alice and bob are created at start with the configured password."""
    for username in ("alice", "bob"):
        assert Browser(idp.url).login(username).status_code == 303


def test_wrong_password_is_refused(idp: ExampleIdP) -> None:
    """A wrong password shows the form again with 401 and signs nobody in."""
    browser = Browser(idp.url)
    resp = browser.login("alice", "not the password")
    assert resp.status_code == 401
    assert "Wrong username or password" in resp.text
    assert forms(resp.text)[0].fields["username"] == "alice"
    assert "Not signed in" in browser.http.get(f"{idp.url}/", timeout=10).text


def test_unknown_user_gets_the_same_answer(idp: ExampleIdP) -> None:
    """An unknown username is refused exactly like a wrong password."""
    resp = Browser(idp.url).login("mallory")
    assert resp.status_code == 401
    assert "Wrong username or password" in resp.text


def test_login_without_the_csrf_token_is_refused(idp: ExampleIdP) -> None:
    """The sign-in form is only accepted with the CSRF token of the user's session."""
    browser = Browser(idp.url)
    browser.http.get(f"{idp.url}/login", timeout=10)
    resp = browser.http.post(
        f"{idp.url}/login", data={"username": "alice", "password": "x"}, allow_redirects=False, timeout=10
    )
    assert resp.status_code == 400


def test_next_only_goes_to_this_site(idp: ExampleIdP) -> None:
    """``next`` pointing to another site is replaced by the home page (no open redirect)."""
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example/"):
        browser = Browser(idp.url)
        resp = browser.login(page_url=f"{idp.url}/login?next={target}")
        assert resp.status_code == 303
        assert resp.headers["Location"] == "/", target


def test_logout_clears_the_session(idp: ExampleIdP) -> None:
    """Signing out ends the IdP session: the authorization endpoint asks to sign in again."""
    browser = Browser(idp.url)
    browser.login()
    home = browser.http.get(f"{idp.url}/", timeout=10)
    (logout_form,) = forms(home.text)
    assert logout_form.action == "/logout"
    resp = browser.submit(home, logout_form)
    assert resp.status_code == 303
    assert "Not signed in" in browser.http.get(f"{idp.url}/", timeout=10).text


def test_pages_cannot_be_framed(idp: ExampleIdP) -> None:
    """The sign-in page forbids framing and caching."""
    resp = Browser(idp.url).http.get(f"{idp.url}/login", timeout=10)
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "no-store"
