"""What a cache holds (`vl2v cache info`) and whether it is whole (`vl2v cache verify`)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field, fields
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from .store import NORM_TOLERANCE, EmbeddingCache, LedgerTotals


@dataclass(frozen=True)
class CacheInfo:
    """What a cache holds and what it cost, from the cache alone."""

    cache: str
    dataset: str | None  # None until a query has bound the cache to a dataset
    data_root: str | None
    teacher: dict[str, Any]  # the recorded teacher's id, url, fingerprint, embedding_dim and precision
    images: int
    views: int
    texts: int
    images_by_domain: dict[str, int]
    images_by_class: dict[str, dict[str, int]]  # domain -> class -> images
    classes: list[str]  # the dataset's classes, those with no image in any domain included
    totals: LedgerTotals
    currency: str | None
    pending_requests: int
    skipped_reasons: dict[str, int]  # items the query skipped, by reason
    selection: list[dict] = field(default_factory=list)  # each buying run: strategy, seed, features, keys in order

    def empty_cells(self) -> list[tuple[str, str]]:
        """(domain, class) pairs of the dataset with no image in the cache, for every domain that has any."""
        return [(d, c) for d, counts in self.images_by_class.items() for c in self.classes if not counts.get(c)]

    @property
    def skipped(self) -> int:
        return sum(self.skipped_reasons.values())

    def to_json(self) -> dict:
        """One flat object: the fields, the ledger totals beside them (`vl2v cache info --json`)."""
        totals = self.totals
        flat = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "totals"}
        return flat | {
            "paid_images": totals.paid_images,
            "paid_texts": totals.paid_texts,
            "paid_tokens": totals.paid_tokens,
            "free_images": totals.free_images,
            "unrecovered_images": totals.unrecovered_images,
            "unrecovered_cost": totals.unrecovered_cost,
            "cost": totals.cost,
            "requests": totals.requests,
            "replayed_requests": totals.replayed_requests,
            "probe_cost": totals.probe_cost,
            "skipped": self.skipped,
        }


def cache_info(cache: EmbeddingCache) -> CacheInfo:
    """Counts per domain and class, spend, budget used, teacher and skipped items, from the cache alone."""
    by_domain: Counter[str] = Counter()
    by_class: dict[str, Counter[str]] = defaultdict(Counter)
    for _, paths in cache.items():
        cells = {PurePosixPath(p).parts[:2] for p in paths}
        for domain in {d for d, _ in cells}:
            by_domain[domain] += 1
        for domain, name in cells:
            by_class[domain][name] += 1
    teacher, dataset, counts = cache.teacher or {}, cache.dataset or {}, cache.counts()
    return CacheInfo(
        cache=str(cache.path),
        dataset=dataset.get("name"),
        data_root=dataset.get("root"),
        teacher={k: teacher.get(k) for k in ("id", "vendor", "url", "fingerprint", "embedding_dim", "precision")},
        images=counts["image"],
        views=counts["views"],
        texts=counts["text"],
        images_by_domain=dict(sorted(by_domain.items())),
        images_by_class={d: dict(sorted(c.items())) for d, c in sorted(by_class.items())},
        classes=list(dataset.get("classes") or sorted({c for counts in by_class.values() for c in counts})),
        totals=cache.totals(),
        currency=(teacher.get("pricing") or {}).get("currency"),
        pending_requests=len(cache.pending()),
        skipped_reasons=dict(Counter(s["reason"].split(":")[0] for s in cache.skipped().values())),
        selection=cache.selections,
    )


def verify_cache(cache: EmbeddingCache) -> list[str]:
    """Every problem found; an empty list means the cache is whole.

    Checks: every embedding's bytes still match their checksum; every item has an embedding and every embedding
    an item; every embedding (image and text) is finite, unit-norm and of the recorded dim; the ledger accounts
    for exactly the embeddings held (paid and free answers; unrecovered requests hold none); nothing is pending.
    """
    problems: list[str] = []
    teacher = cache.teacher
    if teacher is None:
        return ["no teacher recorded in meta: the cache was never written by `vl2v query`"]
    dim = int(teacher["embedding_dim"])
    item_keys = {k for k, _ in cache.items()}
    image_keys = set()
    for key, vector, intact in cache.checked("image"):
        image_keys.add(key)
        problems += _check_crc(f"image {key}", intact) + _check_vector(f"image {key[:12]}", vector, dim)
    for prompt, vector, intact in cache.checked("text"):
        problems += _check_crc(f"text {prompt}", intact) + _check_vector(f"text {prompt!r}", vector, dim)
    views = 0
    for name, vector, intact in cache.checked("views"):
        views += 1
        problems += _check_crc(f"view {name}", intact) + _check_vector(f"view {name[:12]}", vector, dim)
        if name.rpartition(":")[0] not in image_keys:
            problems.append(f"view {name[:12]}...{name.rpartition(':')[2]} has no image")
    problems += [f"item {k[:12]} has no embedding" for k in sorted(item_keys - image_keys)]
    problems += [f"embedding {k[:12]} has no item (paths)" for k in sorted(image_keys - item_keys)]
    totals = cache.totals()
    if totals.held_images != len(image_keys) + views:
        problems.append(
            f"ledger accounts for {totals.held_images} images but the cache holds {len(image_keys)} and {views} views"
        )
    if totals.held_texts != cache.counts()["text"]:
        problems.append(f"ledger accounts for {totals.held_texts} texts but the cache holds {cache.counts()['text']}")
    problems += [f"request {k} is pending (run `vl2v query` again to finish it)" for k in cache.pending()]
    return problems


def _check_crc(name: str, intact: bool) -> list[str]:
    return [] if intact else [f"{name[:80]}: checksum mismatch, its bytes changed on disk"]


def _check_vector(name: str, vector: np.ndarray, dim: int) -> list[str]:
    if vector.shape != (dim,):
        return [f"{name}: {vector.shape[0]} values, expected {dim}"]
    if not np.isfinite(vector).all():
        return [f"{name}: not finite"]
    norm = float(np.linalg.norm(vector))
    if abs(norm - 1.0) > NORM_TOLERANCE:
        return [f"{name}: norm {norm:.4f}, expected 1"]
    return []
