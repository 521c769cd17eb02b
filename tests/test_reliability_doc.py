"""RELIABILITY.md stays true to the suite: every test it names exists, and every reliability test is named."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAMED = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_test_named_in_reliability_md_exists_and_every_reliability_test_is_named():
    named = NAMED.findall((REPO / "RELIABILITY.md").read_text())
    assert len(named) >= 30
    missing = [f"{file}::{test}" for file, test in named if test not in defined_tests(REPO / file)]
    assert missing == [], "RELIABILITY.md names tests that do not exist"
    unnamed = {
        f"{path.relative_to(REPO)}::{test}"
        for path in (REPO / "tests" / "reliability").glob("test_*.py")
        for test in defined_tests(path)
    } - {f"{file}::{test}" for file, test in named}
    assert unnamed == set(), "reliability tests missing from RELIABILITY.md"
