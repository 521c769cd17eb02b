"""The one interface every distillation method implements, and the hyper-parameters they all share."""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import torch
from torch import Tensor, nn

from cache.errors import InvalidOption

from ..blocks import TextHead, cosine_logits
from ..data import UNLABELLED
from ..knowledge import TeacherKnowledge
from ..models import Backbone, timm_student

OPTIMIZERS = ("adam", "sgd")
AVERAGING = ("none", "swad", "sma")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class LogUniform:
    """10 ** U(log10 low, log10 high), as DomainBed draws learning rates and weight decays."""

    low: float
    high: float
    source: str

    def draw(self, rng: random.Random) -> float:
        return 10 ** rng.uniform(math.log10(self.low), math.log10(self.high))


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float
    source: str

    def draw(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class Choice:
    values: tuple
    source: str

    def draw(self, rng: random.Random) -> object:
        return rng.choice(self.values)


Space = LogUniform | Uniform | Choice


@dataclass(frozen=True)
class Hparams:
    """Shared by every method; each method's dataclass adds its own fields and paper defaults."""

    optimizer: str = "adam"  # DomainBed and VL2V/SCMD: Adam
    lr: float = 5e-5  # DomainBed's default, used by VL2V-ADiP and SCMD
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    lr_decay_at: float | None = None  # fraction of the steps after which lr is multiplied by 0.1
    # constant (DomainBed's, with lr_decay_at's step if set) or cosine: each stage's lr follows a half cosine from
    # lr to 0, after a linear warmup over `warmup` of its steps (timm's and most fine-tuning recipes' schedule)
    lr_schedule: str = "constant"
    warmup: float = 0.0
    averaging: str = "none"  # none (best source-validation step), swad or sma
    swad_n_converge: int = 3  # SWAD (Cha et al. 2021) defaults
    swad_n_tolerance: int = 6
    swad_tolerance_ratio: float = 0.3
    sma_start: int = 300  # SMA from step 300 (SCMD)

    # Where a sweep draws each searched hyper-parameter from (its default stays the paper's, and sample 0 of a
    # sweep is the defaults). Subclasses extend it.
    SEARCH: ClassVar[dict[str, Space]] = {
        "lr": LogUniform(1e-5, 10**-3.5, "DomainBed hparams_registry: lr = 10^U(-5, -3.5)"),
        "weight_decay": LogUniform(1e-6, 1e-2, "DomainBed hparams_registry: weight_decay = 10^U(-6, -2)"),
    }

    def __post_init__(self) -> None:
        _check(self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {list(OPTIMIZERS)}")
        _check(self.averaging in AVERAGING, "averaging", f"must be one of {list(AVERAGING)}")
        _check(self.lr > 0, "lr", "must be > 0")
        _check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _check(self.lr_decay_at is None or 0 < self.lr_decay_at < 1, "lr_decay_at", "must be in (0, 1)")
        _check(self.lr_schedule in SCHEDULES, "lr_schedule", f"must be one of {list(SCHEDULES)}")
        _check(
            self.lr_schedule == "constant" or self.lr_decay_at is None,
            "lr_decay_at",
            "is a step of the constant schedule: set lr_decay_at=none with lr_schedule=cosine",
        )
        _check(0 <= self.warmup < 1, "warmup", "must be in [0, 1)")
        _check(self.swad_n_converge >= 1 and self.swad_n_tolerance >= 1, "swad_n_converge", "must be >= 1")

    @classmethod
    def sample(cls, index: int, seed: str) -> dict[str, str]:
        """Sample `index` of the search space, as `--set` overrides: sample 0 is the defaults (no override), the
        others are drawn from `SEARCH` with a generator seeded by (`seed`, index), so a sweep is reproducible."""
        if index == 0:
            return {}
        rng = random.Random(f"hparams:{seed}:{index}")
        return {name: repr(space.draw(rng)) for name, space in sorted(cls.SEARCH.items())}

    @classmethod
    def with_overrides(cls, overrides: dict[str, str]) -> Hparams:
        """Apply `--set key=value` strings, converted to each field's type; unknown keys list the valid ones."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in overrides.items():
            if key not in fields:
                raise InvalidOption(f"--set {key}: unknown hyper-parameter of {cls.__name__}; valid: {sorted(fields)}")
            values[key] = _parse(key, raw, fields[key].default, optional="None" in str(fields[key].type))
        return cls(**values)


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise InvalidOption(f"hyper-parameter {key} {message}")


def _parse(key: str, raw: str, default: object, optional: bool = False) -> object:
    """`raw` as the field's type; none (or null) for a field that may be None, whatever its default."""
    if raw.lower() in ("none", "null") and (optional or default is None):
        return None
    kind: type[Any] = type(default) if default is not None else float
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1")
        return kind(raw)
    except ValueError:
        raise InvalidOption(f"--set {key}={raw}: expected a {kind.__name__}") from None


@dataclass(frozen=True)
class Context:
    """Facts about the run a method may need: the dataset, the anchor words, the classes."""

    dataset: str
    anchors: tuple[str, ...]  # RISE's anchor words for the source domains
    num_classes: int


@dataclass
class Stage:
    """A phase of training: which parameters train, and how its final weights are chosen."""

    name: str
    param_groups: list[dict]
    averaging: str
    restore_best: bool = field(default=False)  # load the best source-validation weights when the stage ends


H = TypeVar("H", bound=Hparams)


class Method(nn.Module, Generic[H]):
    """A distillation method: a student backbone plus whatever heads it needs, and its loss.

    Subclasses (`class KD(Method[KDHparams])`) set `name`, `Hparams` and `template_set`, build their heads in
    `__init__`, and implement `loss` and `predict`. Teacher tensors arrive in the batch as `teacher_*` and carry no
    gradient. A batch may hold images nobody labelled (label `UNLABELLED`, see `labelled`): a term that needs the
    label counts only the labelled ones, a term that needs only the teacher counts them all.
    """

    name: ClassVar[str]
    Hparams: ClassVar[type[Hparams]]
    template_set: ClassVar[str] = "photo"
    learns_unlabelled: ClassVar[bool] = True  # False: the method has no term an unlabelled image can teach (ERM)

    def __init__(self, backbone: Backbone, knowledge: TeacherKnowledge, hparams: H, context: Context) -> None:
        super().__init__()
        self.backbone = backbone
        self.hparams = hparams
        self.context = context
        self.logit_scale = knowledge.logit_scale
        self.text = TextHead(knowledge.class_embeddings(self.template_set), knowledge.logit_scale)

    @staticmethod
    def build_backbone(student: str, *, pretrained: bool, weights: str | None, image_size: int) -> Backbone:
        """The network this method trains: a timm student (VL2V-SD trains the teacher's own image tower)."""
        return timm_student(student, pretrained=pretrained, weights=weights, image_size=image_size)

    @staticmethod
    def rebuild_backbone(student: str, weights: str | None, image_size: int) -> Backbone:
        """The same network with any initial weights, for a saved student whose tensors will replace them all."""
        return timm_student(student, pretrained=False, weights=None, image_size=image_size)

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError

    def predict(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def stages(self) -> list[Stage]:
        """By default one stage that trains every parameter."""
        return [
            Stage(
                "train",
                [{"params": [p for p in self.parameters() if p.requires_grad]}],
                self.hparams.averaging,
                restore_best=self.hparams.averaging == "none",
            )
        ]

    def phase(self, step: int, steps: int) -> str | None:
        """What a stage's step does where one stage has phases (SCMD's hard samples); None where it has none."""
        return None

    @staticmethod
    def labelled(batch: dict[str, Tensor]) -> Tensor:
        """(B,) bool: which images of the batch have a class."""
        return batch["labels"] != UNLABELLED

    @staticmethod
    def teacher_image(batch: dict[str, Tensor]) -> Tensor:
        """I(x), the cached teacher embedding, detached: no gradient ever reaches a teacher tensor."""
        return batch["teacher_image"].detach()

    def teacher_logits(self, teacher_image: Tensor) -> Tensor:
        """z_t[c] = s * cos(I(x), t_c), computed locally from cached embeddings."""
        with torch.no_grad():
            return cosine_logits(teacher_image.float(), self.text.classes, self.logit_scale)
