"""The package's dependency direction holds: the core runs without Flask, and only the Flask
integration, the demo and the RP's optional Flask module import Flask."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLASK_ALLOWED = ("oidc_logout/flask/", "oidc_logout/demo/", "oidc_logout/rp/flask.py")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_flask_integration_imports_flask():
    """Flask stays at the edge: termination, delivery, storage and protocol modules never import it."""
    offenders = []
    for path in sorted((ROOT / "oidc_logout").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(FLASK_ALLOWED):
            continue
        if "flask" in _imports(path):
            offenders.append(rel)
    assert offenders == []


def test_termination_and_delivery_run_with_flask_blocked():
    """The core (terminate, provider, dispatcher, worker) imports in a process where Flask is absent."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'flask' or name.startswith('flask.'):\n"
        "            raise ImportError('flask blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import oidc_logout.termination, oidc_logout.provider\n"
        "import oidc_logout.delivery.dispatcher, oidc_logout.delivery.worker\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_storage_is_the_only_place_models_are_defined():
    """SQLAlchemy declarative models live in oidc_logout/storage (and the RP's optional sqla module)."""
    offenders = []
    for path in sorted((ROOT / "oidc_logout").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("oidc_logout/storage/", "oidc_logout/rp/sqla.py")):
            continue
        if "DeclarativeBase" in path.read_text() or "mapped_column(" in path.read_text():
            offenders.append(rel)
    assert offenders == []
