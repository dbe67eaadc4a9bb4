"""FCL-4-browser: the logged-out page loaded in a real browser (``--browser /usr/bin/chromium``).

Parsing the page (FCL-4-iframes, FCL-3-iss-sid) proves the iframes are *written*; this check
proves they are *requested*: a fresh session is logged in over HTTP, its cookies are handed
to headless Chromium, Chromium opens the end_session URL, and the runner's capture server
must see a GET on every front-channel logout path (with iss and sid) followed by the
post-logout redirect (with state). A Content-Security-Policy that blocks the frames, iframes
hidden from script-enabled browsers or a redirect that fires before they load are caught here.
Only loopback targets are opened unless ``--allow-remote``.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from ..model import Status
from ..net import check_target
from ..opclient import Browser

if TYPE_CHECKING:
    from ..op_profile import OPRun

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
#: Request headers kept as evidence of how the browser fetched a URL.
SHOWN_HEADERS = ("Sec-Fetch-Dest", "Sec-Fetch-Mode", "Sec-Fetch-Site", "Referer")


def _cookies(http: Any) -> list[dict[str, Any]]:
    out = []
    for c in http.cookies:
        item: dict[str, Any] = {
            "name": c.name,
            "value": c.value or "",
            "domain": c.domain,
            "path": c.path or "/",
            "secure": bool(c.secure),
            "httpOnly": bool(c.has_nonstandard_attr("HttpOnly") or c.has_nonstandard_attr("httponly")),
        }
        if c.expires:
            item["expires"] = float(c.expires)
        out.append(item)
    return out


def check_in_browser(run: OPRun, executable: str) -> None:
    op = run.op
    assert op is not None
    rec = run.rec
    http_browser = Browser(op)
    tokens = [op.login_and_authorize(http_browser, c) for c in run.clients]
    first = tokens[0]
    if not first.id_token:
        rec.skip("FCL-4-browser", "the token response has no id_token")
        return
    state = secrets.token_urlsafe(16)
    plru = first.client.post_logout_redirect_uri
    url = check_target(op.endpoint("end_session_endpoint") or "", run.o.allow_remote)
    url += ("&" if "?" in url else "?") + urlencode(
        {"id_token_hint": first.id_token, "post_logout_redirect_uri": plru, "state": state}
    )
    fc = [t for t in tokens if t.client.frontchannel_logout_uri]
    plru_path = run._path(plru)
    mark = len(run.receiver.requests)
    timeout = max(run.o.wait, 10.0)
    started = time.monotonic()  # reset once Chromium is up: its start is not the OP's time
    final_url = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        rec.record("FCL-4-browser", Status.SKIPPED, f"--browser needs the playwright package: {exc}")
        return
    try:
        with sync_playwright() as p:
            chromium = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
            try:
                ctx = chromium.new_context()
                ctx.add_cookies(_cookies(http_browser.http))  # type: ignore[arg-type]
                page = ctx.new_page()
                if not run.o.allow_remote:
                    # The page may only reach loopback hosts (the OP and the runner's endpoints).
                    def guard(route: Any) -> None:
                        try:
                            check_target(route.request.url, False)
                        except ValueError:
                            route.abort()
                            return
                        route.continue_()

                    page.route("**/*", guard)
                started = time.monotonic()
                page.goto(url, wait_until="commit", timeout=timeout * 1000)
                while time.monotonic() - started < timeout:
                    if any(r.method == "GET" and r.path == plru_path for r in run.receiver.requests[mark:]):
                        break
                    page.wait_for_timeout(100)
                page.wait_for_timeout(int(min(run.o.settle, 0.5) * 1000))  # late iframe requests
                final_url = page.url
            finally:
                chromium.close()
    except Exception as exc:
        rec.record(
            "FCL-4-browser",
            Status.SKIPPED,
            f"the browser could not be driven: {exc}",
            {"executable": executable},
        )
        return
    waited = time.monotonic() - started
    got = [r for r in run.receiver.requests[mark:] if r.method == "GET"]
    failures: list[str] = []
    seen: list[dict[str, Any]] = []
    for r in got:
        seen.append(
            {
                "path": r.path,
                "query": r.query,
                **{h: r.header(h) for h in SHOWN_HEADERS if r.header(h) is not None},
            }
        )
    for t in fc:
        path = run._path(t.client.frontchannel_logout_uri)
        mine = [r for r in got if r.path == path]
        if not mine:
            failures.append(f"{t.client.client_id}: the browser never requested the frontchannel_logout_uri")
            continue
        q = mine[-1].query
        if q.get("iss") != [run.issuer]:
            failures.append(f"{t.client.client_id}: requested with iss {q.get('iss')!r}")
        if q.get("sid") != [t.id_claims.get("sid")]:
            failures.append(
                f"{t.client.client_id}: requested with sid {q.get('sid')!r}, not the ID token's sid"
            )
    arrived = [r for r in got if r.path == plru_path]
    if not arrived:
        failures.append(f"the post-logout redirect did not reach {plru} in the browser within {timeout:.0f}s")
    elif not any(r.query.get("state") == [state] for r in arrived):
        failures.append("the post-logout redirect arrived without the state sent")
    rec.verdict(
        "FCL-4-browser",
        failures,
        evidence={
            "browser": executable,
            "waited_s": round(waited, 2),
            "final_url": final_url,
            "expected_frontchannel": [t.client.client_id for t in fc],
            "requests_seen": seen,
            "state_sent": state,
        },
    )
