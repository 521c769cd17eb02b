"""`vl2v cache export`: the cache as plain arrays, for users who want no LMDB."""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

import numpy as np

from .store import CacheError, EmbeddingCache

FORMATS = ("npz",)


class ExportExists(CacheError):
    """The export file is there already and replacing it was not asked for."""


def export_npz(cache: EmbeddingCache, out: Path, *, overwrite: bool = False) -> dict:
    """Write `out` (.npz, at exactly that path) with one row per cached file path; returns what was written.

    The file appears whole or not at all: it is written beside `out` and renamed into place.

    Arrays: `image_embeddings` (N, D) float32, `image_keys`, `paths`, `domains`, `labels` (index into
    `class_names`; -1 for an image of a domain's `_unlabelled/` folder), `class_names`, `domain_names`, `prompts`,
    `text_embeddings` (P, D), and `teacher` (JSON).
    """
    dataset = cache.dataset or {}
    classes = list(dataset.get("classes", []))
    index = {c: i for i, c in enumerate(classes)}
    keys, paths, domains, labels, rows = [], [], [], [], []
    for key, item_paths in sorted(cache.items()):
        vector = cache.image(key)
        if vector is None:
            continue
        for path in item_paths:
            domain, name = PurePosixPath(path).parts[:2]
            keys.append(key)
            paths.append(path)
            domains.append(domain)
            labels.append(index.get(name, -1))
            rows.append(vector)
    texts = cache.texts()
    dim = int((cache.teacher or {}).get("embedding_dim", 0))
    arrays = {
        "image_embeddings": np.stack(rows) if rows else np.zeros((0, dim), np.float32),
        "image_keys": np.array(keys, dtype=str),
        "paths": np.array(paths, dtype=str),
        "domains": np.array(domains, dtype=str),
        "labels": np.array(labels, dtype=np.int64),
        "class_names": np.array(classes, dtype=str),
        "domain_names": np.array(dataset.get("domains", []), dtype=str),
        "prompts": np.array(sorted(texts), dtype=str),
        "text_embeddings": np.stack([texts[p] for p in sorted(texts)]) if texts else np.zeros((0, dim), np.float32),
        "teacher": np.array(json.dumps(cache.teacher or {})),
    }
    if out.exists() and not overwrite:
        raise ExportExists(f"{out} exists; pass --overwrite to replace it, or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.part")
    try:
        with partial.open("wb") as f:  # a file object: numpy adds no ".npz" to a name it was not given
            np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub reads **kwds as its allow_pickle
            f.flush()
            os.fsync(f.fileno())
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return {"out": str(out), "rows": len(rows), "images": len(set(keys)), "texts": len(texts)}
