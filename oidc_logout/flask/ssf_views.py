"""Flask adapter of the Shared Signals transmitter and Global Token Revocation: requests in,
:mod:`oidc_logout.ssf` decides, JSON out. Every endpoint takes an RFC 6750 bearer access
token in the Authorization header (never in the query, CAEP Interop §2.7.3) with the scope
the operation needs; a stream is visible only to the client whose token created it. In
extension mode the tokens are the host's (issued by its token endpoint, checked by
:class:`~oidc_logout.core.bearer.HostTokenValidator`) and a stream belongs to a host client."""

from __future__ import annotations

from typing import Any

from flask import Response, has_app_context, jsonify, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from ..core.bearer import BearerToken
from ..errors import InsufficientScope, InvalidRequest
from ..ssf import gtr as ssf_gtr
from ..ssf import metadata, poll, streams
from ..ssf.errors import PollError
from ..ssf.subjects import register_email_lookup
from .host import is_host_mode, shadow_host_client
from .server import request_db
from .views import _bearer, _no_store, _provider, view

__all__: list[str] = []

JSON = "application/json"


def _token(*scopes: str) -> BearerToken:
    """A valid bearer token holding one of ``scopes`` (RFC 6750 §3.1 errors otherwise)."""
    token = _bearer().token(request.headers)
    held = set((token.scope or "").split())
    if not held.intersection(scopes):
        raise InsufficientScope(
            f"the '{scopes[0]}' scope is required",
            challenge=f'Bearer error="insufficient_scope", scope="{scopes[0]}"',
        )
    return token


def _json_body() -> Any:
    if (request.mimetype or "") != JSON:
        raise InvalidRequest("Content-Type must be application/json")
    body = request.get_json(silent=True)
    if body is None:
        raise InvalidRequest("the request body is not valid JSON")
    return body


def _poll_url(stream_id: str) -> str:
    return url_for("oidc_logout.ssf_poll", stream_id=stream_id, _external=True)


def _url(name: str) -> str:
    return url_for(f"oidc_logout.{name}", _external=True)


def _directory_email(sub: str) -> str | None:
    """A subject's address from the app's user directory (the ``email`` subject format);
    None outside a Flask app context (a delivery worker) or without a directory."""
    if not has_app_context():
        return None
    users = _provider()._users
    if users is None:
        return None
    email = users.claims(sub, "email").get("email")
    return email if isinstance(email, str) else None


register_email_lookup(_directory_email)


def transmitter_configuration() -> dict[str, Any]:
    """SSF §7.1: the transmitter configuration metadata of the current app, absolute URLs
    (the view below, and ``OIDCLogout.ssf_configuration()`` for a host serving it at its
    issuer's root, SSF §7.2)."""
    settings = _provider().settings
    endpoints = {
        "configuration_endpoint": _url("ssf_stream"),
        "status_endpoint": _url("ssf_status"),
        "add_subject_endpoint": _url("ssf_subject_add"),
        "remove_subject_endpoint": _url("ssf_subject_remove"),
        "verification_endpoint": _url("ssf_verify"),
    }
    return dict(metadata.transmitter_metadata(settings.issuer, _url("jwks"), endpoints))


@view
def ssf_configuration() -> BaseResponse:
    """SSF §7.1/§7.2: the transmitter configuration metadata (public, like discovery)."""
    resp = jsonify(transmitter_configuration())
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp


@view
def ssf_stream() -> BaseResponse:
    """SSF §8.1.1: POST create, GET read (one or all), PATCH update, PUT replace, DELETE."""
    provider = _provider()
    settings = provider.settings
    db = request_db(provider)
    if request.method == "GET":
        token = _token(settings.ssf_read_scope, settings.ssf_manage_scope)
        stream_id = request.args.get("stream_id")
        if stream_id is None:
            out: Any = streams.list_streams(db, settings, token.client_id, _poll_url)
        else:
            out = streams.read_stream(db, settings, token.client_id, stream_id, _poll_url)
        return _no_store(jsonify(out))
    token = _token(settings.ssf_manage_scope)
    if request.method == "DELETE":
        streams.delete_stream(db, token.client_id, request.args.get("stream_id"))
        db.commit()
        return _no_store(Response(status=204))
    body = _json_body()
    if request.method in ("POST", "PUT") and is_host_mode():
        # The stream row points at the receiver's client: the host's, through its shadow row.
        shadow_host_client(db, token.client_id)
    if request.method == "POST":
        out = streams.create_stream(db, settings, token.client_id, body, _poll_url)
        status = 201
    elif request.method == "PATCH":
        out = streams.update_stream(db, settings, token.client_id, body, _poll_url)
        status = 200
    else:
        out = streams.replace_stream(db, settings, token.client_id, body, _poll_url)
        status = 200
    db.commit()
    resp = jsonify(out)
    resp.status_code = status
    return _no_store(resp)


@view
def ssf_status() -> BaseResponse:
    """SSF §8.1.2: GET reads, POST updates a stream's status."""
    provider = _provider()
    settings = provider.settings
    db = request_db(provider)
    if request.method == "GET":
        token = _token(settings.ssf_read_scope, settings.ssf_manage_scope)
        return _no_store(jsonify(streams.get_status(db, token.client_id, request.args.get("stream_id"))))
    token = _token(settings.ssf_manage_scope)
    out = streams.set_status(db, token.client_id, _json_body())
    db.commit()
    _kick(provider)
    return _no_store(jsonify(out))


def _kick(provider: Any) -> None:
    if provider.dispatcher is not None:
        provider.dispatcher.kick()


@view
def ssf_subject_add() -> BaseResponse:
    """SSF §8.1.3.2: 200 with an empty body."""
    provider = _provider()
    db = request_db(provider)
    token = _token(provider.settings.ssf_manage_scope)
    streams.add_subject(db, token.client_id, _json_body())
    db.commit()
    return _no_store(Response(status=200))


@view
def ssf_subject_remove() -> BaseResponse:
    """SSF §8.1.3.3: 204."""
    provider = _provider()
    db = request_db(provider)
    token = _token(provider.settings.ssf_manage_scope)
    streams.remove_subject(db, token.client_id, _json_body())
    db.commit()
    return _no_store(Response(status=204))


@view
def ssf_verify() -> BaseResponse:
    """SSF §8.1.4.2: 204; the verification SET follows on the stream."""
    provider = _provider()
    db = request_db(provider)
    token = _token(provider.settings.ssf_manage_scope)
    streams.verify(db, provider.settings, token.client_id, _json_body())
    db.commit()
    _kick(provider)
    return _no_store(Response(status=204))


@view
def ssf_poll(stream_id: str) -> BaseResponse:
    """RFC 8936 §2.4: the poll endpoint of one stream (SSF §6.1.2: unique per stream)."""
    provider = _provider()
    token = _token(provider.settings.ssf_manage_scope)
    client_id = token.client_id
    request_db(provider).rollback()  # the long poll holds no transaction of the request
    try:
        body = _json_body() if request.content_length else {}
        out = poll.poll(
            provider.session_factory, provider.keyring, provider.settings, client_id, stream_id[:40], body
        )
    except InvalidRequest as exc:
        # The err/description body the SET delivery RFCs share (RFC 8935 §2.3, RFC 8936).
        resp = jsonify(PollError(exc.description).as_dict())
        resp.status_code = 400
        return _no_store(resp)
    return _no_store(jsonify(out))


@view
def gtr() -> BaseResponse:
    """draft-parecki-oauth-global-token-revocation §3: 204 once revocation has begun."""
    provider = _provider()
    token = _token(provider.settings.gtr_scope)
    client_id = token.client_id
    body = _json_body()
    request_db(provider).rollback()
    term_id = gtr_revoke(provider, client_id, body)
    provider.dispatch(term_id, wait=0)
    return _no_store(Response(status=204))


def gtr_revoke(provider: Any, client_id: str, body: Any) -> str:
    return ssf_gtr.revoke_subject(
        provider.session_factory, provider.settings, provider._users, client_id, body
    )
