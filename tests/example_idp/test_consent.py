"""The authorization endpoint: sign-in first, then the consent page."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from .conftest import SPA, WEBAPP, Browser, ExampleIdP, forms, pkce_pair, redirect_params


def test_signed_out_user_is_sent_to_login_and_back(idp: ExampleIdP) -> None:
    """Without a session, the authorization request waits behind the sign-in page."""
    browser = Browser(idp.url)
    resp = browser.authorize(WEBAPP)
    assert resp.status_code == 302
    login_url = resp.headers["Location"]
    assert urlsplit(login_url).path == "/login"
    next_url = parse_qs(urlsplit(login_url).query)["next"][0]
    assert next_url.startswith("/oauth/authorize?")

    signed_in = browser.login(page_url=f"{idp.url}{login_url}")
    assert signed_in.headers["Location"] == next_url
    consent = browser.http.get(f"{idp.url}{next_url}", timeout=10)
    assert consent.status_code == 200
    assert "The webapp app" in consent.text


def test_consent_page_names_the_client_and_the_scopes(idp: ExampleIdP) -> None:
    """The consent page shows who asks and for what, and can neither be framed nor cached."""
    browser = Browser(idp.url)
    browser.login()
    page = browser.authorize(WEBAPP, scope="openid email")
    assert page.status_code == 200
    assert "Allow The webapp app to use your account?" in page.text
    assert "Signed in as <strong>alice</strong>" in page.text
    assert "Your email address" in page.text
    assert "Your name and username" not in page.text
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Cache-Control"] == "no-store"


def test_submitting_the_consent_form_approves(idp: ExampleIdP) -> None:
    """The page's first form, submitted as it is, sends a code to the client's redirect URI
    with the request's state and the issuer (RFC 9207)."""
    browser = Browser(idp.url)
    browser.login()
    page = browser.authorize(WEBAPP, state="xyz")
    first = forms(page.text)[0]
    assert first.fields["confirm"] == "yes"
    params = redirect_params(browser.submit(page, first), WEBAPP["redirect_uris"][0])
    assert params["code"]
    assert params["state"] == "xyz"
    assert params["iss"] == idp.url


def test_denying_returns_access_denied(idp: ExampleIdP) -> None:
    """Deny sends ``error=access_denied`` to the redirect URI and no code."""
    browser = Browser(idp.url)
    browser.login()
    page = browser.authorize(WEBAPP, state="st")
    params = redirect_params(browser.consent(page, approve=False), WEBAPP["redirect_uris"][0])
    assert params["error"] == "access_denied"
    assert params["state"] == "st"
    assert params["iss"] == idp.url
    assert "code" not in params


def test_consent_needs_the_csrf_token(idp: ExampleIdP) -> None:
    """Another site cannot approve on the user's behalf: a post without the token fails."""
    browser = Browser(idp.url)
    browser.login()
    page = browser.authorize(WEBAPP)
    resp = browser.http.post(page.url, data={"confirm": "yes"}, allow_redirects=False, timeout=10)
    assert resp.status_code == 400
    assert "Location" not in resp.headers


def test_unknown_client_is_not_redirected(idp: ExampleIdP) -> None:
    """An unknown client_id gets an error page, never a redirect."""
    browser = Browser(idp.url)
    browser.login()
    resp = browser.authorize({"client_id": "nobody", "redirect_uris": ["https://evil.example/cb"]})
    assert resp.status_code == 400
    assert "invalid_client" in resp.text


def test_unregistered_redirect_uri_is_not_followed(idp: ExampleIdP) -> None:
    """A redirect URI the client did not register is refused on the IdP's own page."""
    browser = Browser(idp.url)
    browser.login()
    resp = browser.authorize({**WEBAPP, "redirect_uris": ["https://evil.example/cb"]})
    assert resp.status_code == 400
    assert "Location" not in resp.headers


def test_unsupported_scope_goes_back_as_invalid_scope(idp: ExampleIdP) -> None:
    """A scope the IdP does not offer is an error for the client."""
    browser = Browser(idp.url)
    browser.login()
    params = redirect_params(browser.authorize(WEBAPP, scope="openid admin"), WEBAPP["redirect_uris"][0])
    assert params["error"] == "invalid_scope"


def test_public_client_must_use_pkce_s256(idp: ExampleIdP) -> None:
    """A public client without code_challenge, or with a method other than S256, is refused
    before the consent page (RFC 9700 §2.1.1)."""
    browser = Browser(idp.url)
    browser.login()
    _, challenge = pkce_pair()
    for extra in (
        {},
        {"code_challenge": challenge, "code_challenge_method": "plain"},
        {"code_challenge": challenge},
    ):
        params = redirect_params(browser.authorize(SPA, **extra), SPA["redirect_uris"][0])
        assert params["error"] == "invalid_request", extra
    assert browser.authorize(SPA, code_challenge=challenge, code_challenge_method="S256").status_code == 200


def test_prompt_none_cannot_show_pages(idp: ExampleIdP) -> None:
    """prompt=none: login_required when signed out, consent_required when signed in
    (consent is asked every time)."""
    browser = Browser(idp.url)
    params = redirect_params(browser.authorize(WEBAPP, prompt="none"), WEBAPP["redirect_uris"][0])
    assert params["error"] == "login_required"
    browser.login()
    params = redirect_params(browser.authorize(WEBAPP, prompt="none"), WEBAPP["redirect_uris"][0])
    assert params["error"] == "consent_required"


def test_prompt_login_asks_to_sign_in_again(idp: ExampleIdP) -> None:
    """prompt=login sends a signed-in user to the sign-in page, then on to the consent page."""
    browser = Browser(idp.url)
    browser.login()
    resp = browser.authorize(WEBAPP, prompt="login")
    assert resp.status_code == 302
    login_url = resp.headers["Location"]
    assert urlsplit(login_url).path == "/login"
    signed_in = browser.login("bob", page_url=f"{idp.url}{login_url}")
    page = browser.http.get(f"{idp.url}{signed_in.headers['Location']}", timeout=10)
    assert "Signed in as <strong>bob</strong>" in page.text


def test_max_age_asks_to_sign_in_again_once(idp: ExampleIdP) -> None:
    """max_age=0 needs a fresh sign-in, after which the consent page is shown (no loop)."""
    browser = Browser(idp.url)
    browser.login()
    resp = browser.authorize(WEBAPP, max_age="0")
    assert urlsplit(resp.headers["Location"]).path == "/login"
    signed_in = browser.login(page_url=f"{idp.url}{resp.headers['Location']}")
    page = browser.http.get(f"{idp.url}{signed_in.headers['Location']}", allow_redirects=False, timeout=10)
    assert page.status_code == 200
    assert "Allow The webapp app" in page.text
