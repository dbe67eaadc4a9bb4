"""Issue 15's targets checked against one run's own figures: which are met, which are not.

A benchmark prints figures; this module says, from those figures alone, whether each target of
issue 15 holds, so that ``make bench`` ends with a verdict instead of a table to interpret.
A target whose figures are missing (node-oidc-provider not installed, a case not run) is
"not measured", never "met". For a target not met, :mod:`bench.against_node` then profiles
where the time goes (:mod:`bench.profile_against_node`) and :mod:`bench.run_all` runs
:mod:`bench.profile_delivery` for the bulk-termination target.

The targets (issue 15, "Deliver"):

* item 2: "all M RPs hold their token" <= 1.2x node at M = 1, 10, 50, 200, and the logout
  exchange <= node's (without a hung RP);
* item 3: revocation >= 1.0x node at c = 8 and >= 0.8x at c = 1, in requests/s and in OP CPU
  per request (node's CPU / ours);
* item 4: terminate-by-subject deliveries/s >= 0.7x the single-thread signing rate with one
  process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

NODE = "node-oidc-provider"
#: Item 2: ours / node, latency (lower is better).
ALL_TOKENS_MAX = 1.2
EXCHANGE_MAX = 1.0
#: Item 3: ours / node for req/s, node / ours for CPU (higher is better), per concurrency.
REVOCATION_MIN = {1: 0.8, 8: 1.0}
#: Item 4: deliveries/s over the single-thread signing rate.
BULK_MIN_OF_CEILING = 0.7

MET, NOT_MET, NOT_MEASURED = "met", "NOT met", "not measured"


@dataclass(frozen=True)
class Verdict:
    """One target on one deployment: the measured ratio, the bound, and the verdict."""

    area: str  # "fan-out", "revocation", "bulk"
    target: str
    op: str
    ratio: float | None
    bound: str
    status: str

    def row(self) -> list[str]:
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}x"
        return [self.area, self.target, self.op, ratio, self.bound, self.status]


HEADERS = ["area", "target", "deployment", "measured", "bound", "verdict"]


def _judge(ratio: float | None, bound: float, higher_is_better: bool) -> str:
    if ratio is None or ratio != ratio:  # missing or NaN
        return NOT_MEASURED
    ok = ratio >= bound if higher_is_better else ratio <= bound
    return MET if ok else NOT_MET


def against_node(
    fan: Sequence[dict[str, Any]], rev: Sequence[dict[str, Any]], ops: Sequence[str]
) -> list[Verdict]:
    """Items 2 and 3 for every oidc-logout deployment in ``ops``, from against_node's rows."""
    ours = [o for o in ops if o != NODE]
    out: list[Verdict] = []
    by = {(r["op"], r["m"], r["hang"]): r for r in fan}
    for m in sorted({r["m"] for r in fan if not r["hang"]}):
        node = by.get((NODE, m, False))
        for op in ours:
            r = by.get((op, m, False))
            for key, label, bound in (
                ("all_median", f"all RPs hold their token, M={m}", ALL_TOKENS_MAX),
                ("exchange_median", f"logout exchange, M={m}", EXCHANGE_MAX),
            ):
                ratio = r[key] / node[key] if r and node and node[key] else None
                out.append(
                    Verdict("fan-out", label, op, ratio, f"<= {bound:.1f}x node", _judge(ratio, bound, False))
                )
    rby = {(r["op"], r["concurrency"]): r for r in rev}
    for c in sorted({r["concurrency"] for r in rev}):
        floor = REVOCATION_MIN.get(c)
        if floor is None:
            continue  # the issue sets targets at c = 1 and 8 only
        node = rby.get((NODE, c))
        for op in ours:
            r = rby.get((op, c))
            rps = r["rps"] / node["rps"] if r and node and node["rps"] else None
            cpu = (
                node["net_cpu_ms_per_req"] / r["net_cpu_ms_per_req"]
                if r and node and r["net_cpu_ms_per_req"]
                else None
            )
            out.append(
                Verdict(
                    "revocation", f"req/s, c={c}", op, rps, f">= {floor:.1f}x node", _judge(rps, floor, True)
                )
            )
            out.append(
                Verdict(
                    "revocation",
                    f"CPU per request (node / ours), c={c}",
                    op,
                    cpu,
                    f">= {floor:.1f}x",
                    _judge(cpu, floor, True),
                )
            )
    return out


def bulk(terminate_throughput: dict[str, Any] | None) -> list[Verdict]:
    """Item 4 from bench.terminate_throughput's summary (one process, embedded dispatcher)."""
    rows = (terminate_throughput or {}).get("rows") or []
    if not rows:
        return [
            Verdict(
                "bulk",
                "terminate-by-subject deliveries/s over the signing rate",
                "oidc-logout",
                None,
                f">= {BULK_MIN_OF_CEILING:.1f}",
                NOT_MEASURED,
            )
        ]
    out = []
    for r in rows:
        ratio = r["rate"] / r["ceiling"] if r.get("ceiling") else None
        out.append(
            Verdict(
                "bulk",
                f"{r['alg']} {r['sessions']}x3 deliveries/s over the 1-thread signing rate",
                "oidc-logout (1 process)",
                ratio,
                f">= {BULK_MIN_OF_CEILING:.1f}",
                _judge(ratio, BULK_MIN_OF_CEILING, True),
            )
        )
    return out


def unmet(verdicts: Sequence[Verdict], area: str | None = None) -> list[Verdict]:
    """The verdicts that are not met (not measured counts: nothing is passed untested)."""
    return [v for v in verdicts if v.status != MET and (area is None or v.area == area)]


def worst_fanout_size(verdicts: Sequence[Verdict]) -> int | None:
    """The M of the fan-out target furthest above its bound (what the profile should look at)."""
    worst: tuple[float, int] | None = None
    for v in unmet(verdicts, "fan-out"):
        if v.ratio is None:
            continue
        m = int(v.target.rsplit("M=", 1)[1])
        if worst is None or v.ratio > worst[0]:
            worst = (v.ratio, m)
    return worst[1] if worst else None
