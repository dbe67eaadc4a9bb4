"""Keep tokens out of logs: request lines logged by servers carry query strings such as
``id_token_hint=...`` or ``code=...``; this filter replaces those values."""

from __future__ import annotations

import logging
import re

SENSITIVE = (
    "id_token_hint",
    "code",
    "token",
    "logout_token",
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "code_verifier",
    "state",
    "sid",
)
_PATTERN = re.compile(r"(?P<key>(?:^|[?&\s])(?:{})=)[^&\s\"]+".format("|".join(SENSITIVE)))


# Dict or JSON renderings, e.g. Authlib's DEBUG line "Issue token {'access_token': '...'}".
_MAPPING = re.compile(r"""(?P<key>['"](?:{})['"]\s*:\s*)['"][^'"]*['"]""".format("|".join(SENSITIVE)))


def redact(text: str) -> str:
    text = _PATTERN.sub(lambda m: m.group("key") + "[redacted]", text)
    return _MAPPING.sub(lambda m: m.group("key") + "'[redacted]'", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(
                redact(a) if isinstance(a, str) else redact(repr(a)) if isinstance(a, dict) else a
                for a in args
            )
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install_server_log_redaction() -> None:
    """Redact request lines of werkzeug's server log (the demo and test servers)."""
    _install("werkzeug")


def install_library_log_redaction() -> None:
    """Authlib logs issued tokens at DEBUG level; redact them wherever its loggers lead."""
    for name in (
        "authlib",
        "authlib.oauth2.rfc6749.grants.authorization_code",
        "authlib.oauth2.rfc6749.grants.refresh_token",
        "authlib.oauth2.rfc6749.grants.client_credentials",
    ):
        _install(name)


def _install(name: str) -> None:
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
