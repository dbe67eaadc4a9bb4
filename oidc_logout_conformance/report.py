"""Reports: ``report.json`` (machine-readable) and ``report.html`` (one self-contained file:
inline CSS, no scripts, no external resources). Evidence is already redacted by the
recorder; as a last line of defence every serialized string is scrubbed once more."""

from __future__ import annotations

import datetime as dt
import html
import json
from collections import Counter
from pathlib import Path
from typing import Any

from .model import CheckResult, Recorder

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#1d2330;background:#fafbfc}
h1{font-size:1.4rem;margin:0 0 .3rem}table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #dde1e7;padding:.35rem .5rem;vertical-align:top;text-align:left}
th{background:#eef1f5}.pass{color:#116329;font-weight:600}.fail{color:#b42318;font-weight:700}
.warning{color:#9a6700;font-weight:600}.skipped{color:#57606a}
pre{white-space:pre-wrap;word-break:break-all;background:#f4f6f8;padding:.5rem;margin:.3rem 0;font-size:12px}
.summary span{margin-right:1rem}code{font-size:12px}details summary{cursor:pointer;color:#0550ae}
"""


def build(rec: Recorder, results: list[CheckResult]) -> dict[str, Any]:
    counts = Counter(r.status.value for r in results)
    scenarios = rec.scenario_results()
    result = "fail" if counts.get("fail") else "incomplete" if rec.is_incomplete else "pass"
    return {
        "tool": "oidc-logout-conformance",
        "profile": rec.profile,
        "started": rec.started.isoformat(),
        "finished": dt.datetime.now(dt.UTC).isoformat(),
        "meta": rec.redactor.scrub(rec.meta),
        "summary": {s: counts.get(s, 0) for s in ("pass", "fail", "warning", "skipped")},
        # fail: a check failed. incomplete: no check failed, but a core scenario could not
        # execute (see "scenarios": which step stopped and why). pass: neither.
        "result": result,
        "scenarios": [sc.to_json() for sc in scenarios],
        "checks": [r.to_json() for r in results],
        "log": [rec.redactor.scrub_text(line) for line in rec.log],
    }


def render_html(report: dict[str, Any]) -> str:
    e = html.escape
    rows = []
    for c in report["checks"]:
        evidence = json.dumps(c["evidence"], indent=2, sort_keys=True, default=str)
        rows.append(
            f"<tr><td><code>{e(c['id'])}</code></td><td>{e(c['section'])}</td><td>{e(c['title'])}"
            f'<br><small>level: {e(c["level"])}</small></td><td class="{e(c["status"])}">{e(c["status"])}</td>'
            f"<td>{e(c['reason'])}<details><summary>evidence</summary><pre>{e(evidence)}</pre></details></td></tr>"
        )
    s = report["summary"]
    scen = "".join(
        f"<tr><td><code>{e(sc['name'])}</code></td><td>{e(sc['description'])}</td>"
        f'<td class="{"pass" if sc["status"] != "incomplete" else "fail"}">{e(sc["status"])}</td>'
        f"<td>{e(sc['step'])}</td><td>{e(sc['reason'])}</td></tr>"
        for sc in report["scenarios"]
    )
    log = "".join(f"<li>{e(line)}</li>" for line in report["log"])
    meta = e(json.dumps(report["meta"], indent=2, sort_keys=True, default=str))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Logout conformance: {e(report['profile'])} profile</title><style>{CSS}</style></head><body>"
        f"<h1>Logout conformance report &mdash; {e(report['profile'])} profile: "
        f'<span class="{"pass" if report["result"] == "pass" else "fail"}">{e(report["result"].upper())}</span></h1>'
        f'<p class="summary"><span class="pass">{s["pass"]} pass</span><span class="fail">{s["fail"]} fail</span>'
        f'<span class="warning">{s["warning"]} warning</span><span class="skipped">{s["skipped"]} skipped</span>'
        f"<span>started {e(report['started'])}</span></p>"
        f"<details><summary>run parameters</summary><pre>{meta}</pre></details>"
        "<h2>Core scenarios</h2><table><thead><tr><th>scenario</th><th>what</th><th>status</th>"
        f"<th>stopped at</th><th>why</th></tr></thead><tbody>{scen}</tbody></table><h2>Checks</h2>"
        "<table><thead><tr><th>check</th><th>spec section</th><th>what it proves</th><th>result</th>"
        f"<th>reason / evidence</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"<h2>Log</h2><ul>{log}</ul>"
        "<p><small>Tokens are shown decoded (header and claims) with signatures, secrets, codes and "
        "access/refresh tokens redacted.</small></p></body></html>"
    )


def write(rec: Recorder, report_dir: str | Path) -> dict[str, Any]:
    results = rec.finish()
    # scrub() walks any JSON-like value; a dict in gives a dict out.
    report: dict[str, Any] = rec.redactor.scrub(build(rec, results))
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=False, default=str))
    (out / "report.html").write_text(render_html(report))
    return report
