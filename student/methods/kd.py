"""KD: a linear head trained with cross-entropy plus logit distillation from the teacher's zero-shot logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from ..blocks import kd_loss
from . import register_method
from .base import Choice, Hparams, Method, Space, Uniform, _check


@dataclass(frozen=True)
class KdHparams(Hparams):
    kd_weight: float = 0.5  # lambda; SCMD's KD baseline
    temperature: float = 3.0  # T; SCMD and RISE

    SEARCH: ClassVar[dict[str, Space]] = Hparams.SEARCH | {
        "kd_weight": Uniform(0.1, 1.0, "around SCMD's KD baseline (0.5)"),
        "temperature": Choice((1.0, 2.0, 3.0, 4.0), "around the T = 3 of SCMD and RISE"),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.kd_weight >= 0, "kd_weight", "must be >= 0")
        _check(self.temperature > 0, "temperature", "must be > 0")


@register_method("kd")
class KD(Method[KdHparams]):
    Hparams = KdHparams

    def __init__(self, backbone, knowledge, hparams, context) -> None:
        super().__init__(backbone, knowledge, hparams, context)
        self.head = nn.Linear(backbone.feature_dim, context.num_classes)

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = self.head(self.backbone(batch["images"]))
        ce = F.cross_entropy(logits, batch["labels"])  # UNLABELLED is its ignore_index: the labelled images
        kd = kd_loss(self.teacher_logits(self.teacher_image(batch)), logits, self.hparams.temperature)
        return {"loss": ce + self.hparams.kd_weight * kd, "ce": ce, "kd": kd}

    def predict(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))
