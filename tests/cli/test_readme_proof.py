"""README's proof command, run as written where `make demo` runs, shows the demo's deliveries
of both channels."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from oidc_logout.cli import build_parser
from oidc_logout.termination import by_subject
from tests.support.idp import Browser, authorize, client_meta
from tests.termination.conftest import make_env

from .conftest import ROOT, run_cli


def _proof_command() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"`\.venv/bin/(oidc-logout deliveries[^`]*)`", readme)
    assert found, "README.md names no `.venv/bin/oidc-logout deliveries ...` proof command"
    return shlex.split(found.group(1))[1:]


def _demo_database_url() -> str:
    demo = build_parser()._subparsers._group_actions[0].choices["demo"]  # type: ignore[union-attr]
    return str(demo.get_default("database_url"))


def test_the_proof_command_names_the_database_make_demo_writes() -> None:
    args = _proof_command()
    assert args[args.index("--database-url") + 1] == _demo_database_url()
    assert "oidc-logout demo --dev" in (ROOT / "Makefile").read_text()


def test_the_proof_command_shows_both_channels_of_the_demo_database(tmp_path: Path) -> None:
    """A database at the demo's path (relative to where the command runs), written by a
    logout with a browser: back- and front-channel rows, both listed by the command as is."""
    url = _demo_database_url()
    assert url.startswith("sqlite:///") and not url.startswith("sqlite:////")
    (tmp_path / url[len("sqlite:///") :]).parent.mkdir(parents=True)
    front = client_meta("demo-front", port=20100, frontchannel_logout_uri="http://127.0.0.1:20100/fc")
    env = make_env(f"sqlite:///{tmp_path / url[len('sqlite:///') :]}", extra_clients=[front])
    try:
        browser = Browser(env.idp.url)
        browser.login()
        authorize(browser, front)
        authorize(browser, env.metas["rp-a"])
        env.idp.provider.terminate_now(
            by_subject("alice"), reason="logout", initiator="test", browser_present=True, wait=5
        )
    finally:
        env.idp.stop()
        env.rps.stop()
    out = run_cli(*_proof_command(), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "backchannel" in out.stdout and "frontchannel" in out.stdout
    assert "rp-a" in out.stdout and "demo-front" in out.stdout and "delivered" in out.stdout
