"""Adaptive rounds (`vl2v query --rounds N`): after each round a cheap probe is fit on what is bought, and the next
round buys the images it is least sure of.

The probe is a ridge regression from the student's features to the teacher's zero-shot logits (the teacher's
image embedding against each class's prompt embedding, times its logit scale), fit on the images bought so far:
a linear read-out of what the teacher would say, from what the student already sees. Two acquisitions:
`entropy` (the probe's predictive entropy: the classic uncertainty sampling of Lewis & Gale, SIGIR 1994) and
`disagreement` (one minus the probe's probability of the file's own label, which is free: the images where the
teacher is expected to correct the student most). Ties go by a seeded order; with `balanced`, each domain x class
cell is ordered on its own and the cells interleaved.
"""

from __future__ import annotations

import random

import numpy as np

from ..data.datasets import ImageFile
from ..errors import InvalidOption
from . import Features
from .stratified import balanced as balanced_order

ACQUISITIONS = ("entropy", "disagreement")
RIDGE = 1e-2


def probe_scores(
    features: Features,
    bought: dict[str, np.ndarray],
    classes: np.ndarray,
    logit_scale: float,
    labels: dict[str, int],
    acquire: str = "entropy",
) -> dict[str, float]:
    """Each unbought image's score (higher: buy sooner), from a probe fit on the `bought` images' teacher logits.

    Args:
        bought: content key -> the teacher's image embedding, for the images bought so far.
        classes: (C, D) the teacher's class prompt embeddings, unit-norm.
        labels: content key -> the file's class index (for `disagreement`; an image without one, from a domain's
            `_unlabelled/` folder, is scored by the probe's least confidence instead).
    """
    if acquire not in ACQUISITIONS:
        raise InvalidOption(f"--acquire {acquire!r} is not one of {list(ACQUISITIONS)}")
    keys = [k for k in bought if k in features.vectors]
    if not keys:
        raise InvalidOption("the adaptive rounds need images bought in the first round to fit the probe on")
    x = np.stack([features.vectors[k] for k in keys]).astype(np.float64)
    targets = logit_scale * np.stack([bought[k] for k in keys]).astype(np.float64) @ classes.T.astype(np.float64)
    mean = x.mean(0)
    xc = x - mean
    # Ridge in the dual (n x n), as there are fewer bought images than feature dimensions.
    alpha = np.linalg.solve(xc @ xc.T + RIDGE * len(keys) * np.eye(len(keys)), targets - targets.mean(0))
    rest = [k for k in features.vectors if k not in bought]
    if not rest:
        return {}
    logits = (np.stack([features.vectors[k] for k in rest]) - mean) @ (xc.T @ alpha) + targets.mean(0)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    if acquire == "entropy":
        score = -(p * np.log(np.clip(p, 1e-12, 1))).sum(1)
    else:
        named = [labels.get(k) for k in rest]
        picked = [int(p[i].argmax()) if label is None else label for i, label in enumerate(named)]
        score = 1 - p[np.arange(len(rest)), picked]
    return dict(zip(rest, score.tolist(), strict=True))


def uncertainty(
    files: list[ImageFile], seed: int, *, features: Features, scores: dict[str, float] | None = None,
    balance: bool = False, **_: object,
) -> list[ImageFile]:  # fmt: skip
    """`files` by their probe score, highest first (bought images, which have none, last)."""
    if scores is None:
        raise InvalidOption("the uncertainty order needs the probe's scores (vl2v query --rounds N)")

    def by_score(cell: list[ImageFile]) -> list[ImageFile]:
        cell = list(cell)
        random.Random(f"uncertainty:{seed}").shuffle(cell)  # ties by a seeded order (sort is stable)
        return sorted(cell, key=lambda f: -scores.get(features.keys[f.path], -np.inf))

    return balanced_order(files, seed, by_score) if balance else by_score(files)
