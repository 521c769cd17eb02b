"""Each method's prediction as one network from uint8 pixels to class logits, and as a plain linear classifier.

`Predictor` is what the ONNX graph holds: the pixels' scaling and normalisation, the backbone and every head the
method predicts with (ADiP's projector and text head, RISE's embedding and learned head), so a user feeds a
decoded, resized image and reads logits. `linear_classifier` is what a timm folder holds instead: timm models end
in one `nn.Linear`, so each method's head becomes one, exactly where it is linear and by a measured rescaling
where it is not (ADiP, below).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..methods.base import Method

# How an image becomes the network's input: what the export's metadata and the model card state.
INPUT = {
    "layout": "NCHW",
    "dtype": "uint8",
    "channels": "RGB",
    "resize": "bilinear, to (size, size) without keeping the aspect ratio (PIL's resize; no crop)",
}


class Predictor(nn.Module):
    """uint8 (B, 3, H, W) RGB -> float32 (B, C) logits: x / 255, (x - mean) / std, then the method's prediction."""

    mean: Tensor
    std: Tensor

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method
        self.register_buffer("mean", torch.tensor(method.backbone.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(method.backbone.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        pixels = images.float() / 255  # the same operations, in the same order, as training's `Normalize`
        return self.method.predict((pixels - self.mean) / self.std)


class NotLinear(ValueError):
    """The method's head cannot be written as one linear classifier on the backbone's features."""


@torch.no_grad()
def linear_classifier(method: Method, features: Tensor) -> tuple[Tensor, Tensor, str]:
    """(weight (C, F), bias (C,), how): a linear map from backbone features to the method's logits.

    ERM, KD and SCMD predict with a linear head, and RISE with two in a row: those fold exactly. ADiP predicts
    s * cos(P f + b, t_c) = s * t_c . (P f + b) / |P f + b|, linear but for the per-image 1 / |P f + b|. Dividing
    by that norm never changes which class is largest, so the folded head W = s T P / k, b = s T b / k gives the
    same ranking and top-1; k, the median of |P f + b| over `features` (the run's own images), brings the logits
    to their usual scale. VL2V-SD's student is the teacher's image tower, not a timm model.

    Raises:
        NotLinear: for a method with no such head (VL2V-SD).
    """
    name = method.name
    if name in ("erm", "kd", "scmd"):
        head = _linear(method, "head")
        return head.weight.clone(), head.bias.clone(), "the method's linear head"
    if name == "rise":
        embed, head = _linear(method, "embed"), _linear(method, "head")
        weight = head.weight @ embed.weight
        return weight, head.weight @ embed.bias + head.bias, "RISE's embedding and head multiplied into one"
    if name == "adip":
        projector = _linear(method, "projector")
        norm = projector(features).norm(dim=-1).median().clamp_min(1e-12)
        scale = method.text.scale / norm
        classes = F.normalize(method.text.classes, dim=-1)
        weight = scale * classes @ projector.weight
        bias = scale * classes @ projector.bias if projector.bias is not None else torch.zeros(len(classes))
        how = (
            "ADiP's projector and text head folded into one linear map: the same top-1 as vl2v's cosine head, "
            f"logits rescaled by the median projected norm {float(norm):.4g} of the run's images"
        )
        return weight, bias, how
    raise NotLinear(
        f"method {name!r} predicts with the teacher's own image tower, which timm cannot build; "
        "export it with --format onnx"
    )


def _linear(method: Method, name: str) -> nn.Linear:
    layer = getattr(method, name)
    assert isinstance(layer, nn.Linear), f"{method.name}.{name} is a {type(layer).__name__}"
    return layer
