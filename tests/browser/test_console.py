"""The operator console in a real Chromium: sign in with an admin token (a Secure, HttpOnly,
SameSite=Strict cookie), see a termination with its cause, who asked and each RP's delivery
with its attempts, and requeue a dead letter that is then delivered. The screenshots in
docs/img/console-*.png (docs/operations.md) come from this test:
``OIDC_LOGOUT_SCREENSHOTS=docs/img pytest tests/browser/test_console.py``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from oidc_logout.storage.models import Delivery
from oidc_logout.testing import Reply
from tests.browser.conftest import SCREENSHOT_DIR
from tests.support.idp import Browser, authorize
from tests.termination.conftest import Env, admin_token, make_env

pytestmark = pytest.mark.browser


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    # rp-c answers 500 and a row gets one attempt: it goes dead at once.
    e = make_env(f"sqlite:///{tmp_path / 'op.db'}", replies={"rp-c": [Reply(500)]}, delivery_max_attempts=1)
    yield e
    e.idp.stop()
    e.rps.stop()


def _shot(page: Any, name: str) -> None:
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / name), full_page=True)


def _state(env: Env, delivery_id: int) -> str:
    with env.idp.provider.session_factory() as db:
        return str(db.scalar(select(Delivery.state).where(Delivery.id == delivery_id)))


def test_the_console_shows_a_termination_and_requeues_a_dead_letter(env: Env, new_page: Any) -> None:
    url = env.idp.url
    user = Browser(url)
    user.login("alice")
    for name in ("rp-a", "rp-c"):
        authorize(user, env.metas[name])
    token = admin_token(env)
    r = requests.post(
        f"{url}/admin/terminations",
        json={"sub": "alice", "reason": "compromised laptop", "wait": 5},
        headers={"Authorization": f"Bearer {token}"},
        timeout=15,
    )
    assert r.status_code == 201, r.text
    term = r.json()
    dead = [d for d in term["deliveries"] if d["client_id"] == "rp-c"]
    assert len(dead) == 1 and dead[0]["state"] == "dead", term
    dead_id = dead[0]["id"]

    page = new_page()
    page.set_viewport_size({"width": 1280, "height": 720})
    # Not signed in: the console sends the browser to its login form.
    page.goto(f"{url}/console")
    assert page.url == f"{url}/console/login"
    page.fill("input[name=token]", "not-a-token")
    page.click("button[type=submit]")
    assert page.locator("[role=alert]").inner_text().startswith("That is not an active access token")
    page.fill("input[name=token]", token)
    with page.expect_navigation(url=f"{url}/console"):
        page.click("main button[type=submit]")
    cookie = next(c for c in page.context.cookies() if c["name"] == "oidc_logout_console")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console"

    # Recent terminations: cause and who asked.
    row = page.locator("#terminations tbody tr", has_text=term["id"])
    assert row.count() == 1
    cells = row.locator("td").all_inner_texts()
    assert cells[3] == "admin" and cells[4] == "admin:admin" and "compromised laptop" in cells[5]
    assert page.locator("#dead-count").inner_text() == "1"
    _shot(page, "console-terminations.png")

    # Search by subject and by client.
    page.fill("#subject", "bob")
    page.click("form[role=search] button")
    assert page.locator("#terminations tbody tr", has_text=term["id"]).count() == 0
    page.fill("#subject", "alice")
    page.fill("#client_id", "rp-c")
    page.click("form[role=search] button")
    assert page.locator("#terminations tbody tr", has_text=term["id"]).count() == 1

    # One termination: each RP's delivery with its attempts.
    page.click(f"a:has-text('{term['id']}')")
    assert page.url == f"{url}/console/terminations/{term['id']}"
    a_row = page.locator("#deliveries tr[data-client=rp-a]")
    c_row = page.locator("#deliveries tr[data-client=rp-c]")
    assert "delivered" in a_row.inner_text()
    assert "dead" in c_row.inner_text() and "HTTP 500" in c_row.inner_text()
    _shot(page, "console-termination.png")

    # The dead letters page, then the requeue: rp-c is back and accepts the logout token.
    page.goto(f"{url}/console/deliveries?state=dead")
    assert page.locator("#deliveries tbody tr[data-client=rp-c]").count() == 1
    _shot(page, "console-dead-letters.png")
    env.rps.script("/rp-c", Reply(200))
    page.click(f"button.requeue[data-delivery='{dead_id}']")
    assert page.locator("[role=status]").inner_text() == f"Delivery {dead_id} requeued: it is due now."
    deadline = time.monotonic() + 10
    while _state(env, dead_id) != "delivered" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _state(env, dead_id) == "delivered"
    assert env.rps.count("/rp-c") == 2
    page.goto(f"{url}/console/terminations/{term['id']}")
    c_text = page.locator("#deliveries tr[data-client=rp-c]").inner_text()
    assert "delivered" in c_text and c_text.count("HTTP") >= 2  # both attempts in the log
    _shot(page, "console-requeued.png")

    # Sign out: the cookie is gone and the console asks for a token again.
    page.click("header button")
    assert page.url == f"{url}/console/login"
    assert not [c for c in page.context.cookies() if c["name"] == "oidc_logout_console"]


def test_a_requeue_without_the_forms_csrf_token_changes_nothing(env: Env, new_page: Any) -> None:
    """A cross-site POST carrying the console cookie (it would not: SameSite=Strict) still
    lacks the CSRF token of the console's forms."""
    url = env.idp.url
    user = Browser(url)
    user.login("alice")
    authorize(user, env.metas["rp-c"])
    token = admin_token(env)
    r = requests.post(
        f"{url}/admin/terminations",
        json={"sub": "alice", "reason": "test", "wait": 5},
        headers={"Authorization": f"Bearer {token}"},
        timeout=15,
    )
    dead_id = r.json()["deliveries"][0]["id"]
    page = new_page()
    page.goto(f"{url}/console/login")
    page.fill("input[name=token]", token)
    with page.expect_navigation(url=f"{url}/console"):
        page.click("main button[type=submit]")
    resp = page.request.post(f"{url}/console/deliveries/{dead_id}/requeue", form={"csrf_token": "forged"})
    assert resp.status == 400
    assert _state(env, dead_id) == "dead"
