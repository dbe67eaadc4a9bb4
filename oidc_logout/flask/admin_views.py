"""Monitoring and admin-API routes: ``/metrics``, ``/healthz``, ``/readyz``, the admin list and
search (``GET /admin/terminations``, ``GET /admin/deliveries``), the requeue of a dead letter
and the admin API's OpenAPI document. Decisions live in :mod:`oidc_logout.metrics`,
:mod:`oidc_logout.health`, :mod:`oidc_logout.audit` and :mod:`oidc_logout.admin_openapi`;
these views adapt requests and render."""

from __future__ import annotations

from flask import Response, jsonify, request
from werkzeug.wrappers import Response as BaseResponse

from .. import audit, health, metrics
from ..admin_openapi import admin_openapi
from ..tokens import same_secret
from .server import request_db
from .state import state
from .views import _no_store, _provider, _require_admin, view

__all__: list[str] = []


def _metrics_allowed() -> None:
    """``/metrics``: the static ``metrics_token`` (what a Prometheus scrape config holds), or an
    admin-scoped access token; open only in dev mode without a metrics token (the demo)."""
    settings = _provider().settings
    auth = request.headers.get("Authorization") or ""
    scheme, _, value = auth.partition(" ")
    if (
        settings.metrics_token
        and scheme.lower() == "bearer"
        and same_secret(value.strip(), settings.metrics_token)
    ):
        return
    if settings.dev_mode and not settings.metrics_token:
        return
    _require_admin()


@view
def metrics_endpoint() -> BaseResponse:
    _metrics_allowed()
    body, ctype = metrics.exposition(_provider().session_factory)
    return _no_store(Response(body, content_type=ctype))


@view
def healthz() -> BaseResponse:
    # Liveness only: the process answers. Nothing external is checked (a database outage
    # must not make an orchestrator restart every OP process in a loop).
    return _no_store(jsonify({"status": "alive"}))


@view
def readyz() -> BaseResponse:
    provider = _provider()
    settings = provider.settings
    delivering = (
        health.embedded_dispatcher_check(provider.dispatcher)
        if settings.embedded_dispatcher
        else health.worker_heartbeat_check(settings)
    )
    checks = health.readiness_within(provider.engine, provider.session_factory, settings, delivering)
    status, body = health.health_body(checks)
    resp = jsonify(body)
    resp.status_code = status
    return _no_store(resp)


@view
def admin_terminations() -> BaseResponse:
    db = request_db(_provider())
    _require_admin()
    query = audit.parse_termination_query(request.args)
    return _no_store(jsonify({"terminations": audit.list_terminations(db, query)}))


@view
def admin_deliveries() -> BaseResponse:
    db = request_db(_provider())
    _require_admin()
    query = audit.parse_delivery_query(request.args)
    attempts = request.args.get("attempts", "") in ("1", "true")
    return _no_store(jsonify({"deliveries": audit.list_deliveries(db, query, attempts=attempts)}))


@view
def admin_requeue(delivery_id: int) -> BaseResponse:
    provider = _provider()
    db = request_db(provider)
    _require_admin()
    n = audit.requeue(db, [delivery_id])
    db.commit()
    if provider.dispatcher is not None:
        provider.dispatcher.kick()
    return _no_store(jsonify({"requeued": n}))


@view
def admin_openapi_document() -> BaseResponse:
    ext = state()
    doc = admin_openapi(_provider().settings.issuer.rstrip("/") + ext.url_prefix)
    return _no_store(jsonify(doc))
