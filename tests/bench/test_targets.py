"""Issue 15's targets judged from a run's figures (bench/targets.py): met, not met, and "not
measured" when a figure is missing - never "met" for what was not measured."""

from __future__ import annotations

from typing import Any

from bench import targets
from bench.targets import MET, NODE, NOT_MEASURED, NOT_MET

OURS = "oidc-logout (SQLite)"


def fan(op: str, m: int, all_s: float, exchange_s: float, hang: bool = False) -> dict[str, Any]:
    return {"op": op, "m": m, "hang": hang, "all_median": all_s, "exchange_median": exchange_s}


def rev(op: str, c: int, rps: float, cpu_ms: float) -> dict[str, Any]:
    return {"op": op, "concurrency": c, "rps": rps, "net_cpu_ms_per_req": cpu_ms}


def by_target(verdicts: list[targets.Verdict]) -> dict[str, str]:
    return {v.target: v.status for v in verdicts}


def test_fan_out_targets_use_the_bounds_of_the_issue() -> None:
    verdicts = targets.against_node(
        [
            fan(NODE, 10, 0.100, 0.200),
            fan(OURS, 10, 0.120, 0.200),  # exactly 1.2x and exactly 1.0x: met
            fan(NODE, 50, 0.100, 0.200),
            fan(OURS, 50, 0.121, 0.201),  # just above both bounds
            fan(NODE, 10, 2.5, 2.7, hang=True),  # the hung-RP case carries no target
            fan(OURS, 10, 9.9, 9.9, hang=True),
        ],
        [],
        [NODE, OURS],
    )
    assert by_target(verdicts) == {
        "all RPs hold their token, M=10": MET,
        "logout exchange, M=10": MET,
        "all RPs hold their token, M=50": NOT_MET,
        "logout exchange, M=50": NOT_MET,
    }
    assert targets.worst_fanout_size(verdicts) == 50


def test_revocation_targets_differ_by_concurrency_and_count_cpu_too() -> None:
    verdicts = targets.against_node(
        [],
        [
            rev(NODE, 1, 1000, 0.50),
            rev(OURS, 1, 800, 0.60),  # 0.80x req/s: met; CPU 0.83x: met
            rev(NODE, 8, 1000, 0.50),
            rev(OURS, 8, 1100, 0.55),  # 1.10x req/s: met; CPU 0.91x: not met
            rev(NODE, 2, 1000, 0.50),
            rev(OURS, 2, 10, 5.0),  # c = 2 carries no target
        ],
        [NODE, OURS],
    )
    assert by_target(verdicts) == {
        "req/s, c=1": MET,
        "CPU per request (node / ours), c=1": MET,
        "req/s, c=8": MET,
        "CPU per request (node / ours), c=8": NOT_MET,
    }


def test_without_node_figures_nothing_is_judged_met() -> None:
    verdicts = targets.against_node([fan(OURS, 1, 0.001, 0.001)], [rev(OURS, 8, 1e6, 0.001)], [OURS])
    assert verdicts and {v.status for v in verdicts} == {NOT_MEASURED}
    assert targets.unmet(verdicts) == verdicts


def test_bulk_target_is_the_share_of_the_signing_rate() -> None:
    tt = {
        "rows": [
            {"alg": "RS256", "sessions": 1000, "rate": 770.0, "ceiling": 3688.0},
            {"alg": "ES256", "sessions": 1000, "rate": 16000.0, "ceiling": 22630.0},
        ]
    }
    assert [v.status for v in targets.bulk(tt)] == [NOT_MET, MET]
    assert [v.status for v in targets.bulk(None)] == [NOT_MEASURED]
