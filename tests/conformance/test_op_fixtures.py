"""Every OP check is shown able to fail: the op profile runs against a hand-written OP
(tests/conformance/fixtures/broken_op.py) that is correct by default and broken one rule at a
time; exactly the checks guarding that rule must fail (or warn, for SHOULD-level rules)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.catalog import op_checks

from .fixtures.broken_op import FLAGS, PASSWORD, USER, BrokenOP
from .helpers import by_status, run

# flag -> (checks that must fail, checks that must warn)
CASES: dict[str, tuple[set[str], set[str]]] = {
    "issuer_mismatch": ({"DISC-4.3-issuer"}, set()),
    "no_bcl_supported": ({"BCL-2.1-supported"}, set()),
    "no_end_session": ({"RPI-2.1-end-session-endpoint"}, set()),
    "registration_drops_bcl_uri": ({"REG-7591-registration"}, set()),
    "lt_nonce": ({"BCL-2.4-no-nonce"}, set()),
    "lt_no_events": ({"BCL-2.4-events"}, set()),
    "lt_events_member_not_object": ({"BCL-2.4-events"}, set()),
    "lt_wrong_sid": ({"BCL-2.4-sid-match"}, set()),
    "lt_typ_jwt": (set(), {"BCL-2.4-typ"}),
    "lt_alg_none": ({"BCL-2.4-alg", "BCL-2.4-signature"}, set()),
    "lt_alg_rs384": ({"BCL-2.4-alg"}, set()),
    "lt_unknown_kid": ({"BCL-2.4-signature"}, set()),
    "lt_json": ({"BCL-2.5-form-post"}, set()),
    "lt_no_exp": ({"BCL-2.4-exp"}, set()),
    "lt_no_jti": ({"BCL-2.4-jti"}, set()),
    "lt_same_jti": ({"BCL-2.4-jti-unique"}, set()),
    "lt_wrong_aud": ({"BCL-2.4-aud"}, set()),
    "lt_wrong_iss": ({"BCL-2.4-iss"}, set()),
    "lt_old_iat": ({"BCL-2.4-iat"}, set()),
    "lt_no_sid_sub": ({"BCL-2.4-sid-sub", "BCL-2.4-sid-match"}, set()),
    "no_delivery": ({"BCL-2.5-delivered"}, set()),
    "first_client_only": ({"BCL-2.5-delivered"}, set()),
    "deliver_twice": (set(), {"BCL-2.5-one-per-rp"}),
    "keep_refresh": (set(), {"BCL-2.7-refresh-revoked"}),
    "no_state": ({"RPI-3-state"}, set()),
    "redirect_any_plru": ({"RPI-3-unregistered-uri", "RPI-3-modified-uri"}, set()),
    "accept_forged_hint": ({"RPI-2-forged-hint"}, set()),
    "ignore_client_id": ({"RPI-2-client-id-mismatch"}, set()),
    "session_not_ended": ({"RPI-2-session-ended"}, set()),
    "fc_no_sid": ({"FCL-3-iss-sid"}, set()),
    "fc_no_iframes": ({"FCL-4-iframes"}, set()),
    "revoke_unknown_400": ({"RFC7009-2.2-unknown-token"}, set()),
    "revoke_other_client": ({"RFC7009-2.1-other-client"}, set()),
    "revoke_noop": ({"RFC7009-2.1-revoke", "RFC7662-2.2-inactive"}, set()),
    "introspect_always_active": ({"RFC7662-2.2-inactive"}, {"BCL-2.7-refresh-revoked"}),
    "introspect_always_inactive": ({"RFC7662-2.2-active", "RFC7009-2.1-other-client"}, set()),
    "introspect_no_auth": ({"RFC7662-2.1-auth"}, set()),
}

BASE = ["op", "--username", USER, "--password", PASSWORD, "--wait", "1.0", "--settle", "0.05"]


def _run(tmp_path: Path, **flags: bool) -> tuple[int, dict]:
    op = BrokenOP(**flags)
    try:
        return run([*BASE, "--issuer", op.issuer], tmp_path)
    finally:
        op.stop()


def test_correct_fixture_passes_everything(tmp_path: Path) -> None:
    rc, report = _run(tmp_path)
    assert rc == 0
    assert by_status(report, "pass") == set(op_checks()), report["summary"]


@pytest.mark.parametrize("flag", sorted(CASES))
def test_broken_op_fails_exactly_the_right_checks(tmp_path: Path, flag: str) -> None:
    fails, warns = CASES[flag]
    rc, report = _run(tmp_path, **{flag: True})
    assert by_status(report, "fail") == fails
    assert by_status(report, "warning") == warns
    assert rc == (1 if fails else 0)


def test_every_op_check_is_shown_able_to_fail() -> None:
    covered = set().union(*(f | w for f, w in CASES.values()))
    # Checks with no fixture flag, with the reason (kept short and explicit):
    not_covered = {
        "BCL-2.1-session-supported",  # SHOULD-level metadata; a one-line discovery flag, see below
        "FCL-3-supported", "FCL-3-session-supported", "RFC7009-endpoint", "RFC7662-endpoint",
        "BCL-2.1-id-token-sid", "RPI-2-logout",
    }
    assert set(op_checks()) - covered <= not_covered
    assert set(FLAGS) == set(CASES)
