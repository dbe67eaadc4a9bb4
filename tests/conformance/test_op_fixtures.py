"""Every OP check is shown able to fail: the op profile runs against a hand-written OP
(tests/conformance/fixtures/broken_op.py) that is correct by default and broken one rule at a
time; exactly the checks guarding that rule must fail (or warn, for SHOULD-level rules), and
exactly the checks that cannot run any more are skipped. One fixture server serves the whole
module (``BrokenOP.reset``); only the FCL-4-browser cases start Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from oidc_logout_conformance.catalog import CATALOG, op_checks

from .fixtures.broken_op import FLAGS, PASSWORD, USER, BrokenOP
from .helpers import by_status, run

CHROMIUM = "/usr/bin/chromium"
BCL_TOKEN_CHECKS = {
    "BCL-2.5-form-post",
    "BCL-2.4-alg",
    "BCL-2.4-signature",
    "BCL-2.4-typ",
    "BCL-2.4-iss",
    "BCL-2.4-aud",
    "BCL-2.4-iat",
    "BCL-2.4-exp",
    "BCL-2.4-jti",
    "BCL-2.4-events",
    "BCL-2.4-sid-sub",
    "BCL-2.4-no-nonce",
    "BCL-2.4-sid-match",
    "BCL-2.4-jti-unique",
    "BCL-2.5-one-per-rp",
}
FC_CHECKS = {"FCL-3-session-supported", "FCL-4-iframes", "FCL-3-iss-sid"}

# flag -> (checks that must fail, checks that must warn, checks skipped besides FCL-4-browser)
CASES: dict[str, tuple[set[str], set[str], set[str]]] = {
    # discovery
    "issuer_mismatch": ({"DISC-4.3-issuer"}, set(), set()),
    "no_bcl_supported": ({"BCL-2.1-supported"}, set(), set()),
    "no_bcl_session_supported": (set(), {"BCL-2.1-session-supported"}, {"BCL-2.1-id-token-sid"}),
    "no_fcl_supported": (set(), set(), {"FCL-3-supported"} | FC_CHECKS),  # optional feature: skipped
    "fcl_supported_not_bool": ({"FCL-3-supported"}, set(), FC_CHECKS),
    "no_fcl_session_supported": (set(), {"FCL-3-session-supported"}, set()),
    "no_end_session": ({"RPI-2.1-end-session-endpoint"}, set(), set()),  # skips: see the test
    "no_revocation_endpoint": (
        set(),
        {"RFC7009-endpoint"},
        {
            "RFC7009-2.2-unknown-token",
            "RFC7009-2.1-revoke",
            "RFC7009-2.1-other-client",
            "RFC7009-2.1-revoke-access",
            "RFC7662-2.2-inactive",
        },
    ),
    "no_introspection_endpoint": (
        set(),
        {"RFC7662-endpoint"},
        # revoking the access token answers 200, but its effect is not observable
        {
            "RFC7662-2.2-active",
            "RFC7662-2.2-inactive",
            "RFC7662-2.1-auth",
            "RFC7009-2.1-revoke-access",
            "BCL-2.7-revoked-before-notify",
        },
    ),
    "registration_drops_bcl_uri": ({"REG-7591-registration"}, set(), set()),
    "registration_accepts_fragment": ({"REG-BCL-2.2-fragment"}, set(), set()),
    "end_session_get_only": ({"RPI-2-post"}, set(), set()),
    "notify_before_revoke": (set(), {"BCL-2.7-revoked-before-notify"}, set()),
    # logout token and delivery
    "lt_nonce": ({"BCL-2.4-no-nonce"}, set(), set()),
    "lt_no_events": ({"BCL-2.4-events"}, set(), set()),
    "lt_events_member_not_object": ({"BCL-2.4-events"}, set(), set()),
    "lt_wrong_sid": ({"BCL-2.4-sid-match"}, set(), set()),
    "lt_typ_jwt": (set(), {"BCL-2.4-typ"}, set()),
    "lt_alg_none": ({"BCL-2.4-alg", "BCL-2.4-signature"}, set(), set()),
    "lt_alg_rs384": ({"BCL-2.4-alg"}, set(), set()),
    "lt_unknown_kid": ({"BCL-2.4-signature"}, set(), set()),
    "lt_json": ({"BCL-2.5-form-post"}, set(), set()),
    "lt_no_exp": ({"BCL-2.4-exp"}, set(), set()),
    "lt_no_jti": ({"BCL-2.4-jti"}, set(), set()),
    "lt_same_jti": ({"BCL-2.4-jti-unique"}, set(), set()),
    "lt_wrong_aud": ({"BCL-2.4-aud"}, set(), set()),
    "lt_wrong_iss": ({"BCL-2.4-iss"}, set(), set()),
    "lt_old_iat": ({"BCL-2.4-iat"}, set(), set()),
    "lt_no_sid_sub": ({"BCL-2.4-sid-sub", "BCL-2.4-sid-match"}, set(), set()),
    "no_delivery": ({"BCL-2.5-delivered"}, set(), BCL_TOKEN_CHECKS | {"BCL-2.7-revoked-before-notify"}),
    "first_client_only": ({"BCL-2.5-delivered"}, set(), set()),
    "deliver_twice": (set(), {"BCL-2.5-one-per-rp"}, set()),
    "keep_refresh": (set(), {"BCL-2.7-refresh-revoked", "BCL-2.7-revoked-before-notify"}, set()),
    # the ID token has no sid (nor have the logout token and the iframe URL: a consistent OP)
    "id_token_no_sid": ({"BCL-2.1-id-token-sid", "FCL-3-iss-sid"}, set(), set()),
    # not a defect: one sid per client for one login (backchannel §2.1: a sid identifies the
    # session at an RP) - everything passes
    "per_client_sid": (set(), set(), set()),
    # RP-initiated logout
    "reject_valid_logout": (
        {
            "RPI-2-logout",
            "RPI-3-state",
            "RPI-2-session-ended",
            "BCL-2.5-delivered",
            "FCL-4-iframes",
            "RPI-3-no-state",
            "RPI-2-post",
        },
        {"BCL-2.7-refresh-revoked"},
        BCL_TOKEN_CHECKS | {"FCL-3-iss-sid", "BCL-2.7-revoked-before-notify"},
    ),
    "no_state": ({"RPI-3-state"}, set(), set()),
    "no_state_no_redirect": ({"RPI-3-no-state"}, set(), set()),
    "redirect_any_plru": ({"RPI-3-unregistered-uri", "RPI-3-modified-uri"}, set(), set()),
    "accept_forged_hint": (
        {"RPI-2-forged-hint", "RPI-2-bad-hint"},
        set(),
        set(),
    ),  # no signature check at all
    "ignore_unverifiable_hint": ({"RPI-2-bad-hint"}, set(), set()),
    "ignore_client_id": ({"RPI-2-client-id-mismatch"}, set(), set()),
    "session_not_ended": ({"RPI-2-session-ended"}, set(), set()),
    "no_hint_logout_now": (set(), {"RPI-6-no-id-token-hint", "RPI-6-no-params", "RPI-3-only-state"}, set()),
    "no_hint_redirect": (set(), {"RPI-6-no-id-token-hint"}, set()),
    "default_plru": ({"RPI-6-no-params", "RPI-3-only-state"}, set(), set()),
    # front-channel
    "fc_no_sid": ({"FCL-3-iss-sid"}, set(), set()),
    "fc_no_iframes": ({"FCL-4-iframes"}, set(), {"FCL-3-iss-sid"}),
    # RFC 7009 / 7662
    "revoke_unknown_400": ({"RFC7009-2.2-unknown-token"}, set(), set()),
    "revoke_other_client": ({"RFC7009-2.1-other-client"}, set(), set()),
    "revoke_noop": ({"RFC7009-2.1-revoke", "RFC7662-2.2-inactive"}, {"RFC7009-2.1-revoke-access"}, set()),
    "introspect_always_active": (
        {"RFC7662-2.2-inactive"},
        {"BCL-2.7-refresh-revoked", "RFC7009-2.1-revoke-access", "BCL-2.7-revoked-before-notify"},
        set(),
    ),
    "introspect_always_inactive": ({"RFC7662-2.2-active", "RFC7009-2.1-other-client"}, set(), set()),
    "introspect_no_auth": ({"RFC7662-2.1-auth"}, set(), set()),
}
# Flags that only a real browser can notice: run with --browser (Chromium), see below.
BROWSER_CASES: dict[str, set[str]] = {
    "fc_csp_blocks_frames": {"FCL-4-browser"},  # iframes written, but CSP frame-src 'none' blocks them
}

BASE = ["op", "--username", USER, "--password", PASSWORD, "--wait", "1.0", "--settle", "0.01"]


@pytest.fixture(scope="module")
def broken_op() -> Iterator[BrokenOP]:
    op = BrokenOP()
    yield op
    op.stop()


def _run(tmp_path: Path, op: BrokenOP, *extra: str, **flags: bool) -> tuple[int, dict]:
    op.reset(**flags)
    return run([*BASE, "--issuer", op.issuer, *extra], tmp_path)


def test_correct_fixture_passes_everything(tmp_path: Path, broken_op: BrokenOP) -> None:
    rc, report = _run(tmp_path, broken_op)
    assert rc == 0
    assert {s["name"]: s["status"] for s in report["scenarios"]} == dict.fromkeys(
        ("discovery", "login", "logout", "backchannel", "token-revocation"), "complete"
    )
    assert by_status(report, "pass") == set(op_checks()) - {"FCL-4-browser"}, report["summary"]
    browser = next(c for c in report["checks"] if c["id"] == "FCL-4-browser")
    assert browser["status"] == "skipped" and "--browser" in browser["reason"]


@pytest.mark.parametrize("flag", sorted(CASES))
def test_broken_op_fails_exactly_the_right_checks(tmp_path: Path, broken_op: BrokenOP, flag: str) -> None:
    fails, warns, skips = CASES[flag]
    rc, report = _run(tmp_path, broken_op, **{flag: True})
    assert by_status(report, "fail") == fails
    assert by_status(report, "warning") == warns
    if flag == "no_end_session":
        # The run stops before any logout: only the checks that precede it can have run.
        assert by_status(report, "pass") == {
            c
            for c in op_checks()
            if c.startswith(("DISC", "RFC", "REG"))
            or c
            in {
                "BCL-2.1-supported",
                "BCL-2.1-session-supported",
                "FCL-3-supported",
                "FCL-3-session-supported",
            }
        }
    else:
        assert by_status(report, "skipped") == skips | {"FCL-4-browser"}
    assert rc == (1 if fails else 0)


@pytest.mark.browser
def test_browser_check_against_fixtures(tmp_path: Path, broken_op: BrokenOP) -> None:
    """FCL-4-browser passes against the correct fixture and fails exactly for the flags only a
    browser notices (one Chromium launch per run)."""
    rc, report = _run(tmp_path / "ok", broken_op, "--browser", CHROMIUM)
    assert by_status(report, "pass") == set(op_checks()), {
        c["id"]: c["reason"] for c in report["checks"] if c["status"] != "pass"
    }
    for flag, fails in BROWSER_CASES.items():
        rc, report = _run(tmp_path / flag, broken_op, "--browser", CHROMIUM, **{flag: True})
        assert by_status(report, "fail") == fails, flag
        assert by_status(report, "warning") == set()
        assert rc == 1


def test_every_op_check_is_shown_able_to_fail() -> None:
    shown = set().union(*(f | w for f, w, _ in CASES.values()), *BROWSER_CASES.values())
    assert shown == set(op_checks())
    assert set(FLAGS) == set(CASES) | set(BROWSER_CASES)
    # A SHOULD-level check can only warn; a MUST-level one is shown failing at least once.
    for cid in op_checks():
        failing = any(cid in f for f, _, _ in CASES.values()) or any(cid in f for f in BROWSER_CASES.values())
        assert failing == (CATALOG[cid].level == "MUST"), cid


def test_failed_login_is_incomplete_not_pass(tmp_path: Path, broken_op: BrokenOP) -> None:
    """A run that never completed a login proved nothing: result incomplete, exit 3, and the
    report names the step that stopped."""
    broken_op.reset()
    rc, report = run(
        ["op", "--username", USER, "--password", "wrong", "--wait", "0.5", "--issuer", broken_op.issuer],
        tmp_path,
    )
    assert rc == 3
    assert report["result"] == "incomplete"
    assert by_status(report, "fail") == set()
    scenarios = {s["name"]: s for s in report["scenarios"]}
    assert scenarios["discovery"]["status"] == "complete"
    assert scenarios["login"]["status"] == "incomplete"
    assert scenarios["login"]["step"].startswith("authorization request for ")
    assert "did not return a code" in scenarios["login"]["reason"]
    assert scenarios["token-revocation"]["status"] == "incomplete"
