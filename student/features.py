"""The student's own ImageNet features of every image: what the feature-based selection strategies read, computed
locally and free before anything is bought.

Features are kept beside the cache (`CACHE.features/<student>.npz`), one row per image content (sha256): a file
seen before under any path is not computed again, and a dataset that grows computes only its new images. Each
file records who computed it (student, weights, size); another student's file is refused in one line. Rows are
the backbone's pooled features at `image_size`, L2-normalised.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cache.data.datasets import Dataset
from cache.errors import InvalidOption
from cache.strategies import Features
from common.imaging import to_rgb

from .config import FeatureSpec
from .data import Normalize, eval_transform
from .models import timm_student


def load_features(path: Path, spec: FeatureSpec) -> tuple[dict[str, np.ndarray], dict]:
    """The rows a features file holds, by content key, after checking it was computed by `spec`."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if meta.get("spec") != asdict(spec):
            raise InvalidOption(
                f"{path} holds features of {meta.get('spec')}, not of {asdict(spec)}: another student's features "
                "order the images for that student; compute this one's (a new --features file)"
            )
        return dict(zip(data["keys"].tolist(), data["vectors"], strict=True)), meta


def image_features(
    dataset: Dataset,
    path: Path,
    spec: FeatureSpec,
    *,
    device: str = "cpu",
    batch_size: int = 64,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> Features:
    """Every file's content key and its features, computing (and saving to `path`) only what `path` lacks."""
    rows, _ = load_features(path, spec) if path.exists() else ({}, {})
    keys: dict[str, str] = {}
    data: dict[str, bytes] = {}
    with ThreadPoolExecutor(4) as pool:
        blobs = list(pool.map(_read, [dataset.root / f.path for f in dataset.files]))
        for f, blob in zip(dataset.files, blobs, strict=True):
            if blob is None:
                continue  # unreadable: the query job skips it, and the order puts it last
            key = hashlib.sha256(blob).hexdigest()
            keys[f.path] = key
            if key not in rows:
                data[key] = blob
    todo = sorted(data)
    on_progress(0, len(todo))
    if todo:
        backbone = timm_student(spec.student, pretrained=True, weights=spec.weights, image_size=spec.image_size)
        backbone = backbone.eval().to(device)
        normalize, transform = Normalize(backbone.mean, backbone.std), eval_transform(spec.image_size)
        for start in range(0, len(todo), batch_size):
            chunk = [k for k in todo[start : start + batch_size] if _rgb(data[k]) is not None]
            if not chunk:
                continue
            pixels = torch.stack([transform(_rgb(data[k])) for k in chunk]).to(device)
            with torch.no_grad():
                out = backbone(normalize(pixels)).float()
            out = torch.nn.functional.normalize(out, dim=1).cpu().numpy()
            rows.update(zip(chunk, out, strict=True))
            on_progress(min(start + batch_size, len(todo)), len(todo))
        _save(path, rows, spec)
    keys = {p: k for p, k in keys.items() if k in rows}
    return Features(spec.tag, keys, {k: rows[k] for k in set(keys.values())})


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _rgb(blob: bytes) -> Image.Image | None:
    """The image, or None when it does not decode (the query job skips such files; the order puts them last)."""
    try:
        with Image.open(io.BytesIO(blob)) as image:
            image.load()
            return to_rgb(image)
    except Exception:  # any decoder failure
        return None


def _save(path: Path, rows: dict[str, np.ndarray], spec: FeatureSpec) -> None:
    """Atomically: a crash leaves the previous file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted(rows)
    tmp = path.with_suffix(".tmp.npz")
    meta = json.dumps({"spec": asdict(spec), "images": len(keys)})
    np.savez(tmp, keys=np.array(keys), vectors=np.stack([rows[k] for k in keys]).astype(np.float32), meta=meta)
    os.replace(tmp, path)
