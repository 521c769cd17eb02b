"""VL2V-SD (white-box self-distillation): the student is the teacher's own image tower, all of it trained.

Loss: 0.5 * mean(1 - cos(g(x), I(x))) + 0.5 * mean(1 - cos(g(x), t_y)); predict with the text head. The only
method that needs the teacher's weights (a local open_clip checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from ..blocks import image_text_distill
from ..models import Backbone, clip_image_tower
from . import register_method
from .base import Hparams, Method, Space, Uniform, _check


@dataclass(frozen=True)
class SdHparams(Hparams):
    distill_weight: float = 0.5
    averaging: str = "swad"

    SEARCH: ClassVar[dict[str, Space]] = Hparams.SEARCH | {
        "distill_weight": Uniform(0.25, 0.75, "as VL2V-ADiP's lambda"),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0 <= self.distill_weight <= 1, "distill_weight", "must be in [0, 1]")


@register_method("sd")
class SD(Method[SdHparams]):
    Hparams = SdHparams

    @staticmethod
    def build_backbone(student: str, *, pretrained: bool, weights: str | None, image_size: int) -> Backbone:
        return clip_image_tower(student, weights)

    @staticmethod
    def rebuild_backbone(student: str, weights: str | None, image_size: int) -> Backbone:
        return clip_image_tower(student, weights)  # its architecture comes with the checkpoint

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        z = self.backbone(batch["images"])
        return image_text_distill(
            z,
            self.teacher_image(batch),
            self.text.classes,
            batch["labels"],
            self.labelled(batch),
            self.hparams.distill_weight,
        )

    def predict(self, images: Tensor) -> Tensor:
        return self.text(self.backbone(images))
