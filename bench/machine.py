"""Machine facts printed next to every benchmark figure (CPU, cores, memory, Python,
SQLite/PostgreSQL versions, package versions, git commit)."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PG_URL = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres:test@127.0.0.1:5432/test")
PACKAGES = (
    "oidc-logout",
    "Authlib",
    "Flask",
    "Werkzeug",
    "SQLAlchemy",
    "jwcrypto",
    "cryptography",
    "requests",
    "urllib3",
    "h11",
    "psycopg",
    "gunicorn",
    "pyinstrument",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                kb = int(line.split()[1])
                return f"{kb / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def pg_version() -> str:
    try:
        import psycopg

        dsn = PG_URL.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"


def _git() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return f"{rev}{' (+ uncommitted changes)' if dirty else ''}" if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def facts(pg: bool = True) -> dict[str, str]:
    out = {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": _mem_total(),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg_version() if pg else "not used",
        "git": _git(),
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1/5/15 min, at start)",
    }
    pk = []
    for name in PACKAGES:
        try:
            pk.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pk.append(f"{name} (not installed)")
    out["packages"] = " ".join(pk)
    return out


def print_facts(pg: bool = True, file=None) -> dict[str, str]:  # type: ignore[no-untyped-def]
    f = facts(pg)
    print("machine:", file=file or sys.stdout)
    for k, v in f.items():
        print(f"  {k:<10} {v}", file=file or sys.stdout)
    return f


if __name__ == "__main__":
    print_facts()
