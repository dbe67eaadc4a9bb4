"""oidc_logout.rp must work with only jwcrypto and requests installed."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RP = ROOT / "oidc_logout" / "rp"

BLOCKER = r"""
import sys
BLOCKED = {"authlib", "sqlalchemy", "flask", "werkzeug", "redis", "alembic", "psycopg"}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {name}")
        return None
sys.meta_path.insert(0, Block())
for mod in list(sys.modules):
    if mod.split(".")[0] in BLOCKED:
        del sys.modules[mod]
"""

USE = r"""
import json
import oidc_logout.rp as rp
from jwcrypto import jwk, jws
key = jwk.JWK.generate(kty="EC", crv="P-256", kid="k")
now = 1_700_000_000
claims = {"iss": "https://op", "aud": "c", "iat": now, "exp": now + 60, "jti": "j", "sid": "s",
          "events": {rp.BACKCHANNEL_LOGOUT_EVENT: {}}}
s = jws.JWS(json.dumps(claims).encode())
s.add_signature(key, alg="ES256", protected=json.dumps({"alg": "ES256", "kid": "k", "typ": "logout+jwt"}))
keys = rp.StaticKeys({"keys": [key.export_public(as_dict=True)]})
v = rp.LogoutTokenValidator(issuer="https://op", client_id="c", keys=keys, clock=lambda: now,
                            allowed_algs=["ES256"])
index = rp.MemorySessionIndex(); index.register("https://op", "u", "s", "local-1")
ended = []
receiver = rp.BackchannelLogoutReceiver(v, index, ended.append)
status, headers, body = rp.handle_backchannel_request(
    "logout_token=" + s.serialize(compact=True), "application/x-www-form-urlencoded", receiver)
assert status == 200 and ended == ["local-1"], (status, body)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
print("OK")
"""


def test_rp_package_imports_and_validates_without_flask_sqlalchemy_authlib_or_redis() -> None:
    out = subprocess.run(
        [sys.executable, "-c", BLOCKER + USE],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OK"


def test_only_the_optional_submodules_import_flask_sqlalchemy_or_redis() -> None:
    optional = {"flask.py": "flask", "flask_ssf.py": "flask", "sqla.py": "sqlalchemy", "redis.py": "redis"}
    for path in RP.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        heavy = names & {"flask", "sqlalchemy", "redis", "authlib", "werkzeug"}
        allowed = {optional[path.name]} if path.name in optional else set()
        if path.name == "flask.py":
            allowed.add("werkzeug")
        assert heavy <= allowed, (path.name, heavy)
