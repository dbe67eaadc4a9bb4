"""One frozen settings object: every default of the OP side, documented in one place.

The Flask integration reads ``OIDC_LOGOUT_<NAME>`` config keys into it; every ``oidc-logout``
command (the worker and ``serve`` included) loads it with :func:`load_settings`: defaults, then
an optional TOML file (``--config FILE`` / ``OIDC_LOGOUT_CONFIG_FILE``), then the environment,
then command-line flags, each value validated where it is read (see docs/operations.md).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
    #: Attempts running at once for one client, in each dispatcher or worker process (one
    #: logout must not turn the OP into a POST cannon).
    delivery_max_concurrent_per_client: int = 4
    #: Attempts running at once to one target host, per process, is a window that adapts to
    #: the host (oidc_logout.delivery.host_window, after RFC 5681's congestion control): a host
    #: not heard from recently gets ``delivery_initial_concurrent_per_host`` at once, each
    #: delivered attempt widens its window by one up to ``delivery_max_concurrent_per_host``,
    #: and a sign of overload (timeout, failed connection, 429/502/503/504) halves it, not
    #: below the initial window (one hanging RP of a shared host must not throttle the rest).
    #: So a logout to many RPs of one healthy host is not cut into waves of the RP's answer
    #: time, while a struggling host is backed off from. The ceiling is a hard bound: an HTTP/2
    #: server is expected to take at least 100 concurrent requests from one client (RFC 9113
    #: §6.5.2), and node-oidc-provider sends every POST of a logout at once.
    delivery_initial_concurrent_per_host: int = 32
    delivery_max_concurrent_per_host: int = 128
    #: Retries (attempts after a row's first) one client gets per ``delivery_client_retry_window``
    #: seconds in each process; further retries wait (they are deferred, not dropped).
    delivery_client_retry_budget: int = 20
    delivery_client_retry_window: float = 60.0
    delivery_concurrency: int = 16
    #: Attempt slots, beyond ``delivery_concurrency``, for the rows of a termination this
    #: process has just committed (a logout's own fan-out): they are claimed in the
    #: termination's transaction and start at once, in parallel, up to the per-client and
    #: per-host bounds, instead of queuing behind the steady-state slots. So a logout's
    #: parallelism grows with the RPs of its sessions, up to this many at once per process
    #: (0: no burst; every row goes through the dispatcher's claim loop).
    delivery_logout_burst: int = 128
    #: Claim lease (s). Live workers renew their leases every quarter of it (heartbeat), so it
    #: only bounds how long the rows of a crashed worker wait before others take them (issue
    #: 17: all delivered within 15 s of a ``kill -9``), and how long a live worker may fail
    #: to renew (a stall, the database out of reach) before its rows may be repeated.
    delivery_lease_seconds: int = 5
    #: A termination's cut-off (issue 17) is deleted by the delivery loops' housekeeping once
    #: its termination completed at least this many seconds ago AND nothing it refuses could
    #: be presented valid without it (oidc_logout/cutoffs.py). The margin covers rows of its
    #: scope committed by a transaction open across the termination; 0: as soon as safe.
    termination_cutoff_retention: int = 24 * 3600
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

    # Shared Signals (SSF 1.0 transmitter, CAEP/RISC events) and Global Token Revocation
    #: CAEP Interoperability Profile §2.7.2: the scopes of stream management (all operations)
    #: and of reading; both reserved (never granted by dynamic registration).
    ssf_manage_scope: str = "ssf.manage"
    ssf_read_scope: str = "ssf.read"
    #: Streams one client may own.
    ssf_max_streams_per_client: int = 10
    #: SET subject format of new streams unless the receiver asks for another (RFC 9493):
    #: ``iss_sub``, ``email``, ``opaque`` or ``complex`` (user + session).
    ssf_default_subject_format: str = "iss_sub"
    #: SSF §8.1.1 ``min_verification_interval`` (seconds; faster requests get 429).
    ssf_min_verification_interval: int = 5
    #: RFC 8936: most SETs one poll returns, and the longest a long poll (``returnImmediately``
    #: false) waits for one.
    ssf_poll_max_events: int = 100
    ssf_poll_max_wait: float = 15.0
    #: RFC 8936 §2.4: a SET returned by a poll and not acknowledged is returned again after this.
    ssf_poll_redeliver_after: float = 300.0
    #: draft-parecki-oauth-global-token-revocation: the scope its endpoint requires (reserved).
    gtr_scope: str = "global_token_revocation"
    # Observability: metrics, health, logs, operator console (docs/operations.md)
    #: Static bearer token a Prometheus scraper presents at ``/metrics``
    #: (``Authorization: Bearer <it>``); an admin-scoped access token is accepted too. Empty:
    #: admin tokens only, except in dev mode, where ``/metrics`` is open (the loopback demo).
    metrics_token: str = ""
    #: ``/readyz`` in workers mode (``embedded_dispatcher`` off): at least one worker
    #: heartbeat must be younger than this many seconds.
    health_worker_stale_after: float = 30.0
    #: How often each worker writes its heartbeat row (seconds).
    worker_heartbeat_interval: float = 5.0
    #: ``/readyz`` fails when the oldest *due* back-channel row has waited longer than this
    #: past its due time (seconds; 0: no check). Rows waiting out a backoff do not count: one
    #: dead RP must not take the OP out of its load balancer.
    health_outbox_max_lag: float = 300.0
    #: ``/readyz`` answers within this many seconds: a database that accepts connections
    #: and then hangs fails the ``database`` check instead of holding the probe (0: no bound).
    health_check_timeout: float = 3.0
    #: Log format of ``oidc-logout worker`` (and of hosts calling
    #: :func:`oidc_logout.logs.configure_logging`): ``text`` or ``json`` (one object a line).
    log_format: str = "text"
    #: ``oidc-logout worker``: serve ``/metrics`` / ``/healthz`` + ``/readyz`` on these
    #: ports (0: off); ``--metrics-port`` / ``--health-port`` override. Same port: both.
    worker_metrics_port: int = 0
    worker_health_port: int = 0
    #: Address the worker's metrics and health server listens on.
    worker_http_host: str = "127.0.0.1"
    #: Serve the operator console (``/console``, admin-authenticated HTML).
    console_enabled: bool = True
    #: End-User subjects (what the login passed to ``sign_in``) whose browser OP session
    #: opens the operator console without an admin token: an extension-mode host's own
    #: login (its MFA included) signs its operators in. Empty: admin tokens only.
    console_admin_subjects: tuple[str, ...] = ()
    # Kill switch at scale (issue 17): a termination by subject, client or credential whose
    # scope exceeds termination.INLINE_LIMIT rows is cut off at commit and finishes in chunks
    # of this many rows, each its own transaction, run by the delivery loop (oidc_logout.chunks).
    termination_chunk_size: int = 500
    #: Seconds of chunk work a delivery loop does per cycle before it claims deliveries again
    #: (at least one chunk); 0 leaves the chunks to other processes (or chunks.run_pending).
    termination_chunk_budget: float = 0.5
    # Delivery engine (issue 17 / issue 14 item 4: worker health)
    #: A standalone worker that cannot reach its database backs off (one warning line per
    #: step) and exits non-zero (69) after this many seconds; 0: retry forever.
    worker_db_unreachable_exit_after: float = 300.0

    # Extension mode outside the host's app (issue 11): the host's Authlib models, named by
    # import path, for the processes that never run ``init_app`` (``oidc-logout terminate``,
    # ``expire``, the workers). Checked at start-up by oidc_logout.host_models.
    #: The host's token model on Authlib's ``OAuth2TokenMixin``, as ``package.module:Class``
    #: (e.g. ``examples.authlib_idp.models:OAuth2Token``): terminations run by these processes
    #: revoke its rows in their own transaction. Empty: no host tokens (turnkey mode).
    #: In the host's app ``OIDCLogout(token_model=...)`` must name the same class.
    host_token_model: str = ""
    #: The column of ``host_token_model`` naming the End-User (the OP session's subject,
    #: converted to the column's type).
    host_token_user_attribute: str = "user_id"
    #: The host's client model on Authlib's ``OAuth2ClientMixin``, as ``package.module:Class``:
    #: the extension's shadow client rows follow its writes (logout URIs, deletion) and are
    #: refreshed from it before a termination writes its outbox. Empty: copied when a client
    #: gets a code. In the host's app ``OIDCLogout(client_model=...)`` must name the same class.
    host_client_model: str = ""

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
    _check_names(values, prefix, {prefix + f.name.upper() for f in fields} | {CONFIG_FILE_ENV})
    changes: dict[str, Any] = {}
    for f in fields:
        key = prefix + f.name.upper()
        if key in values:
            raw = values[key]
            default = getattr(base, f.name)
            changes[f.name] = _coerce(key, raw, default) if isinstance(raw, str) else raw
    return _checked(base.replace(**changes), changes, prefix)


def settings_from_env(base: Settings | None = None) -> Settings:
    environ = {k: v for k, v in os.environ.items() if k != CONFIG_FILE_ENV}
    return settings_from_mapping(environ, base=base)


def _checked(settings: Settings, changed: Mapping[str, Any], prefix: str) -> Settings:
    """No setting takes a negative number (lifetimes, timeouts, counts, bounds)."""
    for name in changed:
        value = getattr(settings, name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise SettingsError(f"{prefix}{name.upper()}={value!r} must not be negative")
    return settings


# -- one loader for every command: defaults < TOML file < environment < flags ------------------

#: The environment variable naming the TOML settings file (``--config FILE`` wins).
CONFIG_FILE_ENV = "OIDC_LOGOUT_CONFIG_FILE"
#: The source of each effective value, in increasing precedence.
SOURCES = ("default", "file", "env", "flag")
_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
#: Fields whose value is a credential, besides names ending in ``_token``, ``_secret``,
#: ``_password`` or ``_key`` and fields declared with ``metadata={"secret": True}``.
_SECRET_NAMES: frozenset[str] = frozenset()
_SECRET_SUFFIXES = ("_token", "_secret", "_password", "_key")


@dataclass(frozen=True)
class LoadedSettings:
    """The effective settings and where each value came from."""

    settings: Settings
    #: field name -> one of :data:`SOURCES`.
    sources: Mapping[str, str]
    #: The TOML file read, if any.
    config_file: str | None = None

    def rows(self) -> list[tuple[str, str, str]]:
        """``(OIDC_LOGOUT_NAME, shown value, source)`` per setting, secrets redacted."""
        return [
            (
                f"OIDC_LOGOUT_{name.upper()}",
                shown_value(name, getattr(self.settings, name)),
                self.sources[name],
            )
            for name in _FIELDS
        ]


def is_secret(name: str) -> bool:
    """Whether the setting ``name`` holds a credential (never printed)."""
    f = _FIELDS.get(name)
    return (
        name in _SECRET_NAMES
        or name.endswith(_SECRET_SUFFIXES)
        or bool(f is not None and f.metadata.get("secret"))
    )


def shown_value(name: str, value: Any) -> str:
    """A setting's value as ``config show`` prints it: secrets and database passwords redacted."""
    if is_secret(name):
        return "(set, redacted)" if value else "(empty)"
    if name == "database_url":
        return redact_url(str(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def redact_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def _from_toml(path: Path, key: str, value: Any, like: Any) -> Any:
    """A TOML value for a field of the type of ``like``; strings are read like env values."""
    where = f"{path}: {key}"
    if isinstance(value, str) and not isinstance(like, str):
        return _coerce(where, value, like)
    if isinstance(like, bool):
        if isinstance(value, bool):
            return value
        raise SettingsError(f"{where} = {value!r} is not a boolean (use true or false)")
    if isinstance(like, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"{where} = {value!r} is not a number")
        if isinstance(like, int) and not isinstance(value, int):
            raise SettingsError(f"{where} = {value!r} is not an integer")
        return type(like)(value)
    if isinstance(like, tuple):
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise SettingsError(f"{where} = {value!r} is not a list of strings")
    if not isinstance(value, str):
        raise SettingsError(f"{where} = {value!r} is not a string")
    return value


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Field values from a TOML file: top-level keys named like the fields (``issuer``,
    ``database_url``, ``delivery_concurrency``…), or the same under an ``[oidc_logout]``
    table. An unknown key is an error naming the closest setting."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"config file {file} does not exist") from None
    except OSError as exc:
        raise SettingsError(f"config file {file} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {file} is not valid TOML: {exc}") from None
    if isinstance(data.get("oidc_logout"), dict) and len(data) == 1:
        data = data["oidc_logout"]
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key.lower().removeprefix("oidc_logout_")
        if name not in _FIELDS:
            close = difflib.get_close_matches(name, list(_FIELDS), n=1, cutoff=0.75)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise SettingsError(f"{file}: {key} is not a setting{hint}")
        out[name] = _from_toml(file, key, value, getattr(Settings(), name))
    return out


def load_settings(
    *,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> LoadedSettings:
    """The settings every ``oidc-logout`` command runs with: the dataclass defaults, then the
    TOML file (``config_file``, else ``OIDC_LOGOUT_CONFIG_FILE``), then ``OIDC_LOGOUT_*``
    environment variables, then ``flags`` (field name -> value; None means not given).
    Each layer is validated as it is read (:class:`SettingsError` names key and value)."""
    env = dict(os.environ if environ is None else environ)
    path = config_file or env.get(CONFIG_FILE_ENV) or None
    sources = dict.fromkeys(_FIELDS, "default")
    settings = Settings()
    if path:
        from_file = read_config_file(path)
        settings = _checked(settings.replace(**from_file), from_file, "")
        sources.update(dict.fromkeys(from_file, "file"))
    env.pop(CONFIG_FILE_ENV, None)
    settings = settings_from_mapping(env, base=settings)
    sources.update({n: "env" for n in _FIELDS if f"OIDC_LOGOUT_{n.upper()}" in env})
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    unknown = set(given) - set(_FIELDS)
    if unknown:
        raise SettingsError(f"not a setting: {', '.join(sorted(unknown))}")
    settings = _checked(settings.replace(**given), given, "--")
    sources.update(dict.fromkeys(given, "flag"))
    return LoadedSettings(settings, sources, str(path) if path else None)


def production_problems(settings: Settings, *, signs: bool = True) -> list[str]:
    """What makes ``settings`` unfit for production (empty in dev mode).

    ``signs``: the process signs logout or ID tokens with the issuer (an OP, a worker, a
    command that delivers), so the issuer must be the real one: https (OpenID Connect
    Discovery 1.0 §3 and Back-Channel Logout 1.0 §2.4: RPs compare ``iss`` with it)."""
    if settings.dev_mode:
        return []
    default = Settings()
    problems = []
    if signs and settings.issuer == default.issuer:
        problems.append(
            f"OIDC_LOGOUT_ISSUER is the development default {default.issuer}: "
            "RPs refuse logout tokens whose iss is not their OP's issuer"
        )
    elif signs and not settings.issuer.startswith("https://"):
        problems.append(f"OIDC_LOGOUT_ISSUER={settings.issuer} is not https (Discovery 1.0 §3)")
    if settings.database_url == default.database_url:
        problems.append(
            f"OIDC_LOGOUT_DATABASE_URL is the development default {default.database_url} "
            "(a file in the working directory)"
        )
    return problems


def check_production(settings: Settings, *, signs: bool = True) -> None:
    """Refuse to start outside development mode with a development issuer or database:
    raises :class:`SettingsError` listing every problem and how to fix it."""
    problems = production_problems(settings, signs=signs)
    if problems:
        raise SettingsError(
            "refusing to start outside development mode: "
            + "; ".join(problems)
            + " (set the real values, or OIDC_LOGOUT_DEV_MODE=true on a development machine)"
        )


__all__ = [
    "CONFIG_FILE_ENV",
    "LoadedSettings",
    "Settings",
    "SettingsError",
    "check_production",
    "load_settings",
    "production_problems",
    "read_config_file",
    "redact_url",
    "settings_from_env",
    "settings_from_mapping",
    "shown_value",
]
