"""Extension mode without the host's app: its Authlib models named by import path, checked at
start-up, and the extension's shadow client rows kept in step with the host's client table.

A host that adopted oidc-logout hands its models to ``OIDCLogout(token_model=...,
client_model=...)``. The processes that never run the host's ``init_app`` -- ``oidc-logout
terminate`` / ``expire`` and the other operator commands, ``oidc-logout worker`` (chunked
terminations) -- learn them from two settings instead::

    OIDC_LOGOUT_HOST_TOKEN_MODEL=examples.authlib_idp.models:OAuth2Token
    OIDC_LOGOUT_HOST_CLIENT_MODEL=examples.authlib_idp.models:OAuth2Client

:func:`install_host_models` imports and checks them (a mapped class with the columns of
Authlib's ``OAuth2TokenMixin`` / ``OAuth2ClientMixin``; :class:`HostModelError`, a one-line
settings error, otherwise) and registers, for the process's engine,

* the :class:`~oidc_logout.host.HostTokenStore`: every termination that runs on that engine
  revokes the host's token rows in its own transaction (as ``init_app`` does in the host);
* the client model: SQLAlchemy mapper events on it (``after_insert`` / ``after_update`` /
  ``after_delete``) bring the shadow row in step on the host's own connection, inside the
  host's flush, whatever code path of the host wrote the client (RFC 7591/7592 endpoints, a
  clients file, an admin edit); and :func:`refresh_shadow_clients`, called by the termination
  right before it writes its outbox, re-reads the host's rows of the clients it is about to
  notify, which also covers writes that bypass the ORM (Core ``UPDATE``, raw SQL, another
  program) and shadow rows that went stale before this module existed.

A deleted host client keeps its shadow row (participations, deliveries and terminations
reference it: they are the history of what was told to whom), with its logout and redirect
URIs cleared, so no new delivery is written for it; its pending back-channel deliveries are
settled ``failed`` ("client deleted at the host"). When the back-channel URI changes, the
client's unfinished back-channel deliveries follow it to the new URI (Back-Channel Logout 1.0
§2.2: the RP's registered ``backchannel_logout_uri`` is where the OP sends the logout token);
with the URI removed they are settled ``failed`` as well.

When both the setting and the ``OIDCLogout`` argument are given they must name the same class
(a web process and a CLI revoking different tables is the failure this guards against):
:class:`HostModelError` at ``init_app`` otherwise.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, event, inspect, select, update
from sqlalchemy.orm import Mapper, Session

from .config import Settings, SettingsError
from .host import HostTokenStore, register_token_store, shadow_client_upsert, shadow_values
from .storage.base import utcnow
from .storage.models import Client, Delivery
from .vocabulary import Channel, DeliveryState

__all__ = [
    "HostClientModel",
    "HostModelError",
    "HostModels",
    "HostTableMissing",
    "check_client_model",
    "check_token_model",
    "import_model",
    "install_host_models",
    "refresh_shadow_clients",
    "sync_host_client",
]

log = logging.getLogger(__name__)

#: The ``OAuth2TokenMixin`` columns a termination and introspection read or write.
TOKEN_COLUMNS = (
    "client_id",
    "access_token",
    "refresh_token",
    "scope",
    "issued_at",
    "expires_in",
    "access_token_revoked_at",
    "refresh_token_revoked_at",
)
#: ``OAuth2ClientMixin`` maps the JSON text of ``client_metadata`` as ``_client_metadata``.
METADATA_ATTRIBUTES = ("_client_metadata", "client_metadata")
DELETED_AT_HOST = "client deleted at the host"
URI_REMOVED = "the client no longer registers a backchannel_logout_uri"
_TOKEN_SETTING = "OIDC_LOGOUT_HOST_TOKEN_MODEL"
_CLIENT_SETTING = "OIDC_LOGOUT_HOST_CLIENT_MODEL"


class HostModelError(SettingsError):
    """A host model setting or argument that cannot be used: one line naming it and why."""


class HostTableMissing(HostModelError):
    """The host model is fine but its table is not in this process's database (wrong
    ``OIDC_LOGOUT_DATABASE_URL``?): a database error, not a settings one."""


@dataclass(frozen=True)
class HostClientModel:
    """The host's client class and the mapped attributes the shadow rows are read from."""

    model: type[Any]
    client_id: str
    metadata: str

    @property
    def table_name(self) -> str:
        return str(inspect(self.model).local_table.name)


@dataclass(frozen=True)
class HostModels:
    """What :func:`install_host_models` registered for an engine (None: not configured)."""

    token_model: type[Any] | None
    token_user_attribute: str
    client: HostClientModel | None

    def tables(self) -> list[str]:
        names = [str(inspect(self.token_model).local_table.name)] if self.token_model is not None else []
        if self.client is not None:
            names.append(self.client.table_name)
        return names


# -- importing and checking ----------------------------------------------------------------------
def import_model(path: str, setting: str) -> type[Any]:
    """The class ``package.module:Class`` names. :class:`HostModelError` (naming ``setting``)
    when the text is not of that form or the import fails."""
    module_name, sep, attr = path.strip().partition(":")
    if not sep or not module_name or not attr:
        raise HostModelError(
            f"{setting}={path!r} is not an import path of the form package.module:Class "
            "(e.g. examples.authlib_idp.models:OAuth2Token)"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # the host's module may fail however it fails: one line
        raise HostModelError(f"{setting}={path!r}: cannot import {module_name}: {_first_line(exc)}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HostModelError(f"{setting}={path!r}: {module_name} has no attribute {attr}") from None
    if not isinstance(obj, type):
        raise HostModelError(f"{setting}={path!r} is not a class")
    return obj


def _mapper(model: Any, what: str) -> Mapper[Any]:
    mapper = inspect(model, raiseerr=False) if isinstance(model, type) else None
    if not isinstance(mapper, Mapper):
        raise HostModelError(f"{what} is not a mapped SQLAlchemy class")
    return mapper


def _column_keys(mapper: Mapper[Any]) -> set[str]:
    return {p.key for p in mapper.column_attrs}


def check_token_model(model: Any, user_attribute: str, what: str) -> None:
    """A mapped class with the ``OAuth2TokenMixin`` columns, ``user_attribute`` and a
    one-column primary key (the side table names token rows by it)."""
    mapper = _mapper(model, what)
    missing = [c for c in (*TOKEN_COLUMNS, user_attribute) if c not in _column_keys(mapper)]
    if missing:
        raise HostModelError(
            f"{what} lacks the columns of Authlib's OAuth2TokenMixin a termination revokes by: "
            + ", ".join(missing)
            + (f" (the user column is {_TOKEN_SETTING}_USER_ATTRIBUTE)" if user_attribute in missing else "")
        )
    if len(mapper.primary_key) != 1:
        raise HostModelError(f"{what} must have a one-column primary key")


def check_client_model(model: Any, what: str) -> HostClientModel:
    """A mapped class with ``client_id`` and the ``client_metadata`` column of
    ``OAuth2ClientMixin``."""
    keys = _column_keys(_mapper(model, what))
    metadata = next((a for a in METADATA_ATTRIBUTES if a in keys), None)
    if "client_id" not in keys or metadata is None:
        raise HostModelError(
            f"{what} lacks the columns of Authlib's OAuth2ClientMixin the shadow rows are read "
            "from: client_id and client_metadata"
        )
    return HostClientModel(model, "client_id", metadata)


def _resolve(setting: str, path: str, explicit: Any, argument: str) -> Any:
    """The explicit class, the setting's, or both when they are the same class."""
    if not path:
        return explicit
    named = import_model(path, setting)
    if explicit is not None and named is not explicit:
        raise HostModelError(
            f"{setting}={path!r} and OIDCLogout({argument}={_qualname(explicit)}) name different "
            "classes: they must be the same (the CLI and workers would revoke another table)"
        )
    return named


def _qualname(cls: Any) -> str:
    return f"{getattr(cls, '__module__', '?')}:{getattr(cls, '__qualname__', repr(cls))}"


def install_host_models(
    engine: Engine,
    settings: Settings,
    *,
    token_model: Any = None,
    client_model: Any = None,
    check_tables: bool = False,
) -> HostModels:
    """Import, check and register the host's models for ``engine`` (see the module
    docstring). ``token_model`` / ``client_model``: the classes the host passed to
    ``OIDCLogout``; the settings must name the same ones. ``check_tables``: also require the
    host's tables in the database (:class:`HostTableMissing`), for processes pointed at it
    by URL only. Nothing is registered unless everything checks out."""
    user_attribute = settings.host_token_user_attribute or "user_id"
    tokens = _resolve(_TOKEN_SETTING, settings.host_token_model, token_model, "token_model")
    clients = _resolve(_CLIENT_SETTING, settings.host_client_model, client_model, "client_model")
    if tokens is not None:
        check_token_model(
            tokens, user_attribute, _describe(_TOKEN_SETTING, settings.host_token_model, tokens)
        )
    client = (
        check_client_model(clients, _describe(_CLIENT_SETTING, settings.host_client_model, clients))
        if clients is not None
        else None
    )
    models = HostModels(tokens, user_attribute, client)
    if check_tables:
        _check_tables(engine, models)
    if tokens is not None:
        register_token_store(engine, HostTokenStore(tokens, user_id_attribute=user_attribute))
    if client is not None:
        _CLIENTS[engine] = client
        _listen(client)
    return models


def _describe(setting: str, path: str, model: Any) -> str:
    return f"{setting}={path!r}" if path else f"{_qualname(model)} (OIDCLogout argument)"


def _check_tables(engine: Engine, models: HostModels) -> None:
    names = models.tables()
    if not names:
        return
    with engine.connect() as connection:
        inspector = inspect(connection)
        missing = [n for n in names if not inspector.has_table(n)]
    if missing:
        raise HostTableMissing(
            f"the host's table {', '.join(missing)} is not in this database: "
            "OIDC_LOGOUT_DATABASE_URL must be the host's database"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# -- keeping the shadow rows in step ---------------------------------------------------------------
#: Which host client model each engine's shadow rows follow.
_CLIENTS: weakref.WeakKeyDictionary[Engine, HostClientModel] = weakref.WeakKeyDictionary()
_SHADOW = Client.__table__.c
_COPIED = tuple(shadow_values({}))


def _engine_of(bind: Any) -> Engine | None:
    engine = getattr(bind, "engine", bind)
    return engine if isinstance(engine, Engine) else None


def _metadata_of(value: Any) -> dict[str, Any] | None:
    """The host's client metadata (a dict, or Authlib's JSON text); None when unreadable."""
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    try:
        data = json.loads(value)
    except (TypeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def sync_host_client(
    connection: Connection, client_id: str, metadata: Mapping[str, Any] | None, now: dt.datetime | None = None
) -> bool:
    """Bring the shadow row of ``client_id`` in step with the host's ``metadata`` (None: the
    host client no longer exists) on ``connection``, in its transaction. Reads first and
    writes only on a difference: a termination that refreshes an unchanged client takes no
    row lock on it (concurrent logouts of one RP do not queue on its row). Returns whether
    anything changed."""
    current = connection.execute(
        select(*(_SHADOW[c] for c in _COPIED)).where(_SHADOW.client_id == client_id)
    ).first()
    if metadata is None and current is None:
        return False
    before = dict(current._mapping) if current is not None else None
    if metadata is None:
        assert before is not None
        desired = before | {
            "backchannel_logout_uri": None,
            "frontchannel_logout_uri": None,
            "post_logout_redirect_uris": [],
            "redirect_uris": [],
        }
    else:
        desired = shadow_values(dict(metadata))
    if before == desired:
        return False
    if metadata is None:
        connection.execute(update(Client).where(Client.client_id == client_id).values(**desired))
    else:
        connection.execute(shadow_client_upsert(connection.dialect.name, client_id, dict(metadata)))
    old_uri = before["backchannel_logout_uri"] if before is not None else None
    new_uri = desired["backchannel_logout_uri"]
    if before is not None and old_uri != new_uri:
        _pending_follow(
            connection, client_id, new_uri, DELETED_AT_HOST if metadata is None else URI_REMOVED, now
        )
    return True


def _pending_follow(
    connection: Connection, client_id: str, uri: str | None, why: str, now: dt.datetime | None
) -> None:
    """The client's unfinished back-channel deliveries go to its new URI, or are settled
    ``failed`` when it has none. A row in flight finishes the attempt it started (its
    snapshot holds the old URI); its retries, if any, go to the new URI, and a settled row's
    late result is dropped by the lease fence (``state = in_flight``) as a lost lease's is."""
    pending = (
        Delivery.client_id == client_id,
        Delivery.channel == Channel.BACKCHANNEL,
        Delivery.state.in_([DeliveryState.PENDING, DeliveryState.IN_FLIGHT]),
    )
    if uri:
        connection.execute(
            update(Delivery).where(*pending, Delivery.target_uri != uri).values(target_uri=uri)
        )
    else:
        connection.execute(
            update(Delivery)
            .where(*pending)
            .values(state=DeliveryState.FAILED, completed_at=now or utcnow(), last_error=why)
        )


def refresh_shadow_clients(db: Session, client_ids: Iterable[str]) -> int:
    """Re-read the host's rows of ``client_ids`` and bring their shadow rows in step, in the
    caller's transaction (the termination calls it right before writing its outbox, so the
    outbox takes the URIs the host holds now). Nothing when no host client model is
    registered for the session's engine (turnkey mode). Returns the rows changed."""
    host = _CLIENTS.get(_engine_of(db.get_bind()))  # type: ignore[arg-type]
    ids = sorted(set(client_ids))
    if host is None or not ids:
        return 0
    connection = db.connection()
    id_col = getattr(host.model, host.client_id)
    meta_col = getattr(host.model, host.metadata)
    found: dict[str, Any] = {}
    for chunk in _chunks(ids, 500):
        found.update(
            (str(r[0]), r[1]) for r in connection.execute(select(id_col, meta_col).where(id_col.in_(chunk)))
        )
    now = utcnow()
    changed: set[str] = set()
    for client_id in ids:
        if client_id in found:
            metadata = _metadata_of(found[client_id])
            if metadata is None:
                log.warning(
                    "client %s: the host's client_metadata is not a JSON object; left as is", client_id
                )
                continue
        else:
            metadata = None
        if sync_host_client(connection, client_id, metadata, now):
            changed.add(client_id)
    if changed:
        # Shadow rows this session loaded earlier must not hide the new values.
        for obj in list(db.identity_map.values()):
            if isinstance(obj, Client) and obj.client_id in changed:
                db.expire(obj)
    return len(changed)


# -- the mapper events -----------------------------------------------------------------------------
def _listen(host: HostClientModel) -> None:
    """Once per class (several apps, one process)."""
    model = host.model
    for name, handler in (
        ("after_insert", _after_write),
        ("after_update", _after_write),
        ("after_delete", _after_delete),
    ):
        if not event.contains(model, name, handler):
            event.listen(model, name, handler, propagate=True)
    client_id = getattr(model, host.client_id)
    if not event.contains(client_id, "set", _client_id_set):
        # The old client_id must be known when it changes (its shadow row is retired), also
        # when the attribute was expired by a commit: load it before the new value is set.
        event.listen(client_id, "set", _client_id_set, active_history=True, propagate=True)


def _client_id_set(_target: Any, value: Any, _old: Any, _initiator: Any) -> Any:
    return value


def _followed(connection: Connection, target: Any) -> HostClientModel | None:
    host = _CLIENTS.get(connection.engine)
    return host if host is not None and isinstance(target, host.model) else None


def _after_write(_mapper: Any, connection: Connection, target: Any) -> None:
    """The host inserted or updated a client: its shadow row follows in the same flush."""
    host = _followed(connection, target)
    if host is None:
        return
    client_id = getattr(target, host.client_id)
    history = inspect(target).attrs[host.client_id].history
    for old in history.deleted or ():
        if old and old != client_id:  # the client_id itself changed: the old one is gone
            sync_host_client(connection, str(old), None)
    if not client_id:
        return
    metadata = _metadata_of(getattr(target, host.metadata))
    if metadata is None:
        log.warning("client %s: the host's client_metadata is not a JSON object; left as is", client_id)
        return
    sync_host_client(connection, str(client_id), metadata)


def _after_delete(_mapper: Any, connection: Connection, target: Any) -> None:
    host = _followed(connection, target)
    if host is None:
        return
    client_id = getattr(target, host.client_id)
    if client_id:
        sync_host_client(connection, str(client_id), None)


def _chunks(items: Sequence[str], n: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
