"""The conformance runner's op profile against the adopted example IdP, exactly as against
the project's demo OP (tests/conformance/test_selfrun.py): both channels, RP-initiated
logout, revocation, introspection and registration, through the example's own login and
consent pages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from oidc_logout_conformance.catalog import op_checks
from tests.conformance.helpers import by_status, run
from tests.conformance.test_selfrun import CHROMIUM

from .conftest import PASSWORD, ExampleIdP, start_example


@pytest.fixture
def example(database_url: str) -> Iterator[ExampleIdP]:
    # Registration open (development mode, no initial access token): the runner registers
    # its own clients through the example's RFC 7591 endpoint.
    idp = start_example(database_url, registration_token=None)
    yield idp
    idp.stop()


@pytest.mark.parametrize(
    "browser",
    [
        pytest.param(False, id="parsed"),
        pytest.param(True, id="chromium", marks=pytest.mark.browser),
    ],
)
def test_op_profile_passes_against_the_adopted_example(
    tmp_path: Path, example: ExampleIdP, browser: bool
) -> None:
    extra = ["--browser", CHROMIUM] if browser else []
    rc, report = run(
        [
            "op",
            "--issuer",
            example.url,
            "--username",
            "alice",
            "--password",
            PASSWORD,
            "--wait",
            "8",
            "--settle",
            "0.3",
            *extra,
        ],
        tmp_path / "report",
    )
    failing = {c["id"]: c["reason"] for c in report["checks"] if c["status"] != "pass"}
    expected = set(op_checks()) if browser else set(op_checks()) - {"FCL-4-browser"}
    assert {k for k in failing if k in expected} == set(), failing
    assert by_status(report, "pass") == expected
    if not browser:
        assert failing == {"FCL-4-browser": "no --browser given: the logged-out page was parsed, not loaded"}
    assert rc == 0
