"""Every RP check is shown able to fail: the rp profile runs against a hand-written RP
(tests/conformance/fixtures/broken_rp.py), correct by default and broken one rule at a time
(back-channel and front-channel logout URIs); one fixture server serves the whole module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oidc_logout_conformance.adapters import HttpSessionAdapter, SessionUnknown
from oidc_logout_conformance.catalog import rp_checks
from oidc_logout_conformance.model import Recorder
from oidc_logout_conformance.report import write
from oidc_logout_conformance.rp_op import RunnerOP
from oidc_logout_conformance.rp_profile import RPOptions, run_rp

from .fixtures.broken_rp import CLIENT_ID, RP_FLAGS, BrokenRP

CASES: dict[str, tuple[set[str], set[str]]] = {
    "skip_signature": (
        {
            "RP-BCL-2.6-alg-none",
            "RP-BCL-2.6-hs256-pubkey",
            "RP-BCL-2.6-bad-signature",
            "RP-BCL-2.6-unknown-kid",
        },
        set(),
    ),
    "accept_alg_none": ({"RP-BCL-2.6-alg-none"}, set()),
    "ignore_iss": ({"RP-BCL-2.6-wrong-iss"}, set()),
    "ignore_aud": ({"RP-BCL-2.6-wrong-aud"}, set()),
    "iat_optional": ({"RP-BCL-2.6-iat-missing"}, set()),
    "accept_stale_iat": (set(), {"RP-BCL-2.6-iat-stale"}),
    "accept_expired": ({"RP-BCL-2.6-exp-expired"}, set()),
    "exp_optional": ({"RP-BCL-2.6-exp-missing"}, set()),
    "jti_optional": ({"RP-BCL-2.6-jti-missing"}, set()),
    "events_lax": (
        {"RP-BCL-2.6-events-missing", "RP-BCL-2.6-events-not-object", "RP-BCL-2.6-event-value-not-object"},
        set(),
    ),
    "event_value_lax": ({"RP-BCL-2.6-event-value-not-object"}, set()),
    "accept_future_iat": (set(), {"RP-BCL-2.6-iat-future"}),
    "answer_204": (set(), {"RP-BCL-2.8-valid"}),
    "end_all_user_sessions": (set(), {"RP-BCL-2.7-sid-scoped"}),
    # not a defect: lower-case header names (cache-control: no-store) - everything passes
    "lowercase_headers": (set(), set()),
    "accept_nonce": ({"RP-BCL-2.6-nonce"}, set()),
    "sid_sub_optional": ({"RP-BCL-2.6-no-sid-sub"}, set()),
    "ignore_typ": (set(), {"RP-BCL-2.6-typ"}),
    "no_replay_cache": (set(), {"RP-BCL-2.6-replay"}),
    "no_session_end": ({"RP-BCL-2.7-session-ended", "RP-BCL-2.7-sub-only"}, set()),
    "sub_only_unsupported": ({"RP-BCL-2.7-sub-only"}, set()),
    "no_cache_header": (set(), {"RP-BCL-2.8-no-store"}),
    "text_errors": (set(), {"RP-BCL-2.8-error-body"}),
    "fc_ignore_iss": (set(), {"RP-FCL-2-wrong-iss"}),
    "fc_no_session_end": ({"RP-FCL-2-session-ended"}, set()),
    "fc_no_cache_header": (set(), {"RP-FCL-2-no-store"}),
}


@pytest.fixture(scope="module")
def op() -> Iterator[RunnerOP]:
    server = RunnerOP().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def broken_rp(op: RunnerOP) -> Iterator[BrokenRP]:
    rp = BrokenRP(op.issuer)
    yield rp
    rp.stop()


def _run(tmp_path: Path, op: RunnerOP, rp: BrokenRP, **flags: bool) -> dict:
    rp.reset(**flags)
    rec = Recorder("rp")
    adapter = HttpSessionAdapter(rp.url + "/login?sub={sub}&sid={sid}", rp.url + "/protected")
    run_rp(
        RPOptions(rp.url + "/backchannel", CLIENT_ID, adapter, frontchannel_uri=rp.url + "/frontchannel"),
        rec,
        op=op,
        announce=False,
    )
    return write(rec, tmp_path)


def _status(report: dict, status: str) -> set[str]:
    return {c["id"] for c in report["checks"] if c["status"] == status}


def test_correct_rp_fixture_passes_everything(tmp_path: Path, op: RunnerOP, broken_rp: BrokenRP) -> None:
    report = _run(tmp_path, op, broken_rp)
    assert _status(report, "pass") == set(rp_checks()), report["summary"]


@pytest.mark.parametrize("flag", sorted(CASES))
def test_broken_rp_fails_exactly_the_right_checks(
    tmp_path: Path, op: RunnerOP, broken_rp: BrokenRP, flag: str
) -> None:
    fails, warns = CASES[flag]
    report = _run(tmp_path, op, broken_rp, **{flag: True})
    assert _status(report, "fail") == fails
    assert _status(report, "warning") == warns
    assert report["result"] == ("fail" if fails else "pass")
    assert {s["name"]: s["status"] for s in report["scenarios"]} == {
        "backchannel-endpoint": "complete",
        "rp-session": "complete",
    }


def test_every_rp_check_is_shown_able_to_fail() -> None:
    covered = set().union(*(f | w for f, w in CASES.values()))
    # RP-BCL-2.8-valid is shown failing by test_unreachable_rp_fails_valid_check.
    assert set(rp_checks()) - covered == set()
    assert set(RP_FLAGS) == set(CASES)


def test_unreachable_rp_fails_valid_check(tmp_path: Path) -> None:
    op = RunnerOP().start()
    try:
        rec = Recorder("rp")
        run_rp(
            RPOptions("http://127.0.0.1:9/backchannel", CLIENT_ID, None, wait_for_rp=0.2),
            rec,
            op=op,
            announce=False,
        )
        report = write(rec, tmp_path)
    finally:
        op.stop()
    assert _status(report, "fail") == {"RP-BCL-2.8-valid"}
    scenarios = {s["name"]: s for s in report["scenarios"]}
    assert scenarios["backchannel-endpoint"]["status"] == "incomplete"
    assert scenarios["backchannel-endpoint"]["step"] == "waiting for the RP"


def test_run_without_session_adapter_is_incomplete_not_pass(
    tmp_path: Path, op: RunnerOP, broken_rp: BrokenRP
) -> None:
    """Every response may be right, but whether a token ends a session was never observed:
    the run is incomplete (exit 3), not a pass."""
    rp = broken_rp.reset()
    rec = Recorder("rp")
    run_rp(RPOptions(rp.url + "/backchannel", CLIENT_ID, None), rec, op=op, announce=False)
    report = write(rec, tmp_path)
    assert _status(report, "fail") == set()
    assert "RP-BCL-2.7-session-ended" in _status(report, "skipped")
    assert report["result"] == "incomplete"
    rp_session = next(s for s in report["scenarios"] if s["name"] == "rp-session")
    assert rp_session["status"] == "incomplete" and "session adapter" in rp_session["reason"]


def test_frontchannel_checks_skipped_without_uri(tmp_path: Path, op: RunnerOP, broken_rp: BrokenRP) -> None:
    rp = broken_rp.reset()
    rec = Recorder("rp")
    adapter = HttpSessionAdapter(rp.url + "/login?sub={sub}&sid={sid}", rp.url + "/protected")
    run_rp(RPOptions(rp.url + "/backchannel", CLIENT_ID, adapter), rec, op=op, announce=False)
    report = write(rec, tmp_path)
    fc = {"RP-FCL-2-session-ended", "RP-FCL-2-wrong-iss", "RP-FCL-2-no-store"}
    assert _status(report, "skipped") == fc
    assert all(c["reason"] == "no --frontchannel-uri given" for c in report["checks"] if c["id"] in fc)


class _GoesDark(HttpSessionAdapter):
    """Sessions are created, then the protected URL stops telling logged in from logged out
    (as an RP answering 500 would)."""

    def is_active(self, handle: Any) -> bool:
        if getattr(handle, "observed", False):
            raise SessionUnknown("the protected URL answered 500")
        handle.observed = True
        return super().is_active(handle)


def test_unobservable_session_is_not_a_pass(tmp_path: Path, op: RunnerOP, broken_rp: BrokenRP) -> None:
    """A session the adapter could not observe after the token proves nothing: no session
    check passes on it, and the run is incomplete."""
    rp = broken_rp.reset()
    rec = Recorder("rp")
    adapter = _GoesDark(rp.url + "/login?sub={sub}&sid={sid}", rp.url + "/protected")
    run_rp(RPOptions(rp.url + "/backchannel", CLIENT_ID, adapter), rec, op=op, announce=False)
    report = write(rec, tmp_path)
    session_checks = {"RP-BCL-2.7-session-ended", "RP-BCL-2.7-sid-scoped", "RP-BCL-2.7-sub-only"}
    assert session_checks <= _status(report, "skipped")
    assert report["result"] == "incomplete"
    rp_session = next(s for s in report["scenarios"] if s["name"] == "rp-session")
    assert rp_session["step"] == "observing an RP session" and "500" in rp_session["reason"]
