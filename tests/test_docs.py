"""Docs that must follow the code: every setting is documented, the README gives the two commands."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from oidc_logout.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_has_a_row_in_the_operations_table():
    """docs/operations.md documents each Settings field as OIDC_LOGOUT_<NAME>."""
    text = (ROOT / "docs" / "operations.md").read_text()
    missing = [
        f.name
        for f in dataclasses.fields(Settings)
        if f.name != "extra" and f"`OIDC_LOGOUT_{f.name.upper()}`" not in text
    ]
    assert missing == []


def test_readme_starts_with_the_two_commands():
    """README.md gives `make demo` and `make test` before anything else."""
    head = (ROOT / "README.md").read_text().split("## ")[0]
    assert "make demo" in head and "make test" in head


def test_docs_pages_linked_from_the_readme_exist():
    """Every docs/ page the README links to is there."""
    import re

    readme = (ROOT / "README.md").read_text()
    for link in re.findall(r"\]\((docs/[^)]+)\)", readme):
        assert (ROOT / link).exists(), link
