"""What a run was asked to do: plain, validated data. The CLI builds these without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from teacher_service.demo.world import DOMAINS

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
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")


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
    image_size: int = 224
    data_dir: Path | None = None  # where the images are now, if they moved since the query
    overrides: dict[str, str] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    resume: bool = False
    overwrite: bool = False  # replace the run already in `out`

    def __post_init__(self) -> None:
        check_method_name(self.method)
        if self.trials < 1:
            raise ValueError(f"--trials must be >= 1, got {self.trials}")
        if self.image_size < 8:
            raise ValueError(f"--image-size must be >= 8, got {self.image_size}")
        if self.resume and self.overwrite:
            raise ValueError("--resume continues the run in --out and --overwrite replaces it: pass one of them")


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("vl2v-demo")
    target: str = "sketch"
    methods: tuple[str, ...] = ("erm", "kd", "adip")
    student: str = "resnet18"
    steps: int = 300  # per stage
    lr: float = 1e-3  # students start from scratch here, not from ImageNet weights as in the papers (5e-5)
    batch_size: int = 16  # per source domain
    eval_every: int = 100
    per_class: int = 40  # images per domain and class
    budget: int | None = None  # images to buy; None: the whole world (4 x 8 x per_class)
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        if self.target not in DOMAINS:
            raise ValueError(f"--target {self.target!r} is not one of {list(DOMAINS)}")
