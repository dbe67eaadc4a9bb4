"""Pages and endpoints: sign-in, consent, and the OAuth 2.0 / OpenID Connect endpoints."""

from __future__ import annotations

import secrets
import time
from urllib.parse import urlencode

from authlib.common.urls import add_params_to_uri
from authlib.oauth2 import OAuth2Error
from authlib.oidc.core.errors import ConsentRequiredError, LoginRequiredError
from flask import (
    Blueprint,
    Response,
    abort,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from werkzeug.security import check_password_hash, generate_password_hash

from .models import User, db
from .oauth2 import authorization, issuer, oidc, published_jwks, server_metadata

bp = Blueprint("idp", __name__)

#: Checked against when the username is unknown, so that a wrong username takes as long as a
#: wrong password.
_DUMMY_HASH = generate_password_hash(secrets.token_urlsafe(16))

SCOPE_DESCRIPTIONS = {
    "openid": "Sign you in (your user identifier)",
    "profile": "Your name and username",
    "email": "Your email address",
}


# -- the signed-in user (Flask's signed session cookie) --------------------------------------
def current_user() -> User | None:
    user_id = session.get("user_id")
    if not user_id or oidc.current_session_subject() != str(user_id):
        return None  # never signed in, or the OP session ended (single logout)
    return db.session.get(User, user_id)


def csrf_token() -> str:
    if "csrf_token" not in session:
        session["csrf_token"] = secrets.token_urlsafe(32)
    return str(session["csrf_token"])


def check_csrf() -> None:
    sent = request.form.get("csrf_token", "")
    expected = session.get("csrf_token", "")
    if not expected or not secrets.compare_digest(sent.encode(), expected.encode()):
        abort(400, "The form expired or did not come from this site; go back and try again.")


def safe_next(target: str | None) -> str:
    """Only paths on this site: never an absolute URL, a scheme-relative ``//host`` or ``/\\host``."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return url_for("idp.home")


@bp.get("/")
def home() -> str:
    return render_template("home.html", user=current_user(), csrf_token=csrf_token())


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    next_url = safe_next(request.values.get("next"))
    if request.method == "POST":
        check_csrf()
        username = request.form.get("username", "")
        password = request.form.get("password", "")
        user = db.session.scalar(db.select(User).filter_by(username=username))
        if user is None:
            check_password_hash(_DUMMY_HASH, password)
        elif user.check_password(password):
            session.clear()
            session["user_id"] = user.id
            session["auth_time"] = int(time.time())
            response = redirect(next_url, 303)
            oidc.sign_in(response, str(user.id), amr=["pwd"])
            return response
        return render_template(
            "login.html",
            next=next_url,
            csrf_token=csrf_token(),
            username=username,
            error="Wrong username or password.",
        ), 401
    return render_template("login.html", next=next_url, csrf_token=csrf_token(), username="", error=None)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """Signs the user out of this IdP (the Flask session) and nothing else: clients that
    received tokens keep them, and their own sessions go on."""
    check_csrf()
    session.clear()
    return redirect(url_for("idp.home"), 303)


# -- authorization endpoint: sign-in, then the consent page ----------------------------------
def _error_response(error: OAuth2Error) -> ResponseReturnValue:
    """An authorization error goes back to the client when Authlib has validated the
    redirect URI; otherwise the user sees it here (RFC 6749 §4.1.2.1)."""
    if error.redirect_uri:
        response = authorization.handle_error_response(None, error)
        # RFC 9207 §2: the iss parameter is included "in authorization responses to the
        # client, including error responses".
        response.location = add_params_to_uri(response.location, {"iss": issuer()})
        return response
    return render_template("error.html", error=error.error, description=error.description), 400


def _needs_fresh_login(prompts: list[str]) -> bool:
    if "login" in prompts:
        return True
    max_age = request.args.get("max_age", "")
    if max_age.isdigit():
        return int(session.get("auth_time", 0)) + int(max_age) < time.time()
    return False


def _login_redirect() -> ResponseReturnValue:
    # Back to this request once signed in, without prompt=login and max_age: the sign-in
    # about to happen satisfies both (and max_age=0 would otherwise ask forever).
    args = [(k, v) for k, v in request.args.items(multi=True) if k not in ("prompt", "max_age")]
    args += [("prompt", p) for p in request.args.get("prompt", "").split() if p != "login"]
    return redirect(url_for("idp.login", next=f"{request.path}?{urlencode(args)}"))


@bp.route("/oauth/authorize", methods=["GET", "POST"])
def authorize() -> ResponseReturnValue:
    user = current_user()
    try:
        grant = authorization.get_consent_grant(end_user=user)
    except OAuth2Error as error:
        return _error_response(error)

    prompts = request.args.get("prompt", "").split()
    state = request.args.get("state")
    if user is None or _needs_fresh_login(prompts):
        if "none" in prompts:
            return _error_response(LoginRequiredError(redirect_uri=grant.redirect_uri, state=state))
        return _login_redirect()
    if "none" in prompts:
        # Without a page, only consent the user already gave (remembered by oidc-logout).
        if not oidc.has_consent(str(user.id), grant.client.client_id, grant.request.payload.scope):
            return _error_response(ConsentRequiredError(redirect_uri=grant.redirect_uri, state=state))
        return authorization.create_authorization_response(grant_user=user, grant=grant)

    if request.method == "GET":
        client = grant.client
        scopes = [(s, SCOPE_DESCRIPTIONS.get(s, s)) for s in grant.request.scope.split()]
        return render_template(
            "consent.html",
            user=user,
            client=client,
            client_name=client.client_name or client.client_id,
            scopes=scopes,
            csrf_token=csrf_token(),
        )
    check_csrf()
    grant_user = user if request.form.get("confirm") == "yes" else None
    if grant_user is not None:
        oidc.remember_consent(str(user.id), grant.client.client_id, grant.request.payload.scope)
    return authorization.create_authorization_response(grant_user=grant_user, grant=grant)


# -- endpoints for clients -------------------------------------------------------------------
@bp.post("/oauth/token")
def issue_token() -> Response:
    return authorization.create_token_response()


@bp.post("/oauth/revoke")
def revoke_token() -> Response:
    return authorization.create_endpoint_response("revocation")


@bp.route("/oauth/userinfo", methods=["GET", "POST"])
def userinfo() -> Response:
    return authorization.create_endpoint_response("userinfo")


@bp.post("/oauth/register")
def register_client() -> Response:
    return authorization.create_endpoint_response("client_registration")


@bp.get("/oauth/jwks")
def jwks() -> Response:
    return jsonify(published_jwks())


@bp.get("/.well-known/openid-configuration")
def openid_configuration() -> Response:
    return jsonify(server_metadata())
