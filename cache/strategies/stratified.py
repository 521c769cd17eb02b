"""The two orders that need no features: stratified (round-robin over domain x class cells) and random.

Also the cell interleaving the feature-based strategies use when balanced over domain x class: each cell ordered
by the strategy on its own, the cells visited round-robin in a fresh seeded order each round, so any prefix is
balanced to within one image per cell.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable

from ..data.datasets import ImageFile


def cells_of(files: list[ImageFile]) -> dict[tuple[str, int], list[ImageFile]]:
    """The domain x class cells; a domain's images without a class are one more cell, its class -1."""
    cells: dict[tuple[str, int], list[ImageFile]] = defaultdict(list)
    for f in files:
        cells[(f.domain, -1 if f.label is None else f.label)].append(f)
    return cells


def interleaved(cells: dict[tuple[str, int], list[ImageFile]], rng: random.Random) -> list[ImageFile]:
    """Round-robin over the cells (each already in its own order), in a fresh seeded cell order each round."""
    order: list[ImageFile] = []
    keys, depth = sorted(cells), 0
    while keys:
        rng.shuffle(keys)
        order += [cells[k][depth] for k in keys]
        depth += 1
        keys = sorted(k for k in keys if len(cells[k]) > depth)
    return order


def balanced(files: list[ImageFile], seed: int, order_cell: Callable[[list[ImageFile]], list[ImageFile]]) -> list:
    """`order_cell` applied to each domain x class cell, the cells interleaved."""
    cells = {key: order_cell(members) for key, members in sorted(cells_of(files).items())}
    return interleaved(cells, random.Random(f"balanced:{seed}"))


def stratified(files: list[ImageFile], seed: int, **_: object) -> list[ImageFile]:
    """Round-robin over the domain x class cells, each shuffled from the seed."""
    cells = cells_of(files)
    for key in sorted(cells):
        random.Random(f"{seed}:{key[0]}:{key[1]}").shuffle(cells[key])
    return interleaved(cells, random.Random(f"stratified:{seed}"))


def shuffled(files: list[ImageFile], seed: int, **_: object) -> list[ImageFile]:
    """One seeded shuffle of all files."""
    order = list(files)
    random.Random(f"random:{seed}").shuffle(order)
    return order
