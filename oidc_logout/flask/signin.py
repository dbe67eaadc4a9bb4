"""The Flask side of :mod:`oidc_logout.signin`: start the OP session in the request's
transaction, commit, set the cookie, and let the RPs of a replaced session hear of its end."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from werkzeug.wrappers import Response

from ..provider import Provider
from ..signin import start_session
from .opsession import current_op_session, set_cookie
from .server import request_db

__all__ = ["sign_in"]


def sign_in(
    response: Response,
    provider: Provider,
    subject: str,
    *,
    auth_time: dt.datetime | None = None,
    amr: Sequence[str] | None = None,
    acr: str | None = None,
) -> str:
    """Record the authentication, commit, set the session cookie on ``response``; the sid."""
    db = request_db(provider)
    started = start_session(
        db, subject, current=current_op_session(db, provider.settings), auth_time=auth_time, amr=amr, acr=acr
    )
    sid = started.session.sid
    db.commit()
    if started.replaced_termination_id:
        provider.dispatch(started.replaced_termination_id, wait=0)
    set_cookie(response, provider.settings, started.cookie)
    return sid
