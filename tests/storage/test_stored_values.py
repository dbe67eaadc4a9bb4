"""What the database holds: token values only as SHA-256 hashes, datetimes always aware."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import MetaData, select
from sqlalchemy.orm import Session

from oidc_logout.storage.base import utcnow
from oidc_logout.storage.models import Client, OPSession, Token
from oidc_logout.tokens import token_hash
from tests.support.idp import (
    Browser,
    client_meta,
    exchange_code,
    pkce_pair,
    refresh,
    start_idp,
)

RP = client_meta("store-a")


def _dump_all_rows(engine) -> str:  # type: ignore[no-untyped-def]
    """Every value of every column of every table, as one searchable string."""
    meta = MetaData()
    meta.reflect(engine)
    out = []
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(table.select()):
                out.extend(repr(v) for v in row)
    return "\n".join(out)


def test_tokens_codes_secrets_and_cookies_are_stored_only_as_sha256_hashes(database_url):
    """RFC 9700 §4.14 / RFC 6819 §5.1.4.1.3: no issued credential appears in plaintext in any column."""
    idp = start_idp(database_url, clients=[RP], registration_open=True)
    try:
        browser = Browser(idp.url)
        assert browser.login().status_code == 303
        cookie = browser.http.cookies.get(idp.settings.session_cookie_name)
        verifier, challenge = pkce_pair()
        resp = browser.http.get(
            f"{idp.url}/authorize",
            params={
                "response_type": "code",
                "client_id": RP["client_id"],
                "redirect_uri": RP["redirect_uris"][0],
                "scope": "openid offline_access",
                "state": "st",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
            allow_redirects=False,
            timeout=10,
        )
        code = parse_qs(urlsplit(resp.headers["Location"]).query)["code"][0]
        first = exchange_code(idp.url, RP, code, verifier)
        second = refresh(idp.url, RP, first["refresh_token"]).json()
        registered = requests.post(
            f"{idp.url}/register", json={"redirect_uris": [RP["redirect_uris"][0]]}, timeout=10
        ).json()
        secrets_issued = {
            "cookie": cookie,
            "code": code,
            "client_secret": RP["client_secret"],
            "registered_secret": registered["client_secret"],
            "access_1": first["access_token"],
            "refresh_1": first["refresh_token"],
            "access_2": second["access_token"],
            "refresh_2": second["refresh_token"],
        }
        dump = _dump_all_rows(idp.provider.engine)
        for name, value in secrets_issued.items():
            assert value not in dump, f"{name} is stored in plaintext"
        for name in ("access_1", "refresh_1", "access_2", "refresh_2"):
            digest = hashlib.sha256(secrets_issued[name].encode()).hexdigest()
            assert digest in dump, f"{name} is not stored as its SHA-256 hash"
        with Session(idp.provider.engine) as db:
            hashes = list(db.scalars(select(Token.token_hash)))
            assert len(hashes) == 4 and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes)
            assert db.get(Client, RP["client_id"]).client_secret_hash == token_hash(RP["client_secret"])
            assert db.scalar(select(OPSession.cookie_hash)) == token_hash(cookie)
    finally:
        idp.stop()


def test_datetimes_come_back_timezone_aware(migrated_engine):
    """Storage contract: every datetime read back is aware UTC (SQLite stores them naive)."""
    engine = migrated_engine
    moment = dt.datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with Session(engine) as db, db.begin():
        db.add(
            OPSession(
                sid="tz-sid",
                cookie_hash=None,
                subject="alice",
                auth_time=moment,
                created_at=utcnow(),
                last_seen_at=utcnow(),
            )
        )
    with Session(engine) as db:
        row = db.get(OPSession, "tz-sid")
        for value in (row.auth_time, row.created_at, row.last_seen_at):
            assert value.tzinfo is not None and value.utcoffset() == dt.timedelta(0)
        assert row.auth_time == moment  # the same instant, converted to UTC
        assert row.ended_at is None
        assert row.created_at <= utcnow()  # comparable with aware "now" (no TypeError)


def test_naive_datetime_is_refused(migrated_engine):
    """Storage contract: a naive datetime is a bug; it is refused instead of stored ambiguously."""
    engine = migrated_engine
    with Session(engine) as db:
        db.add(
            OPSession(
                sid="naive",
                subject="alice",
                auth_time=dt.datetime(2030, 1, 1),
                created_at=utcnow(),
                last_seen_at=utcnow(),
            )
        )
        with pytest.raises(Exception, match="naive datetime"):
            db.flush()
