"""Structured logs: a JSON formatter, the ``log_format`` setting, and the one delivery log line.

Every delivery attempt is logged once, by :func:`log_delivery`, after its result is recorded
(so the line says what the row became: ``delivered``, ``retry``, ``failed``, ``dead``), with
the ids an operator searches by as separate fields (``extra=``): ``termination_id``,
``delivery_id``, ``client_id``, ``attempt``, ``outcome``, ``latency_ms``, ``http_status`` and,
for anything but a delivery, ``reason``. Failed, dead and lost outcomes are WARNINGs.

Never logged: a token, a secret, a logout token. The delivery line carries the RP's error text
(already cleaned and truncated by :mod:`oidc_logout.backchannel.request`) and the target host,
never the token it sent; :class:`JsonFormatter` also runs every message through
:func:`oidc_logout._redact.redact` as a last line of defence.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._redact import redact
from .config import SettingsError

if TYPE_CHECKING:  # pragma: no cover - types only
    from .backchannel.request import AttemptResult
    from .delivery.outbox import ClaimedDelivery

__all__ = ["LOG_FORMATS", "TEXT_FORMAT", "JsonFormatter", "configure_logging", "log_delivery"]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    every ``extra=`` field, and ``exc_type`` / ``exc`` for an exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_") or key in out:
                continue
            out[key] = value if isinstance(value, str | int | float | bool | type(None)) else repr(value)
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """Apply ``log_format`` (``OIDC_LOGOUT_LOG_FORMAT``) to the root logger: without any
    handler one is added on stderr at ``level``; with ``json`` every root handler formats
    with :class:`JsonFormatter`. ``text`` leaves a host's own formatters alone."""
    if log_format not in LOG_FORMATS:
        raise SettingsError(f"OIDC_LOGOUT_LOG_FORMAT={log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    root = logging.getLogger()
    if not root.handlers:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter(TEXT_FORMAT))
        root.addHandler(stream)
        root.setLevel(level)
    if log_format == "json":
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())


def _host(uri: str) -> str:
    try:
        return urlsplit(uri).hostname or ""
    except ValueError:
        return ""


def log_delivery(
    logger: logging.Logger,
    claimed: ClaimedDelivery,
    result: AttemptResult,
    state: str,
    *,
    give_up: str | None = None,
) -> None:
    """The one log line of a recorded pushed delivery attempt (back-channel logout or SSF push);
    ``state`` is the row's
    new state (``pending``: a retry was scheduled) or ``lost`` / ``error``."""
    outcome = "retry" if state == "pending" else str(state)
    attempt = claimed.attempts + 1
    reason = result.error or (f"HTTP {result.http_status}" if result.http_status else "")
    if give_up:  # the retry policy's reason for making this row dead (age or attempt cap)
        reason = f"{reason}; {give_up}" if reason else give_up
    fields: dict[str, Any] = {
        "termination_id": claimed.termination_id,
        "delivery_id": claimed.id,
        "client_id": claimed.client_id,
        "channel": str(claimed.channel),
        "attempt": attempt,
        "outcome": outcome,
        "latency_ms": result.duration_ms,
        "jti": result.jti,
        "http_status": result.http_status,
        "target_host": _host(claimed.target_uri),
    }
    if outcome != "delivered":
        fields["reason"] = reason
    head = (
        f"delivery {claimed.id} (termination {claimed.termination_id}, client {claimed.client_id}) "
        f"attempt {attempt}: {outcome}"
    )
    if outcome == "delivered":
        logger.info("%s (status %s, %d ms)", head, result.http_status, result.duration_ms, extra=fields)
    elif outcome == "retry":
        logger.info("%s: %s (%d ms); retry scheduled", head, reason, result.duration_ms, extra=fields)
    elif outcome == "dead":
        logger.warning(
            "%s: %s (%d ms); dead letter (requeue with `oidc-logout retry`)",
            head,
            reason,
            result.duration_ms,
            extra=fields,
        )
    elif outcome == "failed":
        logger.warning(
            "%s: %s (%d ms); permanent failure, not retried", head, reason, result.duration_ms, extra=fields
        )
    else:
        logger.warning("%s: result not recorded (%s)", head, reason or outcome, extra=fields)
