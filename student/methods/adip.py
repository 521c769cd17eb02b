"""VL2V-ADiP (Addepalli et al., CVPR 2024): Align the projector, Distill into the backbone, Predict with text.

Loss in both stages: lambda * mean(1 - cos(P f(x), I(x))) + (1 - lambda) * mean(1 - cos(P f(x), t_y)).
Stage 1 trains only P (at its own lr where `align_lr` is set) and keeps its best source-validation checkpoint;
stage 2 starts there, freezes P, trains the backbone and is SWAD-averaged. Prediction: s * cos(P f(x), t_c), the
frozen text embeddings as classifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from ..blocks import image_text_distill, projector
from . import register_method
from .base import Hparams, Method, Space, Stage, Uniform, _check


@dataclass(frozen=True)
class AdipHparams(Hparams):
    distill_weight: float = 0.5  # lambda (paper and code)
    averaging: str = "swad"  # stage 2 is reported SWAD-averaged
    # Stage 1's lr (None: `lr`, as in the paper). Stage 1 fits a linear projector from scratch on frozen features:
    # the paper's 5,000 steps at 5e-5 move it far, a short schedule's few hundred barely do.
    align_lr: float | None = None

    SEARCH: ClassVar[dict[str, Space]] = Hparams.SEARCH | {
        "distill_weight": Uniform(0.25, 0.75, "VL2V-ADiP ablates lambda around 0.5"),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0 <= self.distill_weight <= 1, "distill_weight", "must be in [0, 1]")
        _check(self.align_lr is None or self.align_lr > 0, "align_lr", "must be > 0")


@register_method("adip")
class ADiP(Method[AdipHparams]):
    Hparams = AdipHparams
    template_set = "photo"  # "a photo of a {class}"

    def __init__(self, backbone, knowledge, hparams, context) -> None:
        super().__init__(backbone, knowledge, hparams, context)
        self.projector = projector(backbone.feature_dim, knowledge.dim, bias=True)

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        z = self.projector(self.backbone(batch["images"]))
        return image_text_distill(
            z,
            self.teacher_image(batch),
            self.text.classes,
            batch["labels"],
            self.labelled(batch),
            self.hparams.distill_weight,
        )

    def predict(self, images: Tensor) -> Tensor:
        return self.text(self.projector(self.backbone(images)))

    def stages(self) -> list[Stage]:
        align_lr = self.hparams.align_lr if self.hparams.align_lr is not None else self.hparams.lr
        return [
            Stage("align", [{"params": list(self.projector.parameters()), "lr": align_lr}], "none", restore_best=True),
            Stage(
                "distill",
                [{"params": list(self.backbone.parameters())}],
                self.hparams.averaging,
                restore_best=self.hparams.averaging == "none",
            ),
        ]
