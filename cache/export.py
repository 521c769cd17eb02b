"""`vl2v cache export`: the cache as plain arrays, for users who want no LMDB."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np

from .store import EmbeddingCache

FORMATS = ("npz",)


def export_npz(cache: EmbeddingCache, out: Path) -> dict:
    """Write `out` (.npz) with one row per cached file path; returns what was written.

    Arrays: `image_embeddings` (N, D) float32, `image_keys`, `paths`, `domains`, `labels` (index into
    `class_names`), `class_names`, `domain_names`, `prompts`, `text_embeddings` (P, D), and `teacher` (JSON).
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
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    return {"out": str(out), "rows": len(rows), "images": len(set(keys)), "texts": len(texts)}
