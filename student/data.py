"""The DomainBed data protocol: per-domain 80/20 splits, per-domain training batches, evaluation loaders.

Training batches are a pure function of (seed, step): which images, and the seed of each image's augmentation.
A run resumed at step k therefore sees exactly the batches an uninterrupted run sees, whatever the workers do.

Images without a class (a domain's `_unlabelled/` folder) are kept apart from the splits: they are never
evaluated, and a step may add some of the source domains' to its batch, labelled `UNLABELLED`, for the methods
that learn from the teacher's answer alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms as T

from cache.data.datasets import Dataset as DomainDataset
from cache.errors import InvalidOption
from cache.store import CacheError
from cache.views import ViewParams, apply_view
from common.imaging import to_rgb

HOLDOUT = 0.2
UNLABELLED = -100  # the label of an image nobody labelled: cross-entropy's ignore_index, and no class's index


@dataclass(frozen=True)
class Sample:
    path: str
    label: int
    domain: int  # index into the dataset's domains
    key: str | None  # sha256 of the file, if the cache has its embedding
    views: tuple[int, ...] = ()  # rows (in TeacherKnowledge.embeddings) of its cached augmented views


def domainbed_split(samples: list[Sample], trial_seed: int, domain_index: int) -> tuple[list[Sample], list[Sample]]:
    """(in, out): a shuffle seeded from (trial seed, domain index); the first 20% are `out`."""
    order = list(samples)
    random.Random(f"domainbed-split:{trial_seed}:{domain_index}").shuffle(order)
    n_out = int(len(order) * HOLDOUT)
    return order[n_out:], order[:n_out]


@dataclass
class Splits:
    """Every domain's in/out split, and which of the source `in` images can be trained on."""

    domains: tuple[str, ...]
    test_domain: int
    splits: dict[int, tuple[list[Sample], list[Sample]]]
    holdout: int | None = None  # a source domain held out too, for leave-one-domain-out model selection
    unlabelled: dict[int, list[Sample]] = field(default_factory=dict)  # each domain's images without a class

    @property
    def sources(self) -> list[int]:
        return [d for d in range(len(self.domains)) if d not in (self.test_domain, self.holdout)]

    @property
    def test_envs(self) -> list[int]:
        """DomainBed's `test_envs`: the target, then the held-out source domain if there is one."""
        return [self.test_domain] + ([self.holdout] if self.holdout is not None else [])

    def train_sets(self) -> dict[int, list[Sample]]:
        """Source `in` samples with a cached teacher embedding; the target domain is never among them."""
        return {d: [s for s in self.splits[d][0] if s.key is not None] for d in self.sources}

    def unlabelled_set(self) -> list[Sample]:
        """The source domains' unlabelled images with a cached teacher embedding: never the target's, nor those of
        a source domain held out for model selection."""
        return [s for d in self.sources for s in self.unlabelled.get(d, []) if s.key is not None]

    def coverage(self) -> dict[str, dict[str, int]]:
        return {
            self.domains[d]: {"in_split": len(self.splits[d][0]), "with_embedding": len(samples)}
            for d, samples in self.train_sets().items()
        }


def make_splits(
    dataset: DomainDataset,
    keys_by_path: dict[str, str],
    test_domain: str,
    trial_seed: int,
    views_by_key: dict[str, tuple[int, ...]] | None = None,
    holdout: str | None = None,
) -> Splits:
    domains = dataset.domains
    if test_domain not in domains:
        raise InvalidOption(f"--test-domain {test_domain!r} is not one of {list(domains)}")
    if holdout is not None and (holdout not in domains or holdout == test_domain):
        raise InvalidOption(f"--holdout {holdout!r} must be one of {list(domains)} other than the test domain")
    by_domain: dict[int, list[Sample]] = {i: [] for i in range(len(domains))}
    unlabelled: dict[int, list[Sample]] = {i: [] for i in range(len(domains))}
    index = {d: i for i, d in enumerate(domains)}
    views_by_key = views_by_key or {}
    for f in dataset.files:
        key = keys_by_path.get(f.path)
        label = UNLABELLED if f.label is None else f.label
        sample = Sample(f.path, label, index[f.domain], key, views_by_key.get(key, ()) if key else ())
        (unlabelled if f.label is None else by_domain)[index[f.domain]].append(sample)
    return Splits(
        domains,
        index[test_domain],
        {d: domainbed_split(samples, trial_seed, d) for d, samples in by_domain.items()},
        index[holdout] if holdout is not None else None,
        unlabelled,
    )


def train_transform(size: int) -> T.Compose:
    """The papers' augmentation: RandomResizedCrop(scale 0.7-1), flip, ColorJitter(0.3 x4), grayscale 10%.
    Gives uint8 (3, size, size): a quarter of float32's bytes through the workers' queues; `Normalize` the batch."""
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.7, 1.0)),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.3, 0.3, 0.3, 0.3),
            T.RandomGrayscale(0.1),
            T.PILToTensor(),
        ]
    )


def eval_transform(size: int) -> T.Compose:
    """Resize to (size, size); uint8 (3, size, size), as `train_transform`."""
    return T.Compose([T.Resize((size, size)), T.PILToTensor()])


class Normalize:
    """uint8 (B, 3, H, W) -> float32 (x / 255 - mean) / std, on the batch's device: the same numbers, in the same
    order of operations, as torchvision's ToTensor followed by Normalize."""

    def __init__(self, mean: tuple = IMAGENET_DEFAULT_MEAN, std: tuple = IMAGENET_DEFAULT_STD) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.float().div_(255)
        return (pixels - self.mean.to(pixels.device)) / self.std.to(pixels.device)


@dataclass(frozen=True)
class Replay:
    """Augmented views to replay exactly: each view's parameters by its row, and the student's resolution."""

    params: dict[int, ViewParams]
    size: int


class ImageFiles(Dataset):
    """Images read from disk. An index is `i` or `(i, seed)`; a seed makes the augmentation reproducible.

    With `replay`, a training sample that has cached views shows one of them, chosen by the seed, exactly as the
    teacher saw it (`cache.views.apply_view`), and says which (its row); otherwise it is augmented at random and
    its row is -1 (the clean image's embedding). A file that cannot be read gives `None` instead of a tensor: the
    batch goes on without it (`readable_batch`) and the caller counts and names it.
    """

    def __init__(self, root: Path, samples: list[Sample], transform: T.Compose, replay: Replay | None = None) -> None:
        self.root, self.samples, self.transform, self.replay = root, samples, transform, replay

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor | None, int, int, int]:
        i, seed = index if isinstance(index, tuple) else (index, None)
        sample = self.samples[i]
        try:
            with Image.open(self.root / sample.path) as image:
                image = to_rgb(image)  # the pixels the teacher saw: the wire protocol's reading of the file
        except Exception:  # noqa: BLE001 (any decoder failure: a truncated, corrupt or unreadable file)
            return None, sample.label, i, -1
        if seed is not None and self.replay is not None and sample.views:
            row = sample.views[seed % len(sample.views)]
            view = apply_view(image, self.replay.params[row], self.replay.size)
            return PIL_TO_TENSOR(view), sample.label, i, row
        if seed is not None:
            # torchvision draws its random parameters from torch's global CPU generator. Seeding that one alone
            # gives the same numbers as torch.manual_seed, without its per-call bookkeeping for CUDA (a millisecond
            # an image where CUDA is installed but not started).
            torch.default_generator.manual_seed(seed)
            random.seed(seed)
        return self.transform(image), sample.label, i, -1


PIL_TO_TENSOR = T.PILToTensor()


@dataclass
class LoadedBatch:
    """A batch as loaded: the readable images, their labels and sample indices, the teacher row of each image's
    view (-1: the clean image's), and the indices of the unreadable ones."""

    images: torch.Tensor | None  # (B, 3, H, W) uint8; None when no image of the batch could be read
    labels: torch.Tensor
    indices: torch.Tensor
    views: torch.Tensor
    unreadable: list[int]


def readable_batch(items: list[tuple[torch.Tensor | None, int, int, int]]) -> LoadedBatch:
    """Collate the images that could be read; list the indices of those that could not."""
    images, kept, unreadable = [], [], []
    for image, label, i, row in items:
        if image is None:
            unreadable.append(i)
        else:
            images.append(image)
            kept.append((label, i, row))
    return LoadedBatch(
        images=torch.stack(images) if images else None,
        labels=torch.tensor([label for label, _, _ in kept], dtype=torch.long),
        indices=torch.tensor([i for _, i, _ in kept], dtype=torch.long),
        views=torch.tensor([row for _, _, row in kept], dtype=torch.long),
        unreadable=unreadable,
    )


@dataclass(frozen=True)
class Group:
    """Rows [first, first + count) of the flat sample list, of which a step draws `per_step`."""

    first: int
    count: int
    per_step: int


class StepBatches(Sampler):
    """Yields, for steps start..end-1, each group's `per_step` (index, augmentation seed) pairs: the whole plan, or,
    for one of several processes, its share (`share`, every world-th pair)."""

    def __init__(
        self,
        groups: list[Group],
        seed: int,
        start: int,
        end: int,
        share: Callable[[list], list] = lambda plan: plan,
    ) -> None:
        self.groups, self.seed, self.start, self.end, self.share = groups, seed, start, end, share

    def __len__(self) -> int:
        return self.end - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.end):
            yield self.share(batch_plan(self.groups, self.seed, step))


def batch_plan(groups: list[Group], seed: int, step: int) -> list[tuple[int, int]]:
    """The batch of `step`: from each group (a source domain, then the unlabelled images if any), indices drawn
    with replacement (as DomainBed's infinite loaders do) and one augmentation seed per image. A group added last
    leaves the draws of those before it as they were."""
    rng = np.random.default_rng([seed, step])
    plan = []
    for group in groups:
        picks = rng.integers(0, group.count, group.per_step)
        seeds = rng.integers(0, 2**31 - 1, group.per_step)
        plan += [(group.first + int(i), int(s)) for i, s in zip(picks, seeds, strict=True)]
    return plan


def train_loader(
    root: Path,
    train_sets: dict[int, list[Sample]],
    transform: T.Compose,
    per_domain: int,
    seed: int,
    start: int,
    end: int,
    workers: int,
    replay: Replay | None = None,
    share: Callable[[list], list] = lambda plan: plan,
    unlabelled: list[Sample] | None = None,
    unlabelled_per_step: int = 0,
) -> tuple[DataLoader, list[Sample]]:
    """The training batches of steps [start, end) (this process's `share` of each), and the flat list of samples
    their indices point into: `per_domain` images of each source domain a step, then `unlabelled_per_step` of the
    `unlabelled` images."""
    flat: list[Sample] = []
    groups = []
    for samples in train_sets.values():
        if not samples:
            raise CacheError("a source domain has no cached training image; query more of it (`vl2v query`)")
        groups.append(Group(len(flat), len(samples), per_domain))
        flat += samples
    if unlabelled and unlabelled_per_step:
        groups.append(Group(len(flat), len(unlabelled), unlabelled_per_step))
        flat += unlabelled
    sampler = StepBatches(groups, seed, start, end, share)
    loader = DataLoader(
        ImageFiles(root, flat, transform, replay),
        batch_sampler=sampler,
        collate_fn=readable_batch,
        num_workers=workers,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers else None,
    )
    return loader, flat


def eval_loader(root: Path, samples: list[Sample], transform: T.Compose, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(
        ImageFiles(root, samples, transform),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=readable_batch,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
    )
