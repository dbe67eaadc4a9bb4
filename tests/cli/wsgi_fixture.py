"""WSGI apps for tests/cli/test_serve_arguments.py (`serve --app` references)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def fixture_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def make_app() -> Callable[..., Iterable[bytes]]:
    def made_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return fixture_app(environ, start_response)

    return made_app


app = fixture_app
NOT_CALLABLE = "a string"
