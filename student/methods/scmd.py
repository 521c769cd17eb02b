"""SCMD (Leng et al., TMLR 2024): selective cross-modality distillation on the hardest samples.

For the first 75% of steps only the 20% of each batch with the highest cross-entropy (computed without gradient)
is trained on; then the full batch. Loss: CE + 0.5 KD(z_t, z_s) + 0.5 KD(z_t, z_cm), T = 3, where
z_cm = s * cos(P f(x), t_c) with a learnable scale s (init 1/0.07, clamped to [1, 100], its own lr 1e-4).
Weights are SMA-averaged from step 300; prediction uses the linear head. An image without a class is as hard as
its cross-entropy against the teacher's most likely class, and trains the two KD terms alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..blocks import cosine_logits, kd_loss, projector
from ..data import UNLABELLED
from . import register_method
from .base import Choice, Hparams, Method, Space, Stage, Uniform, _check


@dataclass(frozen=True)
class ScmdHparams(Hparams):
    averaging: str = "sma"
    hard_fraction: float = 0.2
    hard_until: float = 0.75  # fraction of the steps with hard-sample selection
    kd_weight: float = 0.5
    cross_modal_weight: float = 0.5
    temperature: float = 3.0
    scale_lr: float = 1e-4
    init_scale: float = 1 / 0.07
    max_scale: float = 100.0

    SEARCH: ClassVar[dict[str, Space]] = Hparams.SEARCH | {
        "hard_fraction": Choice((0.1, 0.2, 0.3), "around SCMD's 20%"),
        "kd_weight": Uniform(0.25, 1.0, "around SCMD's 0.5"),
        "cross_modal_weight": Uniform(0.25, 1.0, "around SCMD's 0.5"),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0 < self.hard_fraction <= 1, "hard_fraction", "must be in (0, 1]")
        _check(0 <= self.hard_until <= 1, "hard_until", "must be in [0, 1]")
        _check(1 <= self.init_scale <= self.max_scale, "init_scale", "must be in [1, max_scale]")


@register_method("scmd")
class SCMD(Method[ScmdHparams]):
    Hparams = ScmdHparams
    template_set = "scmd"  # "this is a photo of a {class}"

    def __init__(self, backbone, knowledge, hparams, context) -> None:
        super().__init__(backbone, knowledge, hparams, context)
        self.head = nn.Linear(backbone.feature_dim, context.num_classes)
        self.projector = projector(backbone.feature_dim, knowledge.dim, bias=False)
        self.log_scale = nn.Parameter(torch.tensor(math.log(hparams.init_scale)))

    def select_hard(self, images: Tensor, labels: Tensor) -> Tensor:
        """Indices of the `hard_fraction` of the batch with the highest cross-entropy against `labels` (for an
        unlabelled image, the teacher's most likely class), found without gradient."""
        with torch.no_grad():
            losses = F.cross_entropy(self.head(self.backbone(images)), labels, reduction="none")
        keep = max(1, math.ceil(self.hparams.hard_fraction * len(labels)))
        return losses.topk(keep).indices

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images, labels, teacher = batch["images"], batch["labels"], self.teacher_image(batch)
        if float(batch["progress"]) < self.hparams.hard_until:
            named = torch.where(self.labelled(batch), labels, self.teacher_logits(teacher).argmax(1))
            kept = self.select_hard(images, named)
            images, labels, teacher = images[kept], labels[kept], teacher[kept]
        features = self.backbone(images)
        logits = self.head(features)
        scale = self.log_scale.clamp(0, math.log(self.hparams.max_scale)).exp()
        cross_modal = cosine_logits(self.projector(features), self.text.classes, scale)
        target = self.teacher_logits(teacher)
        # UNLABELLED is cross-entropy's ignore_index; a selection of unlabelled images alone has no CE term.
        ce = F.cross_entropy(logits, labels) if bool((labels != UNLABELLED).any()) else logits.new_zeros(())
        kd = kd_loss(target, logits, self.hparams.temperature)
        kd_cm = kd_loss(target, cross_modal, self.hparams.temperature)
        total = ce + self.hparams.kd_weight * kd + self.hparams.cross_modal_weight * kd_cm
        return {"loss": total, "ce": ce, "kd": kd, "kd_cross_modal": kd_cm, "kept": torch.tensor(float(len(labels)))}

    def predict(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))

    def phase(self, step: int, steps: int) -> str:
        """One stage in two phases: the hardest samples until `hard_until` of the steps, then every sample."""
        if step / steps < self.hparams.hard_until:
            return f"hardest {self.hparams.hard_fraction:.0%} of each batch until step {self.hard_steps(steps)}"
        return "every sample"

    def hard_steps(self, steps: int) -> int:
        """How many of a stage's steps train on the hardest samples only (step s is one when s / steps < until)."""
        return math.ceil(self.hparams.hard_until * steps)

    def stages(self) -> list[Stage]:
        rest = [p for n, p in self.named_parameters() if n != "log_scale" and p.requires_grad]
        groups: list[dict] = [{"params": rest}, {"params": [self.log_scale], "lr": self.hparams.scale_lr}]
        return [Stage("train", groups, self.hparams.averaging)]
