"""An RP-only install is what it claims: `pip install 'oidc-logout[rp]'` into a fresh virtual
environment brings jwcrypto and requests (and what they need), never the OP stack.

This is a real install (a fresh venv, pip, setuptools building the project from a copy of the
source, dependencies resolved from the index or pip's cache), not a `--no-deps` check.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OP_STACK = ("authlib", "flask", "werkzeug", "sqlalchemy", "alembic", "psycopg", "redis", "joserfc")
#: jwcrypto, requests and their own dependencies; nothing else may arrive with [rp].
RP_CLOSURE = {
    "oidc-logout",
    "jwcrypto",
    "cryptography",
    "cffi",
    "pycparser",
    "typing-extensions",
    "requests",
    "urllib3",
    "idna",
    "charset-normalizer",
    "certifi",
    "pip",
    "setuptools",
    "wheel",
}

PROBE = textwrap.dedent(
    """
    import importlib.metadata as md
    import importlib.util
    import json
    import sys

    import oidc_logout
    import oidc_logout.rp as rp
    import oidc_logout_conformance.runner

    missing = [m for m in {op_stack!r} if importlib.util.find_spec(m) is None]
    print(json.dumps({{
        "version": oidc_logout.__version__,
        "dist_version": md.version("oidc-logout"),
        "rp_api": sorted(n for n in ("LogoutTokenValidator", "BackchannelLogoutReceiver") if hasattr(rp, n)),
        "missing": missing,
        "dists": sorted(d.metadata["Name"].lower().replace("_", "-") for d in md.distributions()),
        "top_level_conformance": importlib.util.find_spec("conformance") is not None,
        "loaded_op_modules": sorted(m for m in sys.modules if m.split(".")[0] in {op_stack!r}),
    }}))
    """
).format(op_stack=OP_STACK)


def _copy_source(dest: Path) -> Path:
    """The files a build needs, so the build never writes into the working tree."""
    src = dest / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("oidc_logout", "oidc_logout_conformance"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=ignore)
    return src


@pytest.mark.slow
def test_rp_extra_installs_only_jwcrypto_and_requests(tmp_path: Path) -> None:
    """oidc_logout.rp and the conformance runner import; authlib, flask, sqlalchemy and the
    rest of the OP stack are not installed at all."""
    src = _copy_source(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", f"{src}[rp]"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert install.returncode == 0, install.stderr[-4000:]

    probe = subprocess.run(
        [str(py), "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert probe.returncode == 0, probe.stderr[-4000:]
    found = json.loads(probe.stdout)

    assert found["rp_api"] == ["BackchannelLogoutReceiver", "LogoutTokenValidator"]
    assert sorted(found["missing"]) == sorted(OP_STACK)
    assert found["loaded_op_modules"] == []
    assert set(found["dists"]) <= RP_CLOSURE, set(found["dists"]) - RP_CLOSURE
    assert {"oidc-logout", "jwcrypto", "requests"} <= set(found["dists"])
    # One source for the version: the installed metadata says what oidc_logout/__init__.py says.
    assert found["version"] == found["dist_version"]
    # The runner is installed as oidc_logout_conformance, not as a top-level "conformance".
    assert found["top_level_conformance"] is False

    for module in ("authlib", "flask", "sqlalchemy"):
        fail = subprocess.run(
            [str(py), "-c", f"import {module}"], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert fail.returncode != 0 and "ModuleNotFoundError" in fail.stderr

    runner = subprocess.run(
        [str(venv / "bin" / "oidc-logout-conformance"), "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert runner.returncode == 0, runner.stderr[-2000:]
    assert "rp" in runner.stdout and "op" in runner.stdout
