"""Which images a budget buys: a reproducible priority order over the dataset's files.

A budget of N buys the first N images of the order that are not cached yet, so re-running with the same budget
buys nothing and raising the budget extends the same selection.
"""

from __future__ import annotations

import random
from collections import defaultdict

from .data.datasets import ImageFile
from .errors import InvalidOption

STRATEGIES = ("stratified", "random")


def priority_order(
    files: tuple[ImageFile, ...] | list[ImageFile],
    strategy: str,
    seed: int,
    exclude_domains: frozenset[str] = frozenset(),
) -> list[ImageFile]:
    """Order the files not in `exclude_domains`.

    stratified: round-robin over the domain x class cells (each shuffled from the seed), visiting the cells in a
    fresh seeded order each round, so any prefix is balanced to within one image per cell.
    random: one seeded shuffle of all files.
    """
    if strategy not in STRATEGIES:
        raise InvalidOption(f"unknown selection {strategy!r}; choose one of {list(STRATEGIES)}")
    eligible = [f for f in files if f.domain not in exclude_domains]
    rng = random.Random(f"{strategy}:{seed}")
    if strategy == "random":
        rng.shuffle(eligible)
        return eligible
    cells: dict[tuple[str, int], list[ImageFile]] = defaultdict(list)
    for f in eligible:
        cells[(f.domain, f.label)].append(f)
    for key in sorted(cells):
        random.Random(f"{seed}:{key[0]}:{key[1]}").shuffle(cells[key])
    order, keys, depth = [], sorted(cells), 0
    while keys:
        rng.shuffle(keys)
        order += [cells[k][depth] for k in keys]
        depth += 1
        keys = sorted(k for k in keys if len(cells[k]) > depth)
    return order
