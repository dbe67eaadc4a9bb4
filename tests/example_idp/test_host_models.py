"""The host's models outside the host's app (issue 11, gaps c and e).

(c) ``oidc-logout terminate`` / ``expire`` and ``oidc-logout worker`` run without the example's
Flask app; named by ``OIDC_LOGOUT_HOST_TOKEN_MODEL`` / ``OIDC_LOGOUT_HOST_CLIENT_MODEL``, the
example's token rows are revoked by their terminations, in the termination's transaction, and
the example refuses those tokens afterwards.

(e) The extension's shadow client rows follow the example's own writes to its client table
(its clients-file loader, an ORM update or delete in its session, a Core UPDATE behind the
ORM's back), so a logout goes to the URI the RP registers now, without a new authorization.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
import time
from typing import Any

import pytest
from authlib.integrations.sqla_oauth2 import create_save_token_func
from authlib.oauth2.rfc6749 import OAuth2Request
from sqlalchemy import create_engine, select, update
from sqlalchemy.orm import Session

from examples.authlib_idp import seed
from examples.authlib_idp.models import OAuth2Client, OAuth2Token, User, db
from oidc_logout.op import by_subject, terminate
from oidc_logout.storage.models import Client, Delivery, OPSession, Termination
from oidc_logout.testing import CaptureServer, Reply
from tests.cli.conftest import one_error, run_cli
from tests.faults.conftest import WorkerProc

from .conftest import (
    PASSWORD,
    WEBAPP,
    ExampleIdP,
    alice_sub,
    host_row,
    logout_client,
    signed_in,
    start_example,
    token_request,
    userinfo_status,
    verify_id_token,
)

TOKEN_MODEL = "examples.authlib_idp.models:OAuth2Token"
CLIENT_MODEL = "examples.authlib_idp.models:OAuth2Client"


def start(database_url: str, clients: list[dict[str, Any]], **config: Any) -> ExampleIdP:
    """The example as run.py starts it, with extra ``OIDC_LOGOUT_*`` config keys."""
    return start_example(database_url, clients=clients, config=config)


#: The example delivers nothing and sweeps nothing itself: what happens is the CLI's doing.
QUIET = {"OIDC_LOGOUT_EMBEDDED_DISPATCHER": False, "OIDC_LOGOUT_EXPIRY_SWEEP_INTERVAL": 0}


@pytest.fixture
def host_config() -> dict[str, Any]:
    return QUIET


@pytest.fixture
def quiet_idp(adopted: tuple[ExampleIdP, dict[str, Any]]) -> tuple[ExampleIdP, dict[str, Any]]:
    """The adopted example with WEBAPP and ``portal``, started with QUIET."""
    return adopted


def cli_env(idp: ExampleIdP, database_url: str, **extra: str) -> dict[str, str]:
    return {
        "OIDC_LOGOUT_DATABASE_URL": database_url,
        "OIDC_LOGOUT_ISSUER": idp.url,
        "OIDC_LOGOUT_DEV_MODE": "true",
        "OIDC_LOGOUT_HOST_TOKEN_MODEL": TOKEN_MODEL,
        "OIDC_LOGOUT_HOST_CLIENT_MODEL": CLIENT_MODEL,
        **extra,
    }


def token_from_before_adoption(idp: ExampleIdP) -> str:
    """A row as Authlib's create_save_token_func wrote it before the adoption: no OP session."""
    access = secrets.token_urlsafe(32)
    with idp.app.test_request_context():
        request = OAuth2Request("POST", f"{idp.url}/oauth/token")
        request.user = db.session.scalar(select(User).where(User.username == "alice"))
        request.client = type("C", (), {"client_id": WEBAPP["client_id"]})()
        create_save_token_func(db.session, OAuth2Token)(
            {
                "token_type": "Bearer",
                "access_token": access,
                "refresh_token": secrets.token_urlsafe(32),
                "scope": "openid profile",
                "expires_in": 3600,
            },
            request,
        )
    return access


def token_row(idp: ExampleIdP, access_token: str) -> tuple[int, int]:
    row = host_row(idp, access_token)
    return row.access_token_revoked_at, row.refresh_token_revoked_at


def shadow_uri(idp: ExampleIdP, client_id: str = "portal") -> str | None:
    with idp.app.app_context():
        return db.session.scalar(select(Client.backchannel_logout_uri).where(Client.client_id == client_id))


# -- (c) the CLI and the workers revoke the host's tokens ------------------------------------------
def test_cli_terminate_revokes_the_hosts_tokens_in_its_own_transaction(
    quiet_idp: tuple[ExampleIdP, dict[str, Any]], database_url: str, rp: CaptureServer
) -> None:
    idp, meta = quiet_idp
    _browser, tokens = signed_in(idp, meta)
    before_adoption = token_from_before_adoption(idp)
    assert userinfo_status(idp, tokens["access_token"]) == 200
    assert userinfo_status(idp, before_adoption) == 200

    out = run_cli(
        "terminate",
        "--sub",
        alice_sub(idp),
        "--reason",
        "account disabled",
        "--wait",
        "30",
        "--json",
        **cli_env(idp, database_url),
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    # The session's token row and the one from before adoption (found by user_id).
    assert report["sessions_ended"] == 1 and report["tokens_revoked"] == 2
    assert report["result"]["backchannel"] == {"delivered": 1}
    (hit,) = rp.hits("/portal/backchannel")
    assert hit.sid == verify_id_token(idp.url, tokens["id_token"])["sid"]

    # One transaction, one clock: the host's rows carry the termination's own timestamp.
    with idp.app.app_context():
        term = db.session.get(Termination, report["id"])
        assert term is not None
        stamp = int(term.created_at.timestamp())
    assert token_row(idp, tokens["access_token"]) == (stamp, stamp)
    assert token_row(idp, before_adoption)[0] == stamp
    # The host refuses them: its resource protection, its refresh grant.
    assert userinfo_status(idp, tokens["access_token"]) == 401
    assert userinfo_status(idp, before_adoption) == 401
    refreshed = token_request(
        idp.url, meta, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"


def test_cli_expire_revokes_the_host_tokens_of_the_expired_session_only(
    quiet_idp: tuple[ExampleIdP, dict[str, Any]], database_url: str, rp: CaptureServer
) -> None:
    idp, meta = quiet_idp
    _browser, tokens = signed_in(idp, meta)
    before_adoption = token_from_before_adoption(idp)
    with idp.app.app_context():  # the session was last seen two days ago
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
        db.session.execute(update(OPSession).values(created_at=long_ago, last_seen_at=long_ago))
        db.session.commit()

    out = run_cli("expire", "--json", **cli_env(idp, database_url))
    assert out.returncode == 0, out.stderr
    (term_id,) = json.loads(out.stdout)["terminations"]
    with idp.app.app_context():
        term = db.session.get(Termination, term_id)
        assert term is not None and term.initiator == "expiry" and term.tokens_revoked == 1
    assert userinfo_status(idp, tokens["access_token"]) == 401
    # Expiry ends sessions, not the subject: a token no session issued lives on.
    assert userinfo_status(idp, before_adoption) == 200


@pytest.mark.postgres
def test_worker_chunks_revoke_the_hosts_tokens_of_the_sessions_they_end(
    pg_databases: Any, rp: CaptureServer
) -> None:
    """A large termination committed by a process that does not know the host's models (here:
    an engine nobody registered a store for) leaves its per-session work to the workers; the
    worker, told the host's token model, revokes the host's tokens of the sessions it ends."""
    database_url = pg_databases.new()
    idp = start(database_url, [WEBAPP, logout_client(rp)], **QUIET)
    worker = None
    try:
        _browser, tokens = signed_in(idp, logout_client(rp))
        engine = create_engine(database_url)
        with Session(engine) as s:
            term = terminate(
                s, by_subject(alice_sub(idp)), reason="offboarded", initiator="test", inline_limit=0
            )
            term_id = term.id
            s.commit()
        engine.dispose()
        assert userinfo_status(idp, tokens["access_token"]) == 200  # nothing revoked at commit

        worker = WorkerProc(
            database_url, cli=True, OIDC_LOGOUT_ISSUER=idp.url, OIDC_LOGOUT_HOST_TOKEN_MODEL=TOKEN_MODEL
        )
        assert rp.wait_for(1, 30, path="/portal/backchannel"), worker.lines
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with idp.app.app_context():
                if db.session.get(Termination, term_id).state == "complete":  # type: ignore[union-attr]
                    break
            time.sleep(0.1)
        assert userinfo_status(idp, tokens["access_token"]) == 401
        with idp.app.app_context():
            assert db.session.get(Termination, term_id).tokens_revoked == 1  # type: ignore[union-attr]
    finally:
        if worker is not None:
            worker.proc.terminate()
            worker.proc.wait(20)
        idp.stop()


@pytest.fixture(scope="module")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An oidc-logout database with signing keys and none of the host's tables."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'op.db'}"
    assert run_cli("migrate", "--create-keys", OIDC_LOGOUT_DATABASE_URL=url).returncode == 0
    return url


@pytest.mark.parametrize(
    ("setting", "says", "command"),
    [
        ("examples.authlib_idp.models.OAuth2Token", "package.module:Class", "terminate"),
        (
            "examples.authlib_idp.nowhere:OAuth2Token",
            "cannot import examples.authlib_idp.nowhere",
            "terminate",
        ),
        ("examples.authlib_idp.models:Nothing", "has no attribute Nothing", "expire"),
        ("examples.authlib_idp.app:Path", "is not a mapped SQLAlchemy class", "terminate"),
        ("examples.authlib_idp.models:User", "lacks the columns of Authlib's OAuth2TokenMixin", "worker"),
        ("examples.authlib_idp.models:User", "lacks the columns of Authlib's OAuth2ClientMixin", "client"),
    ],
)
def test_cli_and_worker_refuse_a_host_model_they_cannot_use(
    migrated_sqlite: str, setting: str, says: str, command: str
) -> None:
    args = {"terminate": ("terminate", "--sub", "1", "--reason", "x"), "worker": ("worker",)}.get(
        command, ("expire",)
    )
    variable = "OIDC_LOGOUT_HOST_CLIENT_MODEL" if command == "client" else "OIDC_LOGOUT_HOST_TOKEN_MODEL"
    out = run_cli(
        *args,
        OIDC_LOGOUT_DATABASE_URL=migrated_sqlite,
        OIDC_LOGOUT_DEV_MODE="true",
        **{variable: setting},
    )
    assert out.returncode == 2, out.stderr
    line = one_error(out)
    assert variable in line and says in line, line


def test_cli_refuses_a_database_without_the_hosts_table(migrated_sqlite: str) -> None:
    """The model imports and checks out, but the database named is not the host's."""
    out = run_cli(
        "terminate",
        "--sub",
        "1",
        "--reason",
        "x",
        OIDC_LOGOUT_DATABASE_URL=migrated_sqlite,
        OIDC_LOGOUT_DEV_MODE="true",
        OIDC_LOGOUT_HOST_TOKEN_MODEL=TOKEN_MODEL,
    )
    assert out.returncode == 6, out.stderr
    assert "oauth2_token is not in this database" in one_error(out)


def test_the_setting_and_the_argument_must_name_the_same_model(sqlite_url: str) -> None:
    with pytest.raises(ValueError, match="name different classes"):
        start(sqlite_url, [], OIDC_LOGOUT_HOST_TOKEN_MODEL="examples.authlib_idp.models:OAuth2Client")
    idp = start(
        sqlite_url, [], OIDC_LOGOUT_HOST_TOKEN_MODEL=TOKEN_MODEL, OIDC_LOGOUT_HOST_CLIENT_MODEL=CLIENT_MODEL
    )
    idp.stop()


# -- (e) the shadow client rows follow the host's client table ----------------------------------
def test_a_moved_backchannel_logout_uri_gets_the_next_logout_without_a_new_authorization(
    database_url: str, rp: CaptureServer
) -> None:
    idp = start(database_url, [WEBAPP, logout_client(rp, path="/old")])
    try:
        browser, tokens = signed_in(idp, logout_client(rp, path="/old"))
        assert shadow_uri(idp) == rp.base_url + "/old"
        # The RP moves its endpoint; the host updates the client the way it always does
        # (its clients-file loader: an ORM update in its own session). No new authorization.
        seed(idp.app, password=PASSWORD, clients=[logout_client(rp, path="/new")])
        assert shadow_uri(idp) == rp.base_url + "/new"

        r = browser.http.get(
            f"{idp.url}/oidc/end_session",
            params={
                "id_token_hint": tokens["id_token"],
                "post_logout_redirect_uri": "http://127.0.0.1:9/portal/bye",
            },
            allow_redirects=False,
            timeout=10,
        )
        assert r.status_code == 302
        assert rp.wait_for(1, 10, path="/new")
        assert rp.hits("/old") == []
    finally:
        idp.stop()


def test_a_queued_logout_follows_the_rp_to_its_new_uri(database_url: str, rp: CaptureServer) -> None:
    """The old endpoint answers 503 (retryable); the host edits the client in its own session
    (an admin changing client_metadata); the retries go to the new URI."""
    rp.script("/old", Reply(status=503))
    idp = start(
        database_url,
        [WEBAPP, logout_client(rp, path="/old")],
        OIDC_LOGOUT_DELIVERY_BACKOFF_BASE=0.05,
        OIDC_LOGOUT_DELIVERY_BACKOFF_CAP=0.2,
    )
    try:
        signed_in(idp, logout_client(rp, path="/old"))
        provider = idp.app.extensions["oidc_logout"].provider
        provider.terminate_now(by_subject(alice_sub(idp)), reason="test", initiator="test", wait=0)
        assert rp.wait_for(1, 10, path="/old")
        with idp.app.app_context():
            client = db.session.scalar(select(OAuth2Client).where(OAuth2Client.client_id == "portal"))
            assert client is not None
            client.set_client_metadata(
                dict(client.client_metadata, backchannel_logout_uri=rp.base_url + "/new")
            )
            db.session.commit()
        assert rp.wait_for(1, 10, path="/new")
        with idp.app.app_context():
            (row,) = db.session.scalars(select(Delivery).where(Delivery.client_id == "portal"))
            assert row.target_uri == rp.base_url + "/new"
    finally:
        idp.stop()


def test_a_client_the_host_deleted_is_told_nothing(database_url: str, rp: CaptureServer) -> None:
    idp = start(database_url, [WEBAPP, logout_client(rp)], **QUIET)
    try:
        signed_in(idp, logout_client(rp))
        with idp.app.app_context():
            db.session.delete(
                db.session.scalar(select(OAuth2Client).where(OAuth2Client.client_id == "portal"))
            )
            db.session.commit()
            shadow = db.session.get(Client, "portal")  # kept: participations point at it
            assert shadow is not None
            assert shadow.backchannel_logout_uri is None and shadow.redirect_uris == []
        provider = idp.app.extensions["oidc_logout"].provider
        outcome = provider.terminate_now(by_subject(alice_sub(idp)), reason="test", initiator="test", wait=0)
        with idp.app.app_context():
            term = db.session.get(Termination, outcome.termination_id)
            assert term is not None and term.sessions_ended == 1
            assert db.session.scalars(select(Delivery)).all() == []
    finally:
        idp.stop()


def test_cli_terminate_reads_the_hosts_client_table_before_writing_the_outbox(
    quiet_idp: tuple[ExampleIdP, dict[str, Any]], database_url: str, rp: CaptureServer
) -> None:
    """A write no mapper event sees (a Core UPDATE, another program): the CLI's termination
    re-reads the host's client row before it writes the outbox."""
    idp, meta = quiet_idp
    signed_in(idp, meta)
    with idp.app.app_context():
        table = OAuth2Client.__table__
        moved = dict(
            json.loads(
                db.session.scalar(select(table.c.client_metadata).where(table.c.client_id == "portal"))
            )
        )
        moved["backchannel_logout_uri"] = rp.base_url + "/moved"
        db.session.execute(
            update(table).where(table.c.client_id == "portal").values(client_metadata=json.dumps(moved))
        )
        db.session.commit()
    assert shadow_uri(idp) == rp.base_url + "/portal/backchannel"  # stale until a termination

    out = run_cli(
        "terminate",
        "--sub",
        alice_sub(idp),
        "--reason",
        "x",
        "--wait",
        "30",
        "--json",
        **cli_env(idp, database_url),
    )
    assert out.returncode == 0, out.stderr
    assert rp.wait_for(1, 10, path="/moved")
    assert rp.hits("/portal/backchannel") == []
    assert shadow_uri(idp) == rp.base_url + "/moved"


def test_a_renamed_client_id_retires_the_old_shadow_row(database_url: str, rp: CaptureServer) -> None:
    """The client_id itself changes after a commit expired the row: the old id's shadow row
    is retired (nothing more is delivered under it), the new id's carries the URIs."""
    idp = start(database_url, [WEBAPP, logout_client(rp)], **QUIET)
    try:
        with idp.app.app_context():
            client = db.session.scalar(select(OAuth2Client).where(OAuth2Client.client_id == "portal"))
            assert client is not None
            db.session.commit()  # every attribute expired, client_id included
            client.client_id = "portal-2"
            db.session.commit()
        assert shadow_uri(idp, "portal") is None
        assert shadow_uri(idp, "portal-2") == rp.base_url + "/portal/backchannel"
    finally:
        idp.stop()


@pytest.mark.postgres
def test_a_code_for_an_unchanged_client_takes_no_lock_on_its_shadow_row(
    pg_databases: Any, rp: CaptureServer
) -> None:
    """Code issuance reads the client's shadow row and writes it only when the host's metadata
    changed: with another transaction holding the row (FOR NO KEY UPDATE, the lock an UPDATE
    of it would need), a sign-in to that client still completes. Concurrent sign-ins to one
    RP do not queue on its row."""
    url = pg_databases.new()
    meta = logout_client(rp)
    idp = start(url, [WEBAPP, meta], **QUIET)
    engine = create_engine(url)
    try:
        signed_in(idp, meta)  # the shadow row exists and matches the host's metadata
        done: list[dict[str, Any]] = []
        with engine.connect() as locker:
            locker.exec_driver_sql(
                "SELECT 1 FROM oidc_logout_client WHERE client_id = 'portal' FOR NO KEY UPDATE"
            )
            worker = threading.Thread(target=lambda: done.append(signed_in(idp, meta)[1]), daemon=True)
            worker.start()
            worker.join(15)
            finished_while_locked = bool(done)
            locker.rollback()
        worker.join(30)
        assert finished_while_locked, "code issuance waited for the shadow row's lock"
        assert done and done[0]["access_token"]
    finally:
        idp.stop()
        engine.dispose()
        pg_databases.drop(url)
