"""The teacher's own zero-shot accuracy per domain, from cached embeddings alone: the teacher row of every table."""

from __future__ import annotations

from collections import defaultdict
from pathlib import PurePosixPath

import torch

from cache.data.layout import UNLABELLED
from cache.store import CacheError, EmbeddingCache

from .blocks import cosine_logits
from .knowledge import TeacherKnowledge
from .results import ZeroShot


def zeroshot_accuracy(cache: EmbeddingCache, template_set: str = "photo") -> ZeroShot:
    """Accuracy per domain of the cached images, classified by the cached prompt embeddings; no query is made.
    Unlabelled images (a domain's `_unlabelled/` folder) have no class to be right about, and are not counted."""
    knowledge = TeacherKnowledge.from_cache(cache)
    classes = knowledge.class_embeddings(template_set)
    if not knowledge.index:
        raise CacheError(f"{cache.path} holds no image embeddings yet; buy some with `vl2v query`")
    raw_classes = list(cache.bound_dataset()["classes"])
    label = {name: i for i, name in enumerate(raw_classes)}
    rows: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for key, paths in cache.items():
        if key not in knowledge.index:
            continue
        for path in paths:
            domain, name = PurePosixPath(path).parts[:2]
            if name == UNLABELLED:
                continue
            rows[domain].append((knowledge.index[key], label[name]))
    accuracy, counts = {}, {}
    for domain in sorted(rows):
        index, labels = (torch.tensor(x) for x in zip(*rows[domain], strict=True))
        logits = cosine_logits(knowledge.image_embeddings[index], classes, knowledge.logit_scale)
        accuracy[domain] = float((logits.argmax(1) == labels).float().mean())
        counts[domain] = len(labels)
    return ZeroShot(accuracy, counts, template_set, len(raw_classes))
