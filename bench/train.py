"""Training throughput with the real loader over the same step on synthetic in-memory tensors, in one run.

    python bench/train.py --student resnet18 --image-size 224 --workers 2 --steps 8 [--views 4]

The cache is bought from a `vl2v serve` subprocess (the tiny architecture, random weights: the embeddings'
values do not change speed). Both timings run the same ADiP step (forward, loss, backward, Adam) on the same
student; "real" reads 32 JPEGs per source domain per step through `student.data.train_loader` (decode,
RandomResizedCrop, flip, ColorJitter, grayscale, normalise; with `--views K`, the replay of one of K cached views
of each image instead) with cached teacher embeddings, "synthetic" reuses one batch already in memory. Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from harness import KEY, PACS_MINI, serve

from cache.client import TeacherClient
from cache.data.datasets import open_dataset
from cache.query import QueryConfig, run_query
from cache.store import EmbeddingCache
from student.data import Normalize, Replay, make_splits, train_loader, train_transform
from student.knowledge import TeacherKnowledge
from student.methods import get_method
from student.methods.base import Context
from student.models import timm_student


def build(args, cache_dir: Path):
    with EmbeddingCache.open(cache_dir) as cache:
        knowledge = TeacherKnowledge.from_cache(cache)
        keys = {p: k for k, paths in cache.items() for p in paths}
    dataset = open_dataset("pacs", PACS_MINI)
    splits = make_splits(dataset, keys, "sketch", trial_seed=0, views_by_key=knowledge.views_by_key(args.views))
    torch.manual_seed(0)
    backbone = timm_student(args.student, pretrained=False, weights=None, image_size=args.image_size)
    cls = get_method("adip")
    method = cls(backbone, knowledge, cls.Hparams(), Context("pacs", (), len(dataset.classes)))
    stage = method.stages()[1]  # the distill stage: the whole backbone trains
    optimizer = torch.optim.Adam(stage.param_groups, lr=5e-5)
    return knowledge, splits, method, optimizer


def step(method, optimizer, images, labels, teacher) -> None:
    loss = method.loss({"images": images, "labels": labels, "teacher_image": teacher})["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def real(args, knowledge, splits, method, optimizer) -> float:
    transform = train_transform(args.image_size)
    loader, flat = train_loader(
        PACS_MINI,
        splits.train_sets(),
        transform,
        32,
        seed=0,
        start=0,
        end=args.steps + args.warmup,
        workers=args.workers,
        replay=Replay(knowledge.view_params, args.image_size),
    )
    rows = torch.tensor([knowledge.index[s.key] for s in flat])
    normalize = Normalize()
    method.train()
    done, started = 0, None
    for i, loaded in enumerate(loader):
        if i == args.warmup:
            started = time.perf_counter()
        images = normalize(loaded.images)
        teacher = torch.where(loaded.views >= 0, loaded.views, rows[loaded.indices])
        step(method, optimizer, images, loaded.labels, knowledge.image_embeddings[teacher])
        done += len(loaded.indices) if i >= args.warmup else 0
    return done / (time.perf_counter() - started)


def synthetic(args, knowledge, splits, method, optimizer) -> float:
    images = torch.randn(96, 3, args.image_size, args.image_size)
    labels = torch.randint(0, 7, (96,))
    teacher = knowledge.image_embeddings[:96]
    method.train()
    for _ in range(args.warmup):
        step(method, optimizer, images, labels, teacher)
    started = time.perf_counter()
    for _ in range(args.steps):
        step(method, optimizer, images, labels, teacher)
    return 96 * args.steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--views", type=int, default=0, help="buy K views of each image and replay them")
    args = parser.parse_args()
    cache_dir = Path(tempfile.mkdtemp()) / "cache"
    with serve("vl2v-tiny", 64) as service:
        config = QueryConfig(dataset="pacs", data_dir=PACS_MINI, cache_dir=cache_dir, views=args.views)
        run_query(config, TeacherClient(service.url, KEY))
    parts = build(args, cache_dir)
    synthetic_rate = synthetic(args, *parts)
    real_rate = real(args, *parts)
    print(
        json.dumps(
            {
                "student": args.student,
                "image_size": args.image_size,
                "workers": args.workers,
                "views": args.views,
                "images_per_step": 96,
                "steps": args.steps,
                "cpu_threads": torch.get_num_threads(),
                "synthetic_images_per_s": synthetic_rate,
                "real_images_per_s": real_rate,
                "ratio": real_rate / synthetic_rate,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
