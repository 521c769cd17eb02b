"""Training throughput with the real loader over the same step on synthetic in-memory tensors, in one run.

    python bench/train.py --student resnet18 --image-size 224 --workers 2 --steps 8 [--views 4]
    python bench/train.py --student resnet50 --device cuda --amp --workers 8 --steps 20   # where a GPU is lent
    python bench/train.py --student tf_efficientnet_lite0 --image-size 64 --steps 20 --layouts  # layout, precision

The cache is bought from a `vl2v serve` subprocess (the tiny architecture, random weights: the embeddings'
values do not change speed). Both timings run the same ADiP step (forward, loss, backward, Adam) on the same
student; "real" reads 32 JPEGs per source domain per step through `student.data.train_loader` (decode,
RandomResizedCrop, flip, ColorJitter, grayscale, normalise; with `--views K`, the replay of one of K cached views
of each image instead) with cached teacher embeddings, "synthetic" reuses one batch already in memory. On
`--device cuda` the step runs as the trainer runs it (images normalised on the device, channels-last, `--amp`:
the trainer's autocast and loss scaling). Where the real loop's time goes: `loader_wait_share` is the share of
its wall time spent waiting for the next batch (decode and augmentation not hidden behind the step), the rest is
the step itself (transfer, forward, loss, backward, optimiser). Prints one JSON object.
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
from common.devices import resolve_device
from student.data import Normalize, Replay, make_splits, train_loader, train_transform
from student.knowledge import TeacherKnowledge
from student.methods import get_method
from student.methods.base import Context
from student.models import timm_student
from student.trainer import embedding_rows, mixed_precision, model_input


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
    method.to(args.device).to(memory_format=torch.channels_last)  # as the trainer keeps it
    stage = method.stages()[1]  # the distill stage: the whole backbone trains
    optimizer = torch.optim.Adam(stage.param_groups, lr=5e-5)
    return knowledge, splits, method, Step(method, optimizer, args.device, args.amp)


class Step:
    """One ADiP training step the way the trainer takes it: to the device, normalised, channels-last, autocast."""

    def __init__(self, method, optimizer, device: torch.device, amp: bool) -> None:
        self.method, self.optimizer, self.device = method, optimizer, device
        self.scaler, self.autocast = mixed_precision(device, amp)
        self.normalize = Normalize(method.backbone.mean, method.backbone.std)
        self.layout = torch.channels_last

    def __call__(self, images, labels, teacher) -> None:
        images = model_input(images, self.normalize, self.device).contiguous(memory_format=self.layout)
        batch = {"images": images, "labels": labels.to(self.device), "teacher_image": teacher.to(self.device)}
        with self.autocast():
            loss = self.method.loss(batch)["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def finish(self) -> None:
        """Wait for the device: a CUDA step returns before its kernels have run."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def real(args, knowledge, splits, method, step) -> tuple[float, float]:
    """(images/s, share of the wall time spent waiting for the loader) with the real loader."""
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
    rows = embedding_rows(knowledge.index, flat)
    method.train()
    done, waited, started = 0, 0.0, time.perf_counter()
    batches = iter(loader)
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            step.finish()
            done, waited, started = 0, 0.0, time.perf_counter()
        asked = time.perf_counter()
        loaded = next(batches)
        waited += time.perf_counter() - asked
        teacher = torch.where(loaded.views >= 0, loaded.views, rows[loaded.indices])
        step(loaded.images, loaded.labels, knowledge.image_embeddings[teacher])
        done += len(loaded.indices)
    step.finish()
    elapsed = time.perf_counter() - started
    return done / elapsed, waited / elapsed


def synthetic(args, knowledge, splits, method, step) -> float:
    # uint8, as the loader gives them: both halves normalise on the device inside the step
    images = torch.randint(0, 256, (96, 3, args.image_size, args.image_size), dtype=torch.uint8)
    labels = torch.randint(0, 7, (96,))
    teacher = knowledge.image_embeddings[:96]
    method.train()
    for _ in range(args.warmup):
        step(images, labels, teacher)
    step.finish()
    started = time.perf_counter()
    for _ in range(args.steps):
        step(images, labels, teacher)
    step.finish()
    return 96 * args.steps / (time.perf_counter() - started)


# The trainer's step against what it could be instead on this machine: its layout and its precision.
VARIANTS = {
    "channels-last, fp32 (the trainer)": (torch.channels_last, None),
    "contiguous, fp32": (torch.contiguous_format, None),
    "channels-last, bf16 autocast": (torch.channels_last, torch.bfloat16),
}


def layouts(args, cache_dir: Path) -> dict[str, float]:
    """The synthetic step's images/s in each of `VARIANTS`, each from the same initial weights."""
    rates = {}
    for name, (layout, dtype) in VARIANTS.items():
        knowledge, splits, method, step = build(args, cache_dir)
        method.to(memory_format=layout)
        step.layout = layout
        if dtype is not None:
            step.autocast = lambda dtype=dtype: torch.autocast(args.device.type, dtype=dtype)
        rates[name] = synthetic(args, knowledge, splits, method, step)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--views", type=int, default=0, help="buy K views of each image and replay them")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--amp", action="store_true", help="the trainer's mixed precision (CUDA only)")
    parser.add_argument("--layouts", action="store_true", help="the step in each of VARIANTS, not the loader")
    args = parser.parse_args()
    args.device = resolve_device(args.device)
    cache_dir = Path(tempfile.mkdtemp()) / "cache"
    with serve("vl2v-tiny", 64) as service:
        config = QueryConfig(dataset="pacs", data_dir=PACS_MINI, cache_dir=cache_dir, views=args.views)
        run_query(config, TeacherClient(service.url, KEY))
    setup = {
        "student": args.student,
        "device": str(args.device),
        "image_size": args.image_size,
        "images_per_step": 96,
        "steps": args.steps,
        "cpu_threads": torch.get_num_threads(),
    }
    if args.layouts:
        rates = layouts(args, cache_dir)
        trainer = next(iter(rates.values()))
        over = {name: rate / trainer for name, rate in rates.items()}
        print(json.dumps(setup | {"images_per_s": rates, "over_the_trainer": over}, indent=2))
        return
    parts = build(args, cache_dir)
    synthetic_rate = synthetic(args, *parts)
    real_rate, loader_wait_share = real(args, *parts)
    loader = {"amp": args.amp and args.device.type == "cuda", "workers": args.workers, "views": args.views}
    rates = {"synthetic_images_per_s": synthetic_rate, "real_images_per_s": real_rate}
    ratio = {"ratio": real_rate / synthetic_rate, "loader_wait_share": loader_wait_share}
    print(json.dumps(setup | loader | rates | ratio, indent=2))


if __name__ == "__main__":
    main()
