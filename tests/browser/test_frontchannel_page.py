"""The OP's front-channel logout page over plain HTTP (no browser needed).

Front-Channel Logout 1.0 §2/§3: one iframe per logged-in RP whose src is the registered
frontchannel_logout_uri plus iss and sid (both or neither), the registered query component
retained; the page itself is not cacheable and runs under a strict CSP.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import select

from oidc_logout.frontchannel.page import Frame, frame_origins, iframe_url
from oidc_logout.storage.models import Delivery
from tests.support.idp import Browser, IdP, authorize, client_meta, start_idp

ISS = "https://op.example.com"
SID = "a" * 43


# -- iframe_url ---------------------------------------------------------------------------------
def test_iframe_url_adds_iss_and_sid():
    url = iframe_url("https://rp.example.org/fc", ISS, SID)
    assert url == f"https://rp.example.org/fc?iss=https%3A%2F%2Fop.example.com&sid={SID}"
    assert parse_qs(urlsplit(url).query) == {"iss": [ISS], "sid": [SID]}


def test_iframe_url_retains_the_registered_query_byte_for_byte():
    """§2: the query component "MUST be retained when adding additional query parameters"."""
    uri = "https://rp.example.org/fc?tenant=a%20b&flag&plus=x+y&empty="
    url = iframe_url(uri, ISS, SID)
    assert url.startswith(uri + "&iss=")
    assert parse_qs(urlsplit(url).query, keep_blank_values=True) == {
        "tenant": ["a b"],
        "flag": [""],
        "plus": ["x y"],
        "empty": [""],
        "iss": [ISS],
        "sid": [SID],
    }


def test_iframe_url_never_sends_two_issuers():
    """A registered iss/sid pair is replaced, so the RP sees exactly one of each."""
    url = iframe_url("https://rp.example.org/fc?iss=https%3A%2F%2Fevil&a=1&sid=old", ISS, SID)
    assert parse_qs(urlsplit(url).query) == {"a": ["1"], "iss": [ISS], "sid": [SID]}


def test_iframe_url_without_sid_adds_neither():
    """§2: "if either is included, both MUST be"."""
    assert iframe_url("https://rp.example.org/fc?a=1", ISS, None) == "https://rp.example.org/fc?a=1"


def test_frame_origins_for_csp():
    frames = [
        Frame(1, "https://a.example/fc?x"),
        Frame(2, "https://a.example/other"),
        Frame(3, "http://127.0.0.1:8001/fc"),
        Frame(4, "http://[::1]:9/fc"),
    ]
    assert frame_origins(frames) == ["https://a.example:443", "http://127.0.0.1:8001", "http://[::1]:9"]


# -- the page end_session renders -----------------------------------------------------------------
@pytest.fixture
def op(tmp_path: Path) -> Iterator[tuple[IdP, dict[str, dict]]]:
    metas = {
        "fc-query": client_meta(
            "fc-query",
            port=20101,
            frontchannel_logout_uri="http://127.0.0.1:20101/fc?tenant=a%20b&flag",
            frontchannel_logout_session_required=True,
        ),
        "fc-plain": client_meta(
            "fc-plain", port=20102, frontchannel_logout_uri="http://127.0.0.1:20102/oidc/frontchannel-logout"
        ),
    }
    idp = start_idp(
        f"sqlite:///{tmp_path / 'op.db'}", clients=list(metas.values()), frontchannel_timeout_ms=2500
    )
    yield idp, metas
    idp.stop()


def _claims(id_token: str) -> dict:
    import base64

    p = id_token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


def _logout(op) -> tuple[IdP, dict, requests.Response, str]:
    idp, metas = op
    browser = Browser(idp.url)
    browser.login()
    tokens = {name: authorize(browser, meta) for name, meta in metas.items()}
    resp = browser.http.get(
        f"{idp.url}/end_session",
        params={
            "id_token_hint": tokens["fc-query"]["id_token"],
            "post_logout_redirect_uri": metas["fc-query"]["post_logout_redirect_uris"][0],
            "state": "st&te",
        },
        allow_redirects=False,
        timeout=10,
    )
    return idp, metas, resp, _claims(tokens["fc-query"]["id_token"])["sid"]


def _iframes(text: str) -> dict[int, str]:
    return {
        int(d): html.unescape(src)
        for d, src in re.findall(r'<iframe data-delivery="(\d+)" src="([^"]+)"', text)
    }


def _csp(resp: requests.Response) -> dict[str, list[str]]:
    out = {}
    for part in resp.headers["Content-Security-Policy"].split(";"):
        name, *values = part.split()
        out[name] = values
    return out


def test_iframes_carry_iss_and_sid_and_keep_the_registered_query(op):
    idp, _metas, resp, sid = _logout(op)
    assert resp.status_code == 200, resp.text
    frames = _iframes(resp.text)
    assert len(frames) == 2
    with idp.provider.session_factory() as db:
        rows = {d.id: d for d in db.scalars(select(Delivery))}
    by_client = {rows[i].client_id: url for i, url in frames.items()}
    assert {rows[i].channel for i in frames} == {"frontchannel"}
    assert {rows[i].state for i in frames} == {"pending"}

    q = by_client["fc-query"]
    assert q.startswith("http://127.0.0.1:20101/fc?tenant=a%20b&flag&iss="), q
    assert parse_qs(urlsplit(q).query, keep_blank_values=True) == {
        "tenant": ["a b"],
        "flag": [""],
        "iss": [idp.url],
        "sid": [sid],
    }
    plain = by_client["fc-plain"]
    assert urlsplit(plain).path == "/oidc/frontchannel-logout"
    assert parse_qs(urlsplit(plain).query) == {"iss": [idp.url], "sid": [sid]}


def test_page_is_no_store_with_a_strict_csp(op):
    _idp, _metas, resp, _ = _logout(op)
    assert "no-store" in resp.headers["Cache-Control"]
    assert resp.headers["Pragma"] == "no-cache"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    csp = _csp(resp)
    assert csp["default-src"] == ["'none'"]
    assert sorted(csp["frame-src"]) == ["http://127.0.0.1:20101", "http://127.0.0.1:20102"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["connect-src"] == ["'self'"]
    assert csp["base-uri"] == ["'none'"]
    (nonce_src,) = csp["script-src"]
    assert re.fullmatch(r"'nonce-[A-Za-z0-9_-]{16,}'", nonce_src)
    assert not any("unsafe" in v for values in csp.values() for v in values)
    nonce = nonce_src[len("'nonce-") : -1]
    scripts = re.findall(r"<script([^>]*)>", resp.text)
    assert scripts and all(f'nonce="{nonce}"' in s for s in scripts)
    # The OP's own session cookie is cleared by the same response.
    assert "op_session=;" in resp.headers.get("Set-Cookie", "")


def test_no_script_fallback_is_a_meta_refresh_to_the_redirect(op):
    _idp, metas, resp, _ = _logout(op)
    target = metas["fc-query"]["post_logout_redirect_uris"][0] + "?state=st%26te"
    m = re.search(r'<noscript><meta http-equiv="refresh" content="(\d+);url=([^"]+)"></noscript>', resp.text)
    assert m, resp.text
    assert int(m.group(1)) == 3  # frontchannel_timeout_ms // 1000 + 1
    assert html.unescape(m.group(2)) == target
    assert f'href="{html.escape(target)}"' in resp.text  # and a link a person can click


def test_report_marks_loaded_frames_confirmed_and_the_rest_unconfirmed(op):
    idp, _metas, resp, _ = _logout(op)
    token = json.loads(re.search(r"token: (\"[^\"]*\")", resp.text).group(1))
    frames = _iframes(resp.text)
    with idp.provider.session_factory() as db:
        rows = {d.id: d.client_id for d in db.scalars(select(Delivery))}
    loaded = [i for i in frames if rows[i] == "fc-plain"]

    bad = requests.post(
        f"{idp.url}/logout/frontchannel-report", json={"token": token + "x", "loaded": loaded}, timeout=5
    )
    assert bad.status_code == 400
    ok = requests.post(
        f"{idp.url}/logout/frontchannel-report", json={"token": token, "loaded": loaded}, timeout=5
    )
    assert ok.status_code == 200 and ok.json() == {"recorded": 2}
    with idp.provider.session_factory() as db:
        states = {d.client_id: d.state for d in db.scalars(select(Delivery))}
    assert states == {"fc-plain": "confirmed", "fc-query": "unconfirmed"}
    # A second report changes nothing: the rows are final.
    again = requests.post(
        f"{idp.url}/logout/frontchannel-report", json={"token": token, "loaded": list(frames)}, timeout=5
    )
    assert again.json() == {"recorded": 0}
