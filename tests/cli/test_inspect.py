"""`deliveries` filters (state, channel, client, termination, newest first, limit) and `show`
(the whole report of one termination), in tables for people and JSON for machines."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from oidc_logout.termination import by_subject
from tests.delivery.conftest import Reply
from tests.support.idp import Browser, authorize
from tests.termination.conftest import Env, make_env

from .conftest import run_cli


@pytest.fixture(scope="module")
def two_terminations(module_database_url: str) -> Iterator[tuple[Env, list[str]]]:
    """alice logged out twice from rp-a (answers 200) and rp-b (refuses with 400)."""
    env = make_env(module_database_url, replies={"rp-b": [Reply(400, body=b'{"error":"invalid_request"}')]})
    ids = []
    for reason in ("first", "second"):
        browser = Browser(env.idp.url)
        browser.login()
        for name in ("rp-a", "rp-b"):
            authorize(browser, env.metas[name])
        outcome = env.idp.provider.terminate_now(by_subject("alice"), reason=reason, initiator="test", wait=5)
        ids.append(outcome.termination_id)
    yield env, ids
    env.idp.stop()
    env.rps.stop()


def _cli(env: Env, *args: str):
    return run_cli(*args, OIDC_LOGOUT_DATABASE_URL=env.idp.settings.database_url, OIDC_LOGOUT_DEV_MODE="true")


def _rows(env: Env, *args: str) -> list[dict]:
    out = _cli(env, "deliveries", "--json", *args)
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout)["deliveries"])


def test_deliveries_filter_by_client_termination_state_and_limit(two_terminations) -> None:
    env, (first, second) = two_terminations
    everything = _rows(env)
    assert len(everything) == 4
    assert [d["id"] for d in everything] == sorted((d["id"] for d in everything), reverse=True)
    assert {d["client_id"] for d in _rows(env, "--client", "rp-b")} == {"rp-b"}
    assert {d["termination_id"] for d in _rows(env, "--termination", first)} == {first}
    failed = _rows(env, "--state", "failed", "--channel", "backchannel")
    assert len(failed) == 2 and {d["client_id"] for d in failed} == {"rp-b"}
    assert _rows(env, "--state", "dead") == []
    newest = _rows(env, "--limit", "1")
    assert len(newest) == 1 and newest[0]["termination_id"] == second
    assert _rows(env, "--channel", "frontchannel") == []


def test_deliveries_prints_a_table_by_default(two_terminations) -> None:
    env, (first, _second) = two_terminations
    out = _cli(env, "deliveries", "--client", "rp-b")
    assert out.returncode == 0, out.stderr
    assert "client" in out.stdout and "state" in out.stdout and "rp-a" not in out.stdout
    assert out.stdout.count("rp-b") == 2 and "failed" in out.stdout and first in out.stdout
    assert "2 shown" in out.stdout and "2 failed" in out.stdout


@pytest.mark.parametrize("bad", [("--state", "bogus"), ("--channel", "smoke-signal"), ("--limit", "0")])
def test_an_invalid_filter_is_a_usage_error(two_terminations, bad) -> None:
    env, _ = two_terminations
    out = _cli(env, "deliveries", *bad)
    assert out.returncode == 2 and out.stdout == ""


def test_show_gives_the_whole_report_of_one_termination(two_terminations) -> None:
    env, (first, _) = two_terminations
    out = _cli(env, "show", first, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["id"] == first and report["reason"] == "first"
    assert report["sessions_ended"] == 1 and len(report["sessions"]) == 1
    assert report["tokens_revoked"] >= 2
    by_client = {d["client_id"]: d for d in report["deliveries"]}
    assert by_client["rp-a"]["state"] == "delivered" and by_client["rp-b"]["state"] == "failed"
    assert by_client["rp-b"]["attempt_log"][0]["http_status"] == 400
    human = _cli(env, "show", first)
    assert human.returncode == 0, human.stderr
    for words in (first, "subject alice", "first", "rp-a", "rp-b", "attempts", "400", report["sessions"][0]):
        assert words in human.stdout, words
