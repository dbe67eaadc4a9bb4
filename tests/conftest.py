"""Shared fixtures: databases (SQLite and the real PostgreSQL), a live demo IdP on a loopback
port, and the CI rule that a test needing PostgreSQL, Redis or Chromium never silently skips."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get("OIDC_LOGOUT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SERVICE_MARKERS = ("postgres", "redis", "browser", "node")
#: A skip whose reason names one of these also counts, marked or not.
SERVICE_WORDS = ("postgres", "redis", "chromium", "browser", "playwright", "npm")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def service_available(name: str) -> bool:
    if name == "postgres":
        return _port_open("127.0.0.1", 5432)
    if name == "redis":
        return _port_open("127.0.0.1", 6379)
    if name == "browser":
        return Path("/usr/bin/chromium").exists() or shutil.which("chromium") is not None
    if name == "node":
        node_modules = Path(__file__).parent / "interop" / "node" / "node_modules"
        return shutil.which("node") is not None and (node_modules / "oidc-provider").is_dir()
    return True


def pytest_runtest_setup(item: pytest.Item) -> None:
    for name in SERVICE_MARKERS:
        if item.get_closest_marker(name) and not service_available(name):
            pytest.skip(f"{name} is not available on this machine")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With CI=true, a skipped test that needs a service fails the run: a green CI must prove
    that the PostgreSQL, Redis and browser tests ran."""
    if not IN_CI:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    bad = []
    for rep in reporter.stats.get("skipped", []):
        keywords = getattr(rep, "keywords", {}) or {}
        reason = str(getattr(rep, "longrepr", "") or "").lower()
        if any(m in keywords for m in SERVICE_MARKERS) or any(w in reason for w in SERVICE_WORDS):
            bad.append(rep.nodeid)
    if bad:
        reporter.write_line(
            f"CI=true: {len(bad)} test(s) needing PostgreSQL/Redis/Chromium were skipped:", red=True
        )
        for nodeid in bad[:20]:
            reporter.write_line(f"  {nodeid}", red=True)
        session.exitstatus = 1


# -- databases -------------------------------------------------------------------------------
class PGDatabases:
    """Creates a fresh PostgreSQL database per test from a migrated template (fast: a file copy)."""

    def __init__(self) -> None:
        from sqlalchemy import create_engine, text

        from oidc_logout.storage.schema import make_engine, upgrade

        self._text = text
        self.admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.template = f"oidc_tpl_{secrets.token_hex(4)}"
        with self.admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{self.template}"'))
        engine = make_engine(self._url(self.template))
        upgrade(engine)
        engine.dispose()
        self.created: list[str] = []

    def _url(self, name: str) -> str:
        return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    def new(self) -> str:
        name = f"oidc_t_{secrets.token_hex(5)}"
        with self.admin.connect() as c:
            c.execute(self._text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        self.created.append(name)
        return self._url(name)

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self.admin.connect() as c:
            c.execute(self._text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        with self.admin.connect() as c:
            for name in self.created:
                c.execute(self._text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            c.execute(self._text(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PGDatabases]:
    if not service_available("postgres"):
        pytest.skip("postgres is not available on this machine")
    dbs = PGDatabases()
    yield dbs
    dbs.close()


BOTH_DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _fresh_database(request: pytest.FixtureRequest, sqlite_dir: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{sqlite_dir / 'op.db'}"
        return
    dbs: PGDatabases = request.getfixturevalue("pg_databases")
    url = dbs.new()
    yield url
    dbs.drop(url)


@pytest.fixture(params=BOTH_DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database: every test using it runs on SQLite and on PostgreSQL."""
    yield from _fresh_database(request, tmp_path)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'op.db'}"


@pytest.fixture(scope="module", params=BOTH_DATABASES)
def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database shared by one test module, on SQLite and on PostgreSQL."""
    yield from _fresh_database(request, tmp_path_factory.mktemp("db"))
