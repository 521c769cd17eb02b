"""Augmented views, bought once and replayed exactly: the papers' training augmentation as explicit parameters.

A view is RandomResizedCrop (scale 0.7-1, ratio 3/4-4/3), a horizontal flip, ColorJitter (0.3 each, in a random
order) and RandomGrayscale (10%), as the three papers train. Its parameters are a pure function of (image key,
view index), and are kept relative to the image (the crop box as fractions), so the client can render a view at
the teacher's resolution and the student replay the same view at its own: both then see the same pixels, and the
student learns from the embedding of exactly what it sees (Beyer et al., CVPR 2022, "patient and consistent").

The operations are PIL's, on both sides (the student's loader calls `apply_view` too), so nothing here imports
torch. View 0 is the clean image itself; views 1..K are augmented.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

SCALE = (0.7, 1.0)
RATIO = (3 / 4, 4 / 3)
JITTER = 0.3  # brightness, contrast, saturation and hue
GRAYSCALE = 0.1
_OPERATIONS = ("brightness", "contrast", "saturation", "hue")


@dataclass(frozen=True)
class ViewParams:
    """One augmented view of an image, independent of its resolution."""

    box: tuple[float, float, float, float]  # left, top, width, height, as fractions of the image
    flip: bool
    order: tuple[int, ...]  # the order of the four colour operations (indices into brightness..hue)
    brightness: float
    contrast: float
    saturation: float
    hue: float  # a shift of the hue circle, in [-0.3, 0.3]
    grayscale: bool

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> ViewParams:
        values = json.loads(text)
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**fields)


def view_params(image_key: str, index: int) -> ViewParams:
    """The parameters of view `index` (1, 2, ...) of the image whose sha256 is `image_key`: always the same."""
    if index < 1:
        raise ValueError(f"augmented views are numbered from 1, got {index}")
    rng = random.Random(hashlib.sha256(f"vl2v-view:{image_key}:{index}".encode()).digest())
    box = (0.0, 0.0, 1.0, 1.0)  # torchvision's fallback after 10 misses: the whole image
    for _ in range(10):
        scale = rng.uniform(*SCALE)
        ratio = math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))
        width, height = math.sqrt(scale * ratio), math.sqrt(scale / ratio)
        if width <= 1 and height <= 1:
            box = (rng.uniform(0, 1 - width), rng.uniform(0, 1 - height), width, height)
            break
    order = list(range(len(_OPERATIONS)))
    rng.shuffle(order)
    return ViewParams(
        box=box,
        flip=rng.random() < 0.5,
        order=tuple(order),
        brightness=rng.uniform(1 - JITTER, 1 + JITTER),
        contrast=rng.uniform(1 - JITTER, 1 + JITTER),
        saturation=rng.uniform(1 - JITTER, 1 + JITTER),
        hue=rng.uniform(-JITTER, JITTER),
        grayscale=rng.random() < GRAYSCALE,
    )


def apply_view(image: Image.Image, params: ViewParams, size: int) -> Image.Image:
    """The view of an RGB `image`, at `size` x `size`: crop and resize in one resampling, then flip, colour, grey."""
    width, height = image.size
    left, top, w, h = params.box
    box = (left * width, top * height, (left + w) * width, (top + h) * height)
    view = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
    if params.flip:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for operation in params.order:
        name = _OPERATIONS[operation]
        if name == "brightness":
            view = ImageEnhance.Brightness(view).enhance(params.brightness)
        elif name == "contrast":
            view = ImageEnhance.Contrast(view).enhance(params.contrast)
        elif name == "saturation":
            view = ImageEnhance.Color(view).enhance(params.saturation)
        else:
            view = _shift_hue(view, params.hue)
    if params.grayscale:
        view = view.convert("L").convert("RGB")
    return view


def _shift_hue(image: Image.Image, shift: float) -> Image.Image:
    """Turn the hue circle by `shift` (a fraction of it), as torchvision's adjust_hue does for PIL images."""
    h, s, v = image.convert("HSV").split()
    turned = (np.asarray(h, dtype=np.int16) + round(shift * 255)) % 256
    return Image.merge("HSV", (Image.fromarray(turned.astype(np.uint8), "L"), s, v)).convert("RGB")


def render_view(image: Image.Image, params: ViewParams, size: int) -> bytes:
    """A view as the bytes the vendor is sent: a lossless PNG at the teacher's resolution."""
    out = io.BytesIO()
    apply_view(image, params, size).save(out, format="PNG", compress_level=1)
    return out.getvalue()
