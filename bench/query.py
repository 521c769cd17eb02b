"""Query pipeline throughput over service throughput, and cache read speed, on one machine in one run.

    python bench/query.py --model ViT-B-32 --budget 640 --seconds 30 --embeddings 100000

1. service: the capacity of `vl2v serve` (`bench/harness.hammer`: 8 clients x 8 pre-encoded JPEGs);
2. query: `run_query` on pacs-mini against the same service: read, hash, decode-check, base64, send, commit
   to LMDB; images/s = paid images / wall time of the run (its 84 prompts included);
3. cache: a synthetic cache of `--embeddings` 512-d embeddings; random single reads per second, and the time to
   load all of them into one tensor (`EmbeddingCache.image_matrix`).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from harness import KEY, PACS_MINI, hammer, serve

from cache.client import TeacherClient
from cache.query import QueryConfig, run_query
from cache.store import EmbeddingCache, LedgerRow


def query_throughput(url: str, budget: int, batch: int, concurrency: int) -> dict:
    config = QueryConfig(
        dataset="pacs",
        data_dir=PACS_MINI,
        cache_dir=Path(tempfile.mkdtemp()) / "cache",
        budget=budget,
        batch_size=batch,
        concurrency=concurrency,
    )
    started = time.perf_counter()
    report = run_query(config, TeacherClient(url, KEY))
    elapsed = time.perf_counter() - started
    return {
        "query_images": report.paid_images,
        "query_texts": report.paid_texts,
        "query_seconds": elapsed,
        "query_images_per_s": report.paid_images / elapsed,
    }


def cache_reads(n: int, dim: int = 512, reads: int = 100_000) -> dict:
    path = Path(tempfile.mkdtemp()) / "cache"
    rng = np.random.default_rng(0)
    keys = [f"{i:064x}" for i in range(n)]
    started = time.perf_counter()
    with EmbeddingCache.open(path, write=True) as cache:
        cache.bind_teacher(
            {"id": "bench", "fingerprint": "0" * 64, "embedding_dim": dim, "preprocess": {}, "precision": "fp32"}
        )
        for start in range(0, n, 1000):
            block = rng.normal(size=(min(1000, n - start), dim)).astype(np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            cache.commit_images(
                {k: (v, [f"d/c/{k}.jpg"]) for k, v in zip(keys[start : start + 1000], block, strict=True)},
                LedgerRow(f"r{start}", f"i{start}", len(block), 0, 0, 0.0, time.time()),
            )
    write_s = time.perf_counter() - started
    with EmbeddingCache.open(path) as cache:
        order = random.Random(0).choices(keys, k=reads)
        started = time.perf_counter()
        for key in order:
            cache.image(key)
        read_s = time.perf_counter() - started
        started = time.perf_counter()
        _, matrix = cache.image_matrix()
        tensor = torch.from_numpy(matrix)
        load_s = time.perf_counter() - started
    assert tensor.shape == (n, dim)
    return {
        "cache_embeddings": n,
        "cache_write_s": write_s,
        "random_reads_per_s": reads / read_s,
        "load_all_into_tensor_s": load_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--budget", type=int, default=640)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--embeddings", type=int, default=100_000)
    args = parser.parse_args()
    images = sorted((PACS_MINI / "photo").rglob("*.jpg"))
    with serve(args.model, args.batch) as service:
        capacity = hammer(service, args.model, images, clients=8, per_request=8, seconds=args.seconds)
        queried = query_throughput(service.url, args.budget, args.batch, args.concurrency)
    result = {
        "model": args.model,
        "batch": args.batch,
        "concurrency": args.concurrency,
        "service_images_per_s": capacity["images_per_s"],
        **queried,
        "ratio": queried["query_images_per_s"] / capacity["images_per_s"],
        **cache_reads(args.embeddings),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
