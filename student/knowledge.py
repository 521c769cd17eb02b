"""What the teacher taught, read from the cache once: image embeddings in memory, class and anchor embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cache.prompts import anchor_prompt, class_prompts
from cache.store import EmbeddingCache

from .blocks import prompt_embedding


@dataclass
class TeacherKnowledge:
    """The cached teacher, in memory: nothing here ever queries the vendor.

    Attributes:
        image_embeddings: (N, D) unit vectors; row `index[key]` belongs to the image with that sha256.
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

    @classmethod
    def from_cache(cls, cache: EmbeddingCache) -> TeacherKnowledge:
        teacher, dataset = cache.teacher, cache.dataset
        if teacher is None or dataset is None:
            raise ValueError(f"{cache.path} holds no teacher or dataset yet; run `vl2v query` first")
        keys, matrix = cache.image_matrix()
        texts = {p: torch.from_numpy(v.copy()) for p, v in cache.texts().items()}
        return cls(
            torch.from_numpy(matrix),
            {k: i for i, k in enumerate(keys)},
            texts,
            list(dataset["class_prompts"]),
            float(teacher["logit_scale"]),
            teacher,
        )

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
