"""ERM: a linear head on the student's features and cross-entropy. No teacher (the baseline)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from . import register_method
from .base import Hparams, Method


@dataclass(frozen=True)
class ErmHparams(Hparams):
    """DomainBed's ERM defaults: Adam, lr 5e-5, no weight decay."""


@register_method("erm")
class ERM(Method[ErmHparams]):
    Hparams = ErmHparams
    learns_unlabelled = False  # cross-entropy alone: an image without a class teaches it nothing

    def __init__(self, backbone, knowledge, hparams, context) -> None:
        super().__init__(backbone, knowledge, hparams, context)
        self.head = nn.Linear(backbone.feature_dim, context.num_classes)

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        ce = F.cross_entropy(self.head(self.backbone(batch["images"])), batch["labels"])
        return {"loss": ce, "ce": ce}

    def predict(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))
