"""The minimum versions pyproject.toml declares are the ones `make test-min` installs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
TESTED_EXTRAS = ("op", "postgres", "redis")


def _declared_minimums() -> dict[str, Version]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in TESTED_EXTRAS:
        reqs += project["optional-dependencies"][extra]
    out: dict[str, Version] = {}
    for line in reqs:
        req = Requirement(line)
        lows = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert len(lows) == 1, f"{line}: declare exactly one lower bound"
        out[canonicalize_name(req.name)] = lows[0]
    return out


def _pinned() -> dict[str, Version]:
    out: dict[str, Version] = {}
    for raw in (ROOT / "constraints-min.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups()  # type: ignore[union-attr]
            out[canonicalize_name(name)] = Version(version)
    return out


def test_every_declared_minimum_is_the_version_test_min_installs() -> None:
    """Each ">=" of the base install and of the op/postgres/redis extras is pinned, at that
    very version, in constraints-min.txt: the declared minimums are the tested ones."""
    declared, pinned = _declared_minimums(), _pinned()
    assert {n: pinned.get(n) for n in declared} == declared


def test_constraints_pin_nothing_the_project_does_not_declare() -> None:
    """No stray pins (psycopg-binary comes with psycopg[binary], pinned at the same version)."""
    declared, pinned = _declared_minimums(), _pinned()
    assert set(pinned) - set(declared) == {"psycopg-binary"}
    assert pinned["psycopg-binary"] == pinned["psycopg"]
