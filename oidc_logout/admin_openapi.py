"""The OpenAPI 3.1 document of the admin API (served at ``/admin/openapi.json``).

Every admin route of :data:`oidc_logout.flask.routes.ROUTES` is described here (a test keeps
the two in step and validates the document against the OpenAPI 3.1 schema). Authentication:
an RFC 6750 bearer access token holding the admin scope (``client_credentials`` at the token
endpoint, client registered with that scope).
"""

from __future__ import annotations

from typing import Any

from .admin import MAX_WAIT
from .audit import DEFAULT_LIMIT, MAX_LIMIT
from .vocabulary import AttemptOutcome, Channel, DeliveryState, TargetKind

__all__ = ["admin_openapi"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ref("Error"), "invalid_request: a parameter or the body is malformed; nothing changed"),
    "401": _json(_ref("Error"), "invalid_token: no or an inactive bearer token (WWW-Authenticate: Bearer)"),
    "403": _json(_ref("Error"), "insufficient_scope: the token lacks the admin scope"),
}
_NOT_FOUND = {"404": _json(_ref("Error"), "not_found")}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
}

_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}


def _schemas() -> dict[str, Any]:
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
        },
        "Attempt": {
            "type": "object",
            "properties": {
                "number": {"type": "integer"},
                "started_at": _NULLABLE_TIME,
                "duration_ms": {"type": "integer"},
                "http_status": {"type": ["integer", "null"]},
                "outcome": {"type": "string", "enum": [o.value for o in AttemptOutcome]},
                "error": _NULLABLE_STR,
            },
        },
        "Delivery": {
            "type": "object",
            "required": ["id", "termination_id", "channel", "client_id", "state", "attempts"],
            "properties": {
                "id": {"type": "integer"},
                "termination_id": {"type": "string"},
                "channel": {"type": "string", "enum": [c.value for c in Channel]},
                "client_id": {"type": "string"},
                "sid": _NULLABLE_STR,
                "target_uri": {"type": "string"},
                "state": {"type": "string", "enum": [s.value for s in DeliveryState]},
                "attempts": {"type": "integer"},
                "last_status": {"type": ["integer", "null"]},
                "last_error": _NULLABLE_STR,
                "created_at": _NULLABLE_TIME,
                "next_attempt_at": _NULLABLE_TIME,
                "completed_at": _NULLABLE_TIME,
                "attempt_log": {"type": "array", "items": _ref("Attempt")},
            },
        },
        "Target": {
            "type": "object",
            "properties": {
                "kind": {"type": "string", "enum": [k.value for k in TargetKind]},
                "value": {"type": "string"},
            },
        },
        "TerminationSummary": {
            "type": "object",
            "required": ["id", "created_at", "target", "reason", "initiator"],
            "properties": {
                "id": {"type": "string"},
                "created_at": {"type": "string", "format": "date-time"},
                "target": _ref("Target"),
                "reason": {"type": "string"},
                "initiator": {
                    "type": "string",
                    "description": "who asked: admin:<client>, cli:<user>, end_session:<client>, expiry, ...",
                },
                "include_offline": {"type": "boolean"},
                "sessions_ended": {"type": "integer"},
                "tokens_revoked": {"type": "integer"},
                "delivery_summary": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        },
        "TerminationReport": {
            "allOf": [
                _ref("TerminationSummary"),
                {
                    "type": "object",
                    "properties": {
                        "deliveries": {"type": "array", "items": _ref("Delivery")},
                        "deliveries_total": {"type": "integer"},
                        "deliveries_offset": {"type": "integer"},
                    },
                },
            ]
        },
        "TerminationRequest": {
            "type": "object",
            "description": "exactly one of sid, sub, client_id, grant_id (grant_id: one of the "
            "package's own grants, or in extension mode host-token:<table>:<pk>, one of the host's "
            "token rows with its rotation chain; an unknown grant is 404)",
            "required": ["reason"],
            "properties": {
                "sid": {"type": "string", "maxLength": 255},
                "sub": {"type": "string", "maxLength": 255},
                "client_id": {"type": "string", "maxLength": 255},
                "grant_id": {"type": "string", "maxLength": 255},
                "reason": {"type": "string", "minLength": 1, "maxLength": 500},
                "include_offline": {"type": "boolean", "default": False},
                "wait": {"type": "number", "minimum": 0, "maximum": MAX_WAIT, "default": 0},
            },
        },
        "RotateSecretRequest": {
            "type": "object",
            "properties": {
                "end_previous": {"type": "boolean", "default": True},
                "reason": {"type": "string", "default": "client secret rotated"},
            },
        },
    }


def admin_openapi(server_url: str) -> dict[str, Any]:
    """The document, with ``server_url`` (issuer plus the extension's prefix) as its server."""
    sec: list[dict[str, list[str]]] = [{"adminBearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "oidc-logout admin API",
            "version": "1",
            "description": "Terminations (sessions ended, tokens revoked, RPs notified), their "
            "deliveries, requeueing dead letters, client secret rotation.",
        },
        "servers": [{"url": server_url}],
        "security": sec,
        "components": {
            "securitySchemes": {
                "adminBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An access token with the admin scope (client_credentials grant).",
                }
            },
            "schemas": _schemas(),
        },
        "paths": {
            "/admin/terminations": {
                "get": {
                    "operationId": "listTerminations",
                    "summary": "Recent terminations, newest first; search by subject or client",
                    "parameters": [
                        {"name": "subject", "in": "query", "schema": {"type": "string", "maxLength": 255}},
                        {"name": "client_id", "in": "query", "schema": {"type": "string", "maxLength": 64}},
                        _LIMIT,
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "terminations": {"type": "array", "items": _ref("TerminationSummary")}
                                },
                            },
                            "the terminations",
                        ),
                        **_ERRORS,
                    },
                },
                "post": {
                    "operationId": "terminate",
                    "summary": "End sessions of a sid, subject or client; revoke tokens; notify RPs",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("TerminationRequest")}},
                    },
                    "responses": {
                        "201": {
                            **_json(_ref("TerminationReport"), "the termination, with its deliveries"),
                            "headers": {"Location": {"schema": {"type": "string"}}},
                        },
                        **_ERRORS,
                    },
                },
            },
            "/admin/terminations/{termination_id}": {
                "get": {
                    "operationId": "getTermination",
                    "summary": "One termination and a page of its deliveries with their attempts",
                    "parameters": [
                        {
                            "name": "termination_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    ],
                    "responses": {
                        "200": _json(_ref("TerminationReport"), "the report"),
                        **_ERRORS,
                        **_NOT_FOUND,
                    },
                }
            },
            "/admin/deliveries": {
                "get": {
                    "operationId": "listDeliveries",
                    "summary": "Deliveries newest first, by state, channel, client or termination",
                    "parameters": [
                        {
                            "name": "state",
                            "in": "query",
                            "description": "one state or several, comma-separated",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "channel",
                            "in": "query",
                            "schema": {"type": "string", "enum": [c.value for c in Channel]},
                        },
                        {"name": "client_id", "in": "query", "schema": {"type": "string", "maxLength": 64}},
                        {
                            "name": "termination_id",
                            "in": "query",
                            "schema": {"type": "string", "maxLength": 40},
                        },
                        {"name": "attempts", "in": "query", "schema": {"type": "boolean"}},
                        _LIMIT,
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {"deliveries": {"type": "array", "items": _ref("Delivery")}},
                            },
                            "the deliveries",
                        ),
                        **_ERRORS,
                    },
                }
            },
            "/admin/deliveries/{delivery_id}/retry": {
                "post": {
                    "operationId": "requeueDelivery",
                    "summary": "Requeue a dead or failed back-channel delivery (due now, one more attempt)",
                    "parameters": [
                        {"name": "delivery_id", "in": "path", "required": True, "schema": {"type": "integer"}}
                    ],
                    "responses": {
                        "200": _json(
                            {"type": "object", "properties": {"requeued": {"type": "integer"}}}, "requeued"
                        ),
                        **_ERRORS,
                        **_NOT_FOUND,
                    },
                }
            },
            "/admin/clients/{client_id}/rotate-secret": {
                "post": {
                    "operationId": "rotateClientSecret",
                    "summary": "Give a client a new secret; by default end grants of the previous one",
                    "parameters": [
                        {"name": "client_id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "requestBody": {"content": {"application/json": {"schema": _ref("RotateSecretRequest")}}},
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "client_id": {"type": "string"},
                                    "client_secret": {"type": "string"},
                                    "termination": _ref("TerminationReport"),
                                },
                            },
                            "the new secret (shown once)",
                        ),
                        **_ERRORS,
                        **_NOT_FOUND,
                    },
                }
            },
            "/admin/openapi.json": {
                "get": {
                    "operationId": "getOpenAPI",
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": _json({"type": "object"}, "the OpenAPI 3.1 document")},
                }
            },
        },
    }
