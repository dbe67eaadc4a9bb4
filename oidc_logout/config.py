"""One frozen settings object: every default of the OP side, documented in one place.

The Flask integration reads ``OIDC_LOGOUT_<NAME>`` config keys into it; the worker reads the
same names from the environment (see docs/operations.md).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from typing import Any

from .limits import MAX_REQUEST_BYTES


@dataclass(frozen=True)
class Settings:
    #: The OP's issuer identifier (Core 1.0 §2, Discovery 1.0 §3): https, no query or fragment.
    issuer: str = "http://127.0.0.1:5000"
    #: SQLAlchemy database URL; SQLite is the embedded default.
    database_url: str = "sqlite:///oidc-logout.db"
    #: Development mode: allows http and loopback logout/redirect URIs (never in production).
    dev_mode: bool = False
    #: Addresses admitted for logout URIs besides public ones (CIDRs), e.g. an internal RP.
    address_allowlist: tuple[str, ...] = ()
    #: Bring the schema to head at start-up (``init_app`` / ``Provider.setup()``), under a
    #: lock so concurrent starts serialize. On by default (the demo and a single embedded
    #: process just work); in production run ``oidc-logout migrate`` as a deploy step and set
    #: it false: start-up then refuses a schema that is not at head, naming the command.
    auto_migrate: bool = True

    # Tokens
    access_token_lifetime: int = 3600
    refresh_token_lifetime: int = 30 * 86400
    id_token_lifetime: int = 3600
    authorization_code_lifetime: int = 300
    default_id_token_alg: str = "RS256"
    #: Logout token lifetime (Back-Channel Logout §2.4 errata: exp is required; keep it short).
    logout_token_lifetime: int = 120
    #: ``oidc-logout rotate-key``: seconds a new signing key is published in the JWKS before
    #: it signs (two-step rollover). Keep it above the JWKS ``max-age`` (300 s) plus the key
    #: ring cache (30 s) plus the longest JWKS cache of your RPs.
    key_rollover_period: float = 3600.0

    # OP sessions (expiry goes through terminate(), so RPs hear of it)
    session_idle_lifetime: int = 8 * 3600
    session_absolute_lifetime: int = 24 * 3600
    session_cookie_name: str = "op_session"
    #: Interval of the expiry sweep in the embedded dispatcher (seconds; 0 disables it).
    expiry_sweep_interval: float = 60.0

    # Delivery (Back-Channel Logout §2.5, §2.8)
    delivery_timeout: float = 5.0
    delivery_connect_timeout: float = 2.0
    #: Optional cap on attempts of one delivery (0: unlimited, the default): deliveries give
    #: up by age (``delivery_max_age``), not by count, so an RP outage shorter than that never
    #: dead-letters anything.
    delivery_max_attempts: int = 0
    #: Age (s) after which a delivery that still fails retryably goes ``dead``.
    delivery_max_age: int = 24 * 3600
    delivery_backoff_base: float = 1.0
    delivery_backoff_cap: float = 300.0
    delivery_retry_after_cap: float = 600.0
    #: Least delay (s) before retrying a delivery the RP refused for a key reason (400
    #: ``unknown_kid`` / JWKS unavailable): RPs refetch a JWKS at most once per cooldown.
    delivery_key_retry_delay: float = 30.0
    #: Attempts running at once for one client, and for one target host, in each dispatcher
    #: or worker process (one logout must not turn the OP into a POST cannon).
    delivery_max_concurrent_per_client: int = 4
    delivery_max_concurrent_per_host: int = 8
    #: Retries (attempts after a row's first) one client gets per ``delivery_client_retry_window``
    #: seconds in each process; further retries wait (they are deferred, not dropped).
    delivery_client_retry_budget: int = 20
    delivery_client_retry_window: float = 60.0
    delivery_concurrency: int = 16
    #: Claim lease (s). Live workers renew their leases every third of it (heartbeat), so it
    #: only bounds how long the rows of a crashed worker wait before others take them.
    delivery_lease_seconds: int = 10
    delivery_batch_size: int = 100
    #: The logout response waits at most this long for deliveries, then answers.
    logout_wait_bound: float = 2.0
    #: Run the in-process dispatcher thread (embedded mode). Off when separate workers run.
    embedded_dispatcher: bool = True
    max_response_bytes: int = 64 * 1024

    # Front-channel page
    frontchannel_timeout_ms: int = 3000

    #: The host's own login page (path or URL): ``/authorize`` sends an End-User without a
    #: session there with ``next`` (the request to return to); empty: the bundled form.
    login_url: str = ""

    # Registration (RFC 7591 §3): when set, POST /register needs "Authorization: Bearer <it>".
    registration_token: str = ""
    #: Dynamic registration without an initial access token. Off by default: registration is
    #: then closed (403) unless ``registration_token`` is set (RFC 7591 §3, RFC 9700 §4.11).
    registration_open: bool = False
    #: Registrations accepted per client address within ``registration_rate_window`` (0: no limit);
    #: beyond it POST /register answers 429.
    registration_rate_limit: int = 10
    #: The window (seconds) of ``registration_rate_limit``.
    registration_rate_window: int = 3600

    # Login throttling (sliding window over failed sign-ins; a throttled attempt is answered 429
    # without checking the password)
    #: Failed sign-ins per account name within ``login_throttle_window`` before it is throttled (0: off).
    login_max_failures_per_account: int = 5
    #: Failed sign-ins per client address within ``login_throttle_window`` before it is throttled (0: off).
    login_max_failures_per_address: int = 30
    #: The window (seconds) failed sign-ins are counted in.
    login_throttle_window: int = 900

    # Flask integration (nothing app-wide changes unless asked)
    #: Path the extension's routes are mounted under ("" keeps them at the root, e.g.
    #: ``/oidc``); discovery advertises the prefixed URLs. ``OIDCLogout(url_prefix=...)`` wins.
    url_prefix: str = ""
    #: Serve ``/.well-known/openid-configuration`` and ``/.well-known/oauth-authorization-server``.
    #: Off when the host publishes its own discovery document and merges ``OIDCLogout.metadata()``.
    serve_discovery: bool = True

    # Requests
    #: Request-body limit (bytes) of the extension's routes only (413 beyond it); the host's
    #: own routes and ``MAX_CONTENT_LENGTH`` are left alone.
    max_request_bytes: int = MAX_REQUEST_BYTES
    admin_scope: str = "oidc_logout:admin"

    # Delivery engine (issue 17 / issue 14 item 4: worker health)
    #: A standalone worker that cannot reach its database backs off (one warning line per
    #: step) and exits non-zero (69) after this many seconds; 0: retry forever.
    worker_db_unreachable_exit_after: float = 300.0

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


class SettingsError(ValueError):
    """A setting that cannot be what it says: the message names the key and what it takes."""


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _coerce(key: str, value: str, like: Any) -> Any:
    text = value.strip()
    if isinstance(like, bool):
        # A typo ("ture", "flase") must not silently turn a switch off.
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise SettingsError(f"{key}={value!r} is not a boolean (use true or false)")
    if isinstance(like, int | float):
        kind = int if isinstance(like, int) else float
        try:
            return kind(text)
        except ValueError:
            raise SettingsError(
                f"{key}={value!r} is not {'an integer' if kind is int else 'a number'}"
            ) from None
    if isinstance(like, tuple):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return value


def _check_names(values: dict[str, Any], prefix: str, known: set[str]) -> None:
    """A key that looks like a misspelt setting (``OIDC_LOGOUT_DATABASEURL``) is an error, not a
    silent fallback to the default; unrelated keys sharing the prefix are left alone."""
    for key in values:
        if not isinstance(key, str) or not key.startswith(prefix) or key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.85)
        if close:
            raise SettingsError(f"{key} is not a setting; did you mean {close[0]}?")


def settings_from_mapping(
    values: dict[str, Any], prefix: str = "OIDC_LOGOUT_", base: Settings | None = None
) -> Settings:
    """Build settings from ``PREFIX_NAME`` keys (a Flask config or ``os.environ``)."""
    base = base or Settings()
    fields = dataclasses.fields(Settings)
    _check_names(values, prefix, {prefix + f.name.upper() for f in fields})
    changes: dict[str, Any] = {}
    for f in fields:
        key = prefix + f.name.upper()
        if key in values:
            raw = values[key]
            default = getattr(base, f.name)
            changes[f.name] = _coerce(key, raw, default) if isinstance(raw, str) else raw
    return base.replace(**changes)


def settings_from_env(base: Settings | None = None) -> Settings:
    return settings_from_mapping(dict(os.environ), base=base)


__all__ = ["Settings", "SettingsError", "settings_from_env", "settings_from_mapping"]
