"""Classification of RP answers (Back-Channel Logout 1.0 §2.8) against real loopback RPs."""

from __future__ import annotations

import datetime as dt
import email.utils
import socket
import time
from collections.abc import Iterator

import pytest

from oidc_logout.backchannel.request import (
    DELIVERED,
    FAILED,
    RETRY,
    AttemptResult,
    parse_retry_after,
    post_logout_token,
)
from oidc_logout.poster import Poster

from .conftest import Reply, RPServer


@pytest.fixture
def http() -> Iterator[Poster]:
    s = Poster(dev_mode=True)
    yield s
    s.close()


def post(http: Poster, uri: str, **kw: float) -> AttemptResult:
    opts = {"connect_timeout": 1.0, "read_timeout": 1.0, "max_bytes": 4096, "retry_after_cap": 600.0}
    opts.update(kw)
    return post_logout_token(http, uri, "header.payload.sig", jti="jti-1", **opts)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [200, 204])
def test_rp_answering_200_or_204_is_delivered(http: Poster, rp: RPServer, status: int) -> None:
    res = post(http, rp.url("/ok", Reply(status)))
    assert (res.outcome, res.http_status, res.error) == (DELIVERED, status, None)
    (hit,) = rp.hits("/ok")
    assert hit.form == {"logout_token": ["header.payload.sig"]}
    assert hit.headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_rp_answering_400_is_a_permanent_failure_with_its_error(http: Poster, rp: RPServer) -> None:
    body = b'{"error":"invalid_request","error_description":"' + b"x" * 5000 + b'"}'
    res = post(
        http, rp.url("/bad", Reply(400, {"Content-Type": "application/json"}, body)), max_bytes=64 * 1024
    )
    assert res.outcome == FAILED and res.http_status == 400
    assert res.error and res.error.startswith("HTTP 400 invalid_request: xxx")
    assert len(res.error) < 400  # truncated


@pytest.mark.parametrize("status", [401, 403, 404, 410])
def test_other_4xx_are_permanent_failures(http: Poster, rp: RPServer, status: int) -> None:
    assert post(http, rp.url(f"/s{status}", Reply(status))).outcome == FAILED


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retried(http: Poster, rp: RPServer, status: int) -> None:
    res = post(http, rp.url(f"/s{status}", Reply(status)))
    assert res.outcome == RETRY and res.http_status == status and res.retry_after is None


def test_429_retry_after_seconds_is_honoured_and_capped(http: Poster, rp: RPServer) -> None:
    res = post(http, rp.url("/slow", Reply(429, {"Retry-After": "7"})))
    assert (res.outcome, res.retry_after) == (RETRY, 7.0)
    res = post(http, rp.url("/greedy", Reply(429, {"Retry-After": "99999999"})), retry_after_cap=30.0)
    assert res.retry_after == 30.0


def test_503_retry_after_http_date_is_honoured(http: Poster, rp: RPServer) -> None:
    when = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120), usegmt=True)
    res = post(http, rp.url("/maint", Reply(503, {"Retry-After": when})))
    assert res.outcome == RETRY and res.retry_after is not None
    assert 110 <= res.retry_after <= 121


def test_retry_after_parsing_edge_cases() -> None:
    assert parse_retry_after(None, cap=10) is None
    assert parse_retry_after("soon", cap=10) is None
    assert parse_retry_after("0", cap=10) == 0.0
    past = email.utils.format_datetime(dt.datetime(2000, 1, 1, tzinfo=dt.UTC), usegmt=True)
    assert parse_retry_after(past, cap=10) == 0.0


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_not_followed(http: Poster, rp: RPServer, status: int) -> None:
    target = rp.url("/elsewhere")
    res = post(http, rp.url("/moved", Reply(status, {"Location": target})))
    assert res.outcome == FAILED and "redirect not followed" in (res.error or "")
    assert rp.hits("/elsewhere") == []


def test_huge_response_body_is_not_read_past_the_cap(http: Poster, rp: RPServer) -> None:
    huge = 200 * 1024 * 1024
    t0 = time.monotonic()
    res = post(http, rp.url("/huge", Reply(200, stream_bytes=huge)))
    assert res.outcome == DELIVERED
    res = post(http, rp.url("/huge400", Reply(400, body=b'{"error":"x"}', stream_bytes=huge)))
    assert res.outcome == FAILED and "size limit" in (res.error or "")
    assert time.monotonic() - t0 < 5
    # The receiver could not push the whole body: the OP closed the connection early (wait
    # for the receiver to give up on that reply, then count what it wrote).
    assert rp.wait_for(1, 10, path="/huge400", answered=True)
    assert rp.bytes_sent("/huge400") < huge


def test_hanging_rp_times_out_and_is_retried(http: Poster, rp: RPServer) -> None:
    t0 = time.monotonic()
    res = post(http, rp.url("/hang", Reply(hang=True)), read_timeout=0.5)
    assert res.outcome == RETRY and res.http_status is None and "timeout" in (res.error or "")
    assert 0.4 <= time.monotonic() - t0 < 5  # the 0.5 s read timeout, not the 30 s hang


def test_connection_refused_is_retried(http: Poster) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = post(http, f"http://127.0.0.1:{port}/nobody")
    assert res.outcome == RETRY and res.http_status is None
    assert res.error and "network error" in res.error
