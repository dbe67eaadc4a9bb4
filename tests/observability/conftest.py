"""A live OP with three back-channel RPs (real loopback receivers, ``CaptureServer``) and the
helpers the observability tests share: scraping ``/metrics`` and signing in as a user."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.idp import Browser, authorize
from tests.termination.conftest import Env, make_env

Sample = tuple[str, tuple[tuple[str, str], ...]]


def scrape(url: str, token: str | None = None) -> dict[Sample, float]:
    """``/metrics`` parsed: {(sample name, sorted labels): value}."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = requests.get(f"{url}/metrics", headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain")
    out: dict[Sample, float] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def sign_in(
    env: Env, user: str = "alice", names: tuple[str, ...] = ("rp-a", "rp-b")
) -> tuple[Browser, dict[str, Any]]:
    """A browser session at the OP and tokens for each RP in ``names`` (real code flow)."""
    browser = Browser(env.idp.url)
    browser.login(user)
    return browser, {n: authorize(browser, env.metas[n]) for n in names}


@pytest.fixture
def env_factory(database_url: str) -> Iterator[Callable[..., Env]]:
    made: list[Env] = []

    def make(**kwargs: Any) -> Env:
        e = make_env(database_url, **kwargs)
        made.append(e)
        return e

    yield make
    for e in made:
        e.idp.stop()
        e.rps.stop()
