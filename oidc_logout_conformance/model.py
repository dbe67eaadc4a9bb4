"""Check results and the recorder that collects them (with redaction built in)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from .catalog import CATALOG, CORE_SCENARIOS, CheckSpec
from .redact import Redactor


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARNING = "warning"
    SKIPPED = "skipped"


@dataclass
class CheckResult:
    id: str
    section: str
    title: str
    level: str
    status: Status
    reason: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status.value
        return out


class ScenarioStatus(StrEnum):
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    NOT_APPLICABLE = "not-applicable"


@dataclass
class ScenarioResult:
    """Whether one core scenario of a profile ran to its end. A run whose core scenario did
    not (no login, no logout token, nothing to revoke) proves nothing about the checks that
    hang on it, so its result is ``incomplete`` - never ``pass``."""

    name: str
    description: str
    status: ScenarioStatus
    step: str = ""
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status.value
        return out


class Recorder:
    """Collects one result per check id. Evidence is scrubbed through the redactor when
    recorded, so no token, secret or code ever reaches a report."""

    def __init__(self, profile: str, redactor: Redactor | None = None) -> None:
        self.profile = profile
        self.redactor = redactor or Redactor()
        self.results: dict[str, CheckResult] = {}
        self.started = dt.datetime.now(dt.UTC)
        self.meta: dict[str, Any] = {}
        self.log: list[str] = []
        self.scenarios: dict[str, ScenarioResult] = {}

    # -- core scenarios ----------------------------------------------------------------------
    def complete(self, name: str) -> None:
        """The core scenario ``name`` ran to its end (its checks may still have failed)."""
        if name not in self.scenarios:
            self._scenario(name, ScenarioStatus.COMPLETE)

    def incomplete(self, name: str, step: str, reason: str) -> None:
        """The core scenario ``name`` stopped at ``step`` because of ``reason``. The first
        reason wins: later ones are consequences."""
        current = self.scenarios.get(name)
        if current is None or current.status is ScenarioStatus.COMPLETE:
            self._scenario(name, ScenarioStatus.INCOMPLETE, step, reason)

    def not_applicable(self, name: str, reason: str) -> None:
        if name not in self.scenarios:
            self._scenario(name, ScenarioStatus.NOT_APPLICABLE, "", reason)

    def _scenario(self, name: str, status: ScenarioStatus, step: str = "", reason: str = "") -> None:
        description = CORE_SCENARIOS[self.profile][name]
        self.scenarios[name] = ScenarioResult(
            name, description, status, step, self.redactor.scrub_text(reason)
        )

    def scenario_results(self) -> list[ScenarioResult]:
        """Every core scenario of the profile; one never reached is incomplete."""
        out = []
        for name, description in CORE_SCENARIOS[self.profile].items():
            res = self.scenarios.get(name)
            if res is None:
                last = next((line for line in reversed(self.log) if line.startswith("flow stopped")), "")
                res = ScenarioResult(
                    name,
                    description,
                    ScenarioStatus.INCOMPLETE,
                    "not reached",
                    last or "the run ended before this scenario started",
                )
            out.append(res)
        return out

    @property
    def is_incomplete(self) -> bool:
        return any(r.status is ScenarioStatus.INCOMPLETE for r in self.scenario_results())

    def spec(self, check_id: str) -> CheckSpec:
        return CATALOG[check_id]

    def record(
        self, check_id: str, status: Status, reason: str = "", evidence: dict[str, Any] | None = None
    ) -> CheckResult:
        spec = CATALOG[check_id]
        res = CheckResult(
            check_id,
            spec.section,
            spec.title,
            spec.level,
            status,
            self.redactor.scrub_text(reason),
            self.redactor.scrub(evidence or {}),
        )
        self.results[check_id] = res
        return res

    def verdict(
        self,
        check_id: str,
        failures: Iterable[str] = (),
        warnings: Iterable[str] = (),
        evidence: dict[str, Any] | None = None,
        ok: str = "",
    ) -> CheckResult:
        """pass when no failure/warning; a failure of a SHOULD-level check is a warning."""
        failures, warnings = list(failures), list(warnings)
        spec = CATALOG[check_id]
        if failures and spec.level != "MUST":
            warnings, failures = failures + warnings, []
        if failures:
            return self.record(check_id, Status.FAIL, "; ".join(failures + warnings), evidence)
        if warnings:
            return self.record(check_id, Status.WARNING, "; ".join(warnings), evidence)
        return self.record(check_id, Status.PASS, ok, evidence)

    def skip(self, check_id: str, reason: str, evidence: dict[str, Any] | None = None) -> None:
        if check_id not in self.results:
            self.record(check_id, Status.SKIPPED, reason, evidence)

    def skip_rest(self, reason: str, prefix_filter: tuple[str, ...] | None = None) -> None:
        for cid, spec in CATALOG.items():
            if (
                spec.profile == self.profile
                and cid not in self.results
                and (prefix_filter is None or cid.startswith(prefix_filter))
            ):
                self.skip(cid, reason)

    def finish(self) -> list[CheckResult]:
        self.skip_rest("not reached in this run")
        order = [cid for cid, s in CATALOG.items() if s.profile == self.profile]
        return [self.results[c] for c in order if c in self.results]

    @property
    def failed(self) -> bool:
        return any(r.status is Status.FAIL for r in self.results.values())
