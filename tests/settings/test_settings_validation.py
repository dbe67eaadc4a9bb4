"""Settings say what they mean or refuse to start: a typo in a switch, a number or a setting's
name is an error naming the key, never a silent default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from oidc_logout import __version__
from oidc_logout.config import Settings, SettingsError, settings_from_mapping

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("On", True), ("1", True), ("false", False), ("no", False), ("0", False)],
)
def test_booleans_take_the_usual_spellings(raw: str, expected: bool) -> None:
    assert settings_from_mapping({"OIDC_LOGOUT_DEV_MODE": raw}).dev_mode is expected


@pytest.mark.parametrize(
    ("key", "raw", "words"),
    [
        ("OIDC_LOGOUT_DEV_MODE", "ture", "not a boolean"),
        ("OIDC_LOGOUT_EMBEDDED_DISPATCHER", "flase", "not a boolean"),
        ("OIDC_LOGOUT_DELIVERY_CONCURRENCY", "sixteen", "not an integer"),
        ("OIDC_LOGOUT_LOGOUT_WAIT_BOUND", "2s", "not a number"),
    ],
)
def test_a_malformed_value_is_an_error_naming_the_setting(key: str, raw: str, words: str) -> None:
    with pytest.raises(SettingsError) as info:
        settings_from_mapping({key: raw})
    assert key in str(info.value) and words in str(info.value)


def test_a_misspelt_setting_is_an_error_that_names_the_real_one() -> None:
    with pytest.raises(SettingsError) as info:
        settings_from_mapping({"OIDC_LOGOUT_DATABASEURL": "postgresql://x/y"})
    assert "OIDC_LOGOUT_DATABASE_URL" in str(info.value)


def test_unrelated_keys_with_the_prefix_are_left_alone() -> None:
    assert settings_from_mapping({"OIDC_LOGOUT_SCREENSHOTS": "/tmp/x"}) == Settings()


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OIDC_LOGOUT_")} | env
    return subprocess.run(
        [sys.executable, "-m", "oidc_logout.cli", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_refuses_a_typo_in_a_switch_naming_it(tmp_path: Path) -> None:
    out = _cli("deliveries", "--database-url", f"sqlite:///{tmp_path / 'x.db'}", OIDC_LOGOUT_DEV_MODE="ture")
    assert out.returncode == 2
    assert "OIDC_LOGOUT_DEV_MODE" in out.stderr and "Traceback" not in out.stderr


def test_cli_refuses_an_unknown_delivery_state_with_the_usage_code(tmp_path: Path) -> None:
    out = _cli("deliveries", "--state", "bogus", "--database-url", f"sqlite:///{tmp_path / 'x.db'}")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_cli_prints_its_version() -> None:
    out = _cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"oidc-logout {__version__}"
