"""TypiClust: Hacohen, Dekel & Weinshall, "Active Learning on a Budget: Opposite Strategies Suit High and Low
Budgets", ICML 2022.

Cluster the student's features into (images already bought + images this budget buys) clusters, then take, from
the largest clusters that hold no bought image, each one's most typical image: typicality is the inverse of the
mean distance to its 20 nearest neighbours in its cluster. Low budgets gain most from typical, well-spread
examples, which is the regime a pay-per-query teacher puts a user in. The features are reduced to 64 principal
components first (the paper clusters self-supervised embeddings; ImageNet features serve here), and the clustering
is k-means with k-means++ starts from the seed. After the budget's picks the order continues farthest-first
(`kcenter`), so the order is complete and a larger budget in a later run starts from what is bought.
"""

from __future__ import annotations

import random

import numpy as np

from ..data.datasets import ImageFile
from . import Features
from .kcenter import kcenter
from .stratified import balanced

NEIGHBOURS = 20
COMPONENTS = 64
ITERATIONS = 25
RESTARTS = 4


def typiclust(
    files: list[ImageFile], seed: int, *, features: Features, bought: frozenset[str] = frozenset(),
    budget: int | None = None, balance: bool = False, **_: object,
) -> list[ImageFile]:  # fmt: skip
    """The budget's typical picks first, then the rest farthest-first."""
    if balance:
        cells = len({(f.domain, f.label) for f in files}) or 1
        share = None if budget is None else -(-budget // cells)
        return balanced(files, seed, lambda cell: _typical_first(cell, seed, features, bought, share))
    return _typical_first(files, seed, features, bought, budget)


def _typical_first(
    files: list[ImageFile], seed: int, features: Features, bought: frozenset[str], budget: int | None
) -> list[ImageFile]:
    files = sorted(files, key=lambda f: f.path)
    if not files:
        return []
    budget = len(files) if budget is None else max(0, min(budget, len(files)))
    held = [k for k in sorted(bought) if k in features.vectors]
    x = _reduced(np.concatenate([features.matrix([f.path for f in files]), _rows(features, held)]), seed)
    clusters = min(len(x), len(held) + budget)
    labels = _kmeans(x, clusters, seed) if clusters else np.zeros(len(x), int)
    covered = set(labels[len(files) :].tolist())  # clusters already holding a bought image
    sizes = np.bincount(labels[: len(files)], minlength=clusters)
    picks: list[int] = []
    for cluster in sorted(range(clusters), key=lambda c: (-sizes[c], c)):
        if len(picks) >= budget:
            break
        members = np.flatnonzero(labels[: len(files)] == cluster)
        if cluster in covered or not len(members):
            continue
        picks.append(int(members[np.argmax(_typicality(x[members]))]))
    chosen = [files[i] for i in picks]
    keys = frozenset(bought) | {features.keys[f.path] for f in chosen}
    rest = kcenter([f for i, f in enumerate(files) if i not in set(picks)], seed, features=features, bought=keys)
    return chosen + rest


def _rows(features: Features, keys: list[str]) -> np.ndarray:
    if not keys:
        return np.zeros((0, len(next(iter(features.vectors.values())))), np.float32)
    return np.stack([features.vectors[k] for k in keys])


def _reduced(x: np.ndarray, seed: int) -> np.ndarray:
    x = x.astype(np.float64) - x.mean(0)
    if x.shape[1] <= COMPONENTS or len(x) <= COMPONENTS:
        return x
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:COMPONENTS].T


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Lloyd's k-means from k-means++ starts, the best of `RESTARTS` seeded runs (least inertia): each row's cluster."""
    rng = np.random.default_rng(random.Random(f"typiclust:{seed}").getrandbits(32))
    best, best_inertia = np.zeros(len(x), int), np.inf
    for _ in range(RESTARTS):
        labels, inertia = _lloyd(x, _plus_plus(x, k, rng))
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return best


def _plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [x[rng.integers(len(x))]]
    distance = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = distance.sum()
        pick = rng.choice(len(x), p=distance / total) if total > 0 else rng.integers(len(x))
        centres.append(x[pick])
        distance = np.minimum(distance, ((x - x[pick]) ** 2).sum(1))
    return np.stack(centres)


def _lloyd(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, float]:
    labels = np.full(len(x), -1)
    for _ in range(ITERATIONS):
        d = np.maximum((x**2).sum(1)[:, None] - 2 * x @ c.T + (c**2).sum(1)[None, :], 0)
        new = d.argmin(1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(len(c)):
            members = x[labels == j]
            if len(members):
                c[j] = members.mean(0)
    d = np.maximum((x**2).sum(1)[:, None] - 2 * x @ c.T + (c**2).sum(1)[None, :], 0)
    return labels, float(d[np.arange(len(x)), labels].sum())


def _typicality(x: np.ndarray) -> np.ndarray:
    """1 / the mean distance to the (at most 20) nearest other members of the cluster."""
    if len(x) == 1:
        return np.ones(1)
    d = np.sqrt(np.maximum((x**2).sum(1)[:, None] - 2 * x @ x.T + (x**2).sum(1)[None, :], 0))
    k = min(NEIGHBOURS, len(x) - 1)
    nearest = np.sort(d, axis=1)[:, 1 : k + 1]
    return 1 / (nearest.mean(1) + 1e-12)
