"""A host Flask app with routes of its own, and the extension added to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from oidc_logout.config import Settings
from oidc_logout.demo.users import DemoUsers
from oidc_logout.op import OIDCLogout
from oidc_logout.provider import Provider

ISSUER = "https://op.example"


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[Provider]:
    p = Provider(
        Settings(issuer=ISSUER, database_url=f"sqlite:///{tmp_path / 'op.db'}", dev_mode=True),
        DemoUsers("wonderland"),
    )
    p.setup()
    yield p
    p.stop_background()
    p.engine.dispose()


def new_host(template_folder: str | None = None) -> Flask:
    app = Flask("host_app", template_folder=template_folder)
    app.secret_key = "host-secret"

    @app.get("/")
    def home() -> str:
        return "host home"

    @app.post("/upload")
    def upload() -> str:
        from flask import request

        return str(len(request.get_data()))

    return app


@pytest.fixture
def host() -> Flask:
    return new_host()


AddExtension = Callable[..., OIDCLogout]


@pytest.fixture
def add_extension(provider: Provider) -> AddExtension:
    def add(app: Flask, **kwargs: object) -> OIDCLogout:
        return OIDCLogout(app, provider=provider, start_background=False, **kwargs)  # type: ignore[arg-type]

    return add
