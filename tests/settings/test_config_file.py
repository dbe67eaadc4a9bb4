"""One loader for every command: defaults < TOML file < environment < flags, each value
validated where it is read; `config show` prints the effective values with their source,
secrets redacted; outside dev mode a development issuer or database refuses to start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oidc_logout.config import Settings, SettingsError, check_production, load_settings
from tests.cli.conftest import one_error, run_cli


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "oidc-logout.toml"
    path.write_text(text)
    return path


def test_the_file_sets_settings_and_the_environment_and_flags_override_it(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        'issuer = "https://op.example.com"\ndelivery_concurrency = 4\ndev_mode = true\n'
        'address_allowlist = ["10.0.0.0/8"]\nlogout_wait_bound = 1\n',
    )
    loaded = load_settings(
        config_file=path,
        environ={"OIDC_LOGOUT_DELIVERY_CONCURRENCY": "32"},
        flags={"issuer": "https://flag.example.com", "database_url": None},
    )
    s = loaded.settings
    assert (s.issuer, s.delivery_concurrency, s.dev_mode) == ("https://flag.example.com", 32, True)
    assert s.address_allowlist == ("10.0.0.0/8",) and s.logout_wait_bound == 1.0
    assert loaded.sources["issuer"] == "flag" and loaded.sources["delivery_concurrency"] == "env"
    assert loaded.sources["dev_mode"] == "file" and loaded.sources["database_url"] == "default"


def test_the_file_may_use_an_oidc_logout_table(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[oidc_logout]\nissuer = "https://op.example.com"\n')
    assert load_settings(config_file=path, environ={}).settings.issuer == "https://op.example.com"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("delivery_concurency = 3", "did you mean delivery_concurrency"),
        ('dev_mode = "ture"', "not a boolean"),
        ("dev_mode = 1", "not a boolean"),
        ('delivery_concurrency = "sixteen"', "not an integer"),
        ("delivery_concurrency = 1.5", "not an integer"),
        ("logout_wait_bound = -1", "must not be negative"),
        ("address_allowlist = 5", "not a list of strings"),
        ("issuer = 5", "not a string"),
        ("issuer = ", "not valid TOML"),
    ],
)
def test_a_bad_value_in_the_file_is_an_error_naming_it(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        load_settings(config_file=_toml(tmp_path, text + "\n"), environ={})


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(config_file=tmp_path / "nope.toml", environ={})


def test_a_negative_number_in_the_environment_is_an_error() -> None:
    with pytest.raises(SettingsError, match="OIDC_LOGOUT_DELIVERY_TIMEOUT"):
        load_settings(environ={"OIDC_LOGOUT_DELIVERY_TIMEOUT": "-5"})


def test_config_show_prints_sources_and_redacts_secrets(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'registration_token = "s3cr3t-initial-access"\ndelivery_timeout = 3.5\n')
    out = run_cli(
        "config",
        "show",
        "--json",
        "--database-url",
        "postgresql+psycopg://op:db-pa55word@db.internal/oidc",
        OIDC_LOGOUT_CONFIG_FILE=str(path),
        OIDC_LOGOUT_DELIVERY_CONCURRENCY="8",
    )
    assert out.returncode == 0, out.stderr
    assert "s3cr3t" not in out.stdout and "db-pa55word" not in out.stdout
    shown = json.loads(out.stdout)
    settings = shown["settings"]
    assert shown["config_file"] == str(path)
    assert settings["OIDC_LOGOUT_REGISTRATION_TOKEN"] == {"value": "(set, redacted)", "source": "file"}
    assert settings["OIDC_LOGOUT_DELIVERY_TIMEOUT"] == {"value": "3.5", "source": "file"}
    assert settings["OIDC_LOGOUT_DELIVERY_CONCURRENCY"] == {"value": "8", "source": "env"}
    assert settings["OIDC_LOGOUT_DATABASE_URL"] == {
        "value": "postgresql+psycopg://op:***@db.internal/oidc",
        "source": "flag",
    }
    assert settings["OIDC_LOGOUT_ISSUER"]["source"] == "default"
    assert any("OIDC_LOGOUT_ISSUER" in p for p in shown["production_problems"])
    human = run_cli("config", "show", "--config", str(path))
    assert human.returncode == 0 and "s3cr3t" not in human.stdout + human.stderr
    assert "OIDC_LOGOUT_DELIVERY_TIMEOUT" in human.stdout and "would refuse to start" in human.stderr


def test_every_command_reads_the_file(tmp_path: Path) -> None:
    """The database named only in the file is the one `migrate` and `deliveries` use."""
    db = tmp_path / "from-file.db"
    path = _toml(tmp_path, f'database_url = "sqlite:///{db}"\n')
    assert run_cli("migrate", "--config", str(path)).returncode == 0
    assert db.exists()
    out = run_cli("deliveries", "--json", "--config", str(path))
    assert out.returncode == 0 and json.loads(out.stdout)["deliveries"] == []


@pytest.mark.parametrize(
    ("settings", "signs", "words"),
    [
        (
            Settings(database_url="sqlite:////srv/op.db"),
            True,
            "OIDC_LOGOUT_ISSUER is the development default",
        ),
        (Settings(issuer="http://op.example.com", database_url="sqlite:////srv/op.db"), True, "not https"),
        (Settings(issuer="https://op.example.com"), True, "OIDC_LOGOUT_DATABASE_URL"),
        (Settings(), False, "OIDC_LOGOUT_DATABASE_URL"),
    ],
)
def test_outside_dev_mode_development_values_refuse_to_start(
    settings: Settings, signs: bool, words: str
) -> None:
    with pytest.raises(SettingsError, match=words):
        check_production(settings, signs=signs)


def test_production_values_and_dev_mode_start() -> None:
    check_production(Settings(issuer="https://op.example.com", database_url="postgresql+psycopg://db/op"))
    check_production(Settings(dev_mode=True))
    check_production(Settings(database_url="sqlite:////srv/op.db"), signs=False)  # reads only


def test_a_signing_command_refuses_the_development_issuer(tmp_path: Path) -> None:
    out = run_cli(
        "terminate", "--sub", "bob", "--reason", "r", "--database-url", f"sqlite:///{tmp_path / 'op.db'}"
    )
    assert out.returncode == 2 and "OIDC_LOGOUT_ISSUER" in one_error(out)
    out = run_cli("worker", "--database-url", f"sqlite:///{tmp_path / 'op.db'}")
    assert out.returncode == 2 and "OIDC_LOGOUT_ISSUER" in one_error(out)
