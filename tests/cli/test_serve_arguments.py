"""`oidc-logout serve` arguments read before any server starts: the bind address granian
listens on and the `--app` reference (the forms gunicorn reads)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oidc_logout.granian_server import Bind, parse_bind
from oidc_logout.serve import _source_binds, import_app

from .conftest import free_port, one_error, run_cli


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        ("127.0.0.1:8000", Bind("127.0.0.1", 8000)),
        ("0.0.0.0:80", Bind("0.0.0.0", 80)),
        ("[::1]:8443", Bind("::1", 8443)),
        ("localhost:9000", Bind("127.0.0.1", 9000)),
        (":8000", Bind("127.0.0.1", 8000)),
        ("unix:/run/op.sock", Bind(uds="/run/op.sock")),
    ],
)
def test_a_bind_address_is_read_in_gunicorns_forms(bind: str, expected: Bind) -> None:
    assert parse_bind(bind) == expected


@pytest.mark.parametrize(
    "bind", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "op.example:8000", "1.2.3:80", ""]
)
def test_a_bind_address_granian_cannot_listen_on_is_refused(bind: str) -> None:
    with pytest.raises(ValueError):
        parse_bind(bind)


def test_serve_refuses_a_bad_bind_as_a_usage_error_before_touching_the_database(tmp_path: Path) -> None:
    out = run_cli(
        "serve",
        "--bind",
        "op.example:8000",
        OIDC_LOGOUT_ISSUER=f"http://127.0.0.1:{free_port()}",
        OIDC_LOGOUT_DATABASE_URL=f"sqlite:///{tmp_path / 'op.db'}",
        OIDC_LOGOUT_DEV_MODE="true",
    )
    assert out.returncode == 2
    assert "--bind" in one_error(out)
    assert not (tmp_path / "op.db").exists()


def test_an_app_is_a_module_attribute_or_a_factory_called_without_arguments() -> None:
    assert import_app("tests.cli.wsgi_fixture:app").__name__ == "fixture_app"
    assert import_app("tests.cli.wsgi_fixture:make_app()").__name__ == "made_app"


@pytest.mark.parametrize(
    "uri",
    [
        "tests.cli.wsgi_fixture",
        "tests.cli.wsgi_fixture:",
        ":app",
        "tests.cli.wsgi_fixture:make_app(1)",
        "tests.cli.wsgi_fixture:NOT_CALLABLE",
    ],
)
def test_an_app_reference_that_names_no_wsgi_app_is_refused(uri: str) -> None:
    with pytest.raises(ValueError):
        import_app(uri)


@pytest.mark.parametrize(
    ("source", "binds"),
    [
        ("app = make()", True),
        ("def app(environ, start_response): ...", True),
        ("from flask import Flask as app", True),
        ("import app.wsgi", True),
        ("try:\n    from fast import app\nexcept ImportError:\n    app = None", True),
        ("if True:\n    for app in []: pass", True),
        ("def init():\n    global app\n    app = 1", True),
        ("application = make()", False),
        ("def f():\n    app = 1", False),  # a function's local
        ("class C:\n    app = 1", False),  # a class attribute
        ("from hostlib import *", None),  # may bind anything
        ("def __getattr__(name): ...", None),  # PEP 562
        ("globals()['app'] = make()", None),
        ("import sys\nsys.modules[__name__].app = 1", None),
        ("app = (", None),  # a syntax error: the workers' import reports it
    ],
)
def test_the_app_check_reads_the_source_and_refuses_only_what_it_is_sure_of(
    source: str, binds: bool | None, tmp_path: Path
) -> None:
    path = tmp_path / "wsgi_module.py"
    path.write_text(source + "\n")
    assert _source_binds(str(path), "app") is binds
