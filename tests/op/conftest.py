"""Fixtures shared by the OP tests."""

from __future__ import annotations

from typing import Any

import pytest

from oidc_logout.flask import views
from oidc_logout.rfc7009 import fastpath


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What the RFC 7009 fast path answered for each request it was given (True = it
    revoked), by the WSGI middleware the demo IdP installs or by the view."""
    seen: list[bool] = []
    real = fastpath.try_revoke_access_token

    def spy(*args: Any, **kwargs: Any) -> bool:
        result = real(*args, **kwargs)
        seen.append(result)
        return result

    monkeypatch.setattr(views, "try_revoke_access_token", spy)
    monkeypatch.setattr(fastpath, "try_revoke_access_token", spy)
    return seen
