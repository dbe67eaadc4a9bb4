"""The package's dependency direction holds: the core runs without Flask, and only the Flask
integration, the demo and the RP's optional Flask module import Flask."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLASK_ALLOWED = (
    "oidc_logout/flask/",
    "oidc_logout/demo/",
    "oidc_logout/rp/flask.py",
    "oidc_logout/rp/flask_ssf.py",
)


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


def _imports_with_flask_blocked(*modules: str) -> None:
    """Import ``modules`` in a fresh interpreter where any import of Flask fails."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'flask' or name.startswith('flask.'):\n"
        "            raise ImportError('flask blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"import {', '.join(modules)}\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_termination_and_delivery_run_with_flask_blocked():
    """The core (terminate, provider, dispatcher, worker) imports in a process where Flask is absent."""
    _imports_with_flask_blocked(
        "oidc_logout.termination",
        "oidc_logout.provider",
        "oidc_logout.delivery.dispatcher",
        "oidc_logout.delivery.worker",
    )


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


SPEC_MODULES = (
    "oidc_logout.core.grants",
    "oidc_logout.core.bearer",
    "oidc_logout.core.token_lookup",
    "oidc_logout.rfc7009.endpoint",
    "oidc_logout.rfc7662.endpoint",
    "oidc_logout.rpinitiated.end_session",
    "oidc_logout.signin",
    "oidc_logout.admin",
    "oidc_logout.clients",
    "oidc_logout.vocabulary",
    "oidc_logout.context",
)


def test_spec_modules_import_with_flask_blocked():
    """The protocol decisions (grants, revocation, introspection, RP-initiated logout, sign-in,
    admin requests) are framework-free: they import where Flask is absent."""
    _imports_with_flask_blocked(*SPEC_MODULES)


def test_spec_modules_declare_their_server_as_a_server_context():
    """Every Authlib grant and endpoint of ours says what its ``self.server`` is (a typed
    ServerContext), so mypy sees the dependency instead of attributes of an Any."""
    import importlib

    from oidc_logout.context import ServerContext

    classes = []
    for name in SPEC_MODULES:
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and obj.__module__ == name
                and any(
                    b.__module__.startswith("authlib.") and b.__name__.endswith(("Grant", "Endpoint"))
                    for b in obj.__mro__[1:]
                )
            ):
                classes.append(obj)
    assert len(classes) >= 6, classes
    for cls in classes:
        declared = [
            vars(c).get("__annotations__", {}).get("server")
            for c in cls.__mro__
            if c.__module__.startswith("oidc_logout.")
        ]
        declared = [d for d in declared if d is not None]
        assert declared and declared[0] in ("ServerContext", ServerContext), cls


def test_every_public_module_declares_its_public_names():
    """A curated API: every module whose path has no private part declares ``__all__``."""
    missing = []
    for path in sorted((ROOT / "oidc_logout").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if "/migrations/" in rel or any(
            part.startswith("_") and part != "__init__" for part in rel[:-3].split("/")
        ):
            continue
        tree = ast.parse(path.read_text())
        if not any(
            isinstance(node, (ast.Assign, ast.AnnAssign))
            and any(
                getattr(t, "id", None) == "__all__"
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            )
            for node in tree.body
        ):
            missing.append(rel)
    assert missing == []
