"""RFC 7009 revocation only, before/after in one run beside node-oidc-provider: ours at git
revision REV and ours in the working tree, on a SQLite file and/or PostgreSQL, each under
gunicorn as ``bench.against_node`` deploys it (2 gthread workers x 4), and node if installed.
It reuses ``bench.against_node``'s ``start_node``, ``start_ours`` and ``revocation`` (tokens
issued at the token endpoint, then revoked by ``c`` keep-alive threads; OP CPU from /proc, net
of the OP's idle CPU; every revoked token introspected), the OPs taking turns level by level.

The old revision runs from an export (``git archive REV``) imported first in its gunicorn
workers: a ``sitecustomize`` on their ``PYTHONPATH`` puts a finder for ``oidc_logout`` and
``bench`` in front of ``sys.path`` (which starts with the working tree, the workers' cwd).

    python -m bench.revocation_ab_node --old REV [--tokens 1000] [--dbs sqlite,postgresql] [--no-node]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import ROOT, table

_SITECUSTOMIZE = '''"""bench.revocation_ab_node: import oidc_logout and bench from {tree}."""
import importlib.machinery
import sys


class _Old:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name in ("oidc_logout", "bench"):
            return importlib.machinery.PathFinder.find_spec(name, [{tree!r}])
        return None


sys.meta_path.insert(0, _Old)
'''


def export(rev: str, into: Path) -> dict[str, str]:
    """``rev`` exported to ``into``/tree; the environment that makes a worker import it."""
    tree, site = into / "tree", into / "site"
    tree.mkdir(parents=True)
    site.mkdir()
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(tree=str(tree)))
    return {"PYTHONPATH": str(site)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from . import against_node as an

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="git revision of the 'before' OP")
    p.add_argument("--tokens", type=int, default=1000, help="tokens revoked per level and OP")
    p.add_argument("--concurrency", default="1,8")
    p.add_argument("--dbs", default="sqlite,postgresql")
    p.add_argument("--no-node", action="store_true")
    p.add_argument("--max-seconds", type=float, default=60.0)
    a = p.parse_args(argv)
    rev = subprocess.run(
        ["git", "rev-parse", "--short", a.old], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    print(
        f"command: python -m bench.revocation_ab_node {' '.join(argv if argv is not None else sys.argv[1:])}"
    )
    print(
        f"load average at start {os.getloadavg()}, {time.strftime('%H:%M:%S UTC', time.gmtime())}", flush=True
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-rev-ab-"))
    targets: list[Any] = []
    try:
        old_env = export(a.old, tmp / "old")
        if not a.no_node:
            missing = an.node_missing()
            if missing:
                print(missing)
            else:
                targets.append(an.start_node(tmp, "http://127.0.0.1:9", 1))
        for db in a.dbs.split(","):
            for label, env in ((f"old {rev}", old_env), ("new", None)):
                t = an.start_ours(tmp, "http://127.0.0.1:9", 1, db, extra_env=env)
                t.name = f"ours {db} {label}"
                targets.append(t)
        levels = [int(c) for c in a.concurrency.split(",")]
        rows = an.revocation(targets, a.tokens, levels, a.max_seconds)
    finally:
        for t in targets:
            t.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average at end {os.getloadavg()}, {time.strftime('%H:%M:%S UTC', time.gmtime())}")
    node = {r["concurrency"]: r for r in rows if r["op"] == an.NODE}
    out = []
    for r in sorted(rows, key=lambda r: (r["concurrency"], r["op"])):
        n = node.get(r["concurrency"])
        other = n is not None and r["op"] != an.NODE
        out.append(
            [
                r["op"],
                r["concurrency"],
                f"{r['rps']:.0f}",
                f"{r['cpu_ms_per_req']:.2f}",
                f"{r['net_cpu_ms_per_req']:.2f}",
                f"{r['rps'] / n['rps']:.2f}x" if other else "",
                f"{n['net_cpu_ms_per_req'] / r['net_cpu_ms_per_req']:.2f}x" if other else "",
                str(r["statuses"]),
                f"{r['active_after']}/{r['requests']}",
            ]
        )
    print(
        table(
            [
                "OP",
                "c",
                "req/s",
                "OP CPU ms/req",
                "net of idle",
                "req/s vs node",
                "CPU node / ours (net)",
                "statuses",
                "still active",
            ],
            out,
        )
    )
    return {"bench": "revocation_ab_node", "old": rev, "rows": rows}


if __name__ == "__main__":
    main()
