"""The selection strategies a budget can buy by, one module each, registered here (`cache.selection` orders with
them). The feature-based ones read the student's own ImageNet features of every image, computed locally and free
before anything is bought (`student.features`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Features:
    """Every image's features under one student: `keys[path]` is the file's sha256 (its content), `vectors[sha]`
    its L2-normalised feature vector; `student` names who computed them (name, weights, size)."""

    student: str
    keys: dict[str, str]
    vectors: dict[str, np.ndarray]

    def matrix(self, paths: list[str]) -> np.ndarray:
        return np.stack([self.vectors[self.keys[p]] for p in paths]) if paths else np.zeros((0, 0), np.float32)


# name -> (module, function, needs features); the order functions share one signature (see `cache.selection`)
REGISTRY = {
    "stratified": ("stratified", "stratified", False),
    "random": ("stratified", "shuffled", False),
    "kcenter": ("kcenter", "kcenter", True),
    "typiclust": ("typiclust", "typiclust", True),
    "uncertainty": ("uncertainty", "uncertainty", True),  # the adaptive rounds' later rounds (`--rounds`)
}
