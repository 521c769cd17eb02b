"""Greedy k-center (core-set) selection: Sener & Savarese, "Active Learning for Convolutional Neural Networks: A
Core-Set Approach", ICLR 2018 (the greedy 2-approximation of its section 4).

Farthest-first traversal of the student's features: the next image is the one farthest (in feature space) from
every image already bought or chosen, so a budget covers the data with the smallest radius the greedy rule finds.
Images bought by earlier runs are the starting centres, so raising the budget extends the cover; with none, the
first centre is the image nearest the features' mean (deterministic), ties broken by the seeded order. The order
is complete: any budget buys its prefix.
"""

from __future__ import annotations

import random

import numpy as np

from ..data.datasets import ImageFile
from . import Features
from .stratified import balanced


def kcenter(
    files: list[ImageFile], seed: int, *, features: Features, bought: frozenset[str] = frozenset(),
    balance: bool = False, **_: object,
) -> list[ImageFile]:  # fmt: skip
    """The farthest-first order of `files` (each cell on its own, interleaved, when `balance`)."""
    if balance:
        return balanced(files, seed, lambda cell: _farthest_first(cell, seed, features, bought))
    return _farthest_first(files, seed, features, bought)


def _farthest_first(files: list[ImageFile], seed: int, features: Features, bought: frozenset[str]) -> list[ImageFile]:
    files = list(files)
    random.Random(f"kcenter:{seed}").shuffle(files)  # ties (equal distances) broken by a seeded order
    if not files:
        return []
    x = features.matrix([f.path for f in files]).astype(np.float64)
    chosen = np.zeros(len(files), bool)
    order: list[int] = []
    held = [features.vectors[k] for k in sorted(bought) if k in features.vectors]
    if held:
        distance = _min_distance(x, np.stack(held).astype(np.float64))
    else:
        first = int(np.argmin(((x - x.mean(0)) ** 2).sum(1)))
        order, chosen[first] = [first], True
        distance = ((x - x[first]) ** 2).sum(1)
    while len(order) < len(files):
        pick = int(np.argmax(np.where(chosen, -np.inf, distance)))
        order.append(pick)
        chosen[pick] = True
        distance = np.minimum(distance, ((x - x[pick]) ** 2).sum(1))
    return [files[i] for i in order]


def _min_distance(x: np.ndarray, centres: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Each row of `x`'s squared distance to its nearest centre."""
    out = np.empty(len(x))
    c2 = (centres**2).sum(1)
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk]
        d = (block**2).sum(1)[:, None] - 2 * block @ centres.T + c2[None, :]
        out[start : start + chunk] = np.maximum(d.min(1), 0)
    return out
