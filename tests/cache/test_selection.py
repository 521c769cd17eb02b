"""The priority order a budget buys from: reproducible, balanced, and never touching excluded domains."""

from __future__ import annotations

from collections import Counter

import pytest

from cache.data.datasets import open_dataset
from cache.selection import priority_order


def test_every_prefix_of_the_stratified_order_is_balanced_within_one_per_cell(pacs_mini):
    files = open_dataset("pacs", pacs_mini).files
    order = priority_order(files, "stratified", seed=3)
    assert sorted(f.path for f in order) == sorted(f.path for f in files)
    for n in (1, 27, 28, 29, 100, 555, 1119):
        counts = Counter((f.domain, f.label) for f in order[:n])
        per_cell = [counts.get((d, c), 0) for d in ("art_painting", "cartoon", "photo", "sketch") for c in range(7)]
        assert max(per_cell) - min(per_cell) <= 1, n


def test_the_order_depends_only_on_the_seed(pacs_mini):
    files = open_dataset("pacs", pacs_mini).files
    assert priority_order(files, "stratified", 0) == priority_order(files, "stratified", 0)
    assert priority_order(files, "stratified", 0) != priority_order(files, "stratified", 1)
    assert priority_order(files, "random", 0) == priority_order(files, "random", 0)
    assert priority_order(files, "random", 0) != priority_order(files, "stratified", 0)


def test_excluded_domains_are_not_in_the_order(pacs_mini):
    files = open_dataset("pacs", pacs_mini).files
    order = priority_order(files, "random", 0, frozenset({"sketch"}))
    assert len(order) == 840 and all(f.domain != "sketch" for f in order)


def test_unknown_strategy_names_the_choices(pacs_mini):
    with pytest.raises(ValueError, match=r"\['stratified', 'random', 'kcenter', 'typiclust'\]"):
        priority_order(open_dataset("pacs", pacs_mini).files, "greedy", 0)
