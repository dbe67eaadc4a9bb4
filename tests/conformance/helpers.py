from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from oidc_logout_conformance.runner import main


def run(argv: list[str], report_dir: Path) -> tuple[int, dict[str, Any]]:
    rc = main([*argv, "--report-dir", str(report_dir)])
    report = json.loads((report_dir / "report.json").read_text())
    return rc, report


def by_status(report: dict[str, Any], status: str) -> set[str]:
    return {c["id"] for c in report["checks"] if c["status"] == status}
