"""What the teacher taught, read from the cache once: image embeddings in memory, class and anchor embeddings."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from cache.data.prompts import anchor_prompt, class_prompts
from cache.store import CacheError, EmbeddingCache
from cache.views import ViewParams

from .blocks import prompt_embedding


@dataclass
class TeacherKnowledge:
    """The cached teacher, in memory: nothing here ever queries the vendor.

    Attributes:
        image_embeddings: (N + V, D) unit vectors: the N clean images first (row `index[key]` belongs to the image
            with that sha256), then the V augmented views (`views[key]` lists an image's (view number, row)).
        view_params: each view's parameters, by its row, for the student to replay it exactly.
        texts: prompt -> (D,) embedding.
        class_names: the prompt words of each class, in label order.
        logit_scale: the teacher's own `s` (from the vendor's `/v1/models`), never hard-coded.
    """

    image_embeddings: Tensor
    index: dict[str, int]
    texts: dict[str, Tensor]
    class_names: list[str]
    logit_scale: float
    teacher: dict
    views: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    view_params: dict[int, ViewParams] = field(default_factory=dict)

    @classmethod
    def from_cache(cls, cache: EmbeddingCache) -> TeacherKnowledge:
        teacher, dataset = cache.teacher, cache.dataset
        if teacher is None or dataset is None:
            raise CacheError(f"{cache.path} holds no teacher or dataset yet; run `vl2v query` first")
        keys, matrix = cache.image_matrix()
        names, view_matrix, params = cache.view_matrix()
        views: dict[str, list[tuple[int, int]]] = {}
        for row, (key, number) in enumerate(names, start=len(keys)):
            views.setdefault(key, []).append((number, row))
        texts = {p: torch.from_numpy(v.copy()) for p, v in cache.texts().items()}
        return cls(
            torch.from_numpy(np.concatenate([matrix, view_matrix])),
            {k: i for i, k in enumerate(keys)},
            texts,
            list(dataset["class_prompts"]),
            float(teacher["logit_scale"]),
            teacher,
            {k: sorted(v) for k, v in views.items()},
            {row: ViewParams.from_json(text) for row, text in enumerate(params, start=len(keys))},
        )

    def views_by_key(self, limit: int | None) -> dict[str, tuple[int, ...]]:
        """The rows of each image's views numbered 1..`limit` (all of them: None), for training to replay."""
        return {
            key: tuple(row for number, row in numbered if limit is None or number <= limit)
            for key, numbered in self.views.items()
        }

    @property
    def dim(self) -> int:
        return int(self.image_embeddings.shape[1])

    def class_embeddings(self, template_set: str) -> Tensor:
        """(C, D): each class's prompt embedding under `template_set`."""
        return torch.stack([prompt_embedding(self.texts, class_prompts(template_set, c)) for c in self.class_names])

    def anchor_embeddings(self, anchors: list[str]) -> Tensor:
        """(C, A, D): RISE's "a {anchor} of a {class}" for every class and anchor."""
        return torch.stack(
            [
                torch.stack([prompt_embedding(self.texts, [anchor_prompt(a, c)]) for a in anchors])
                for c in self.class_names
            ]
        )
