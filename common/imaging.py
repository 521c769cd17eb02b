"""Which pixels an image file means (wire protocol v1): shared by the vendor and by clients that train on them.

Image files come in many modes; converting them with a plain `Image.convert("RGB")` silently clips 16-bit and
float images to white and drops transparency onto whatever colour the hidden pixels hold. Both sides of the wire
read an image the same way: EXIF orientation applied, 16-bit and float samples scaled to 8 bits, transparency
composited over white. What cannot be read faithfully is refused, never embedded as a blank image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

# What a data URL may declare for each format Pillow reports.
FORMAT_MIME = {
    "JPEG": {"image/jpeg", "image/jpg", "image/pjpeg"},
    "MPO": {"image/jpeg", "image/jpg"},  # a JPEG with extra frames, as cameras write them
    "PNG": {"image/png"},
    "WEBP": {"image/webp"},
    "BMP": {"image/bmp", "image/x-ms-bmp"},
    "GIF": {"image/gif"},
    "TIFF": {"image/tiff", "image/tif"},
}
ACCEPTED_MIME = frozenset().union(*FORMAT_MIME.values())
_ALPHA_MODES = {"LA", "La", "RGBA", "RGBa", "PA"}
_BACKGROUND = (255, 255, 255)


class UnreadableImage(ValueError):
    """The image's pixels cannot be turned into RGB without losing what they show."""


def mime_matches(declared: str, image_format: str | None) -> bool:
    return declared.lower() in FORMAT_MIME.get(image_format or "", set())


def to_rgb(image: Image.Image) -> Image.Image:
    """The RGB image `image` shows. Raises `UnreadableImage` for sample values that have no faithful 8-bit form."""
    image = ImageOps.exif_transpose(image)  # a camera's portrait photo stands upright
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        return _scaled(np.asarray(image, dtype=np.float64), mode, integer=True)
    if mode == "F":
        return _scaled(np.asarray(image, dtype=np.float64), mode, integer=False)
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as e:
        raise UnreadableImage(f"images of mode {mode} cannot be converted to RGB ({e})") from None


def _scaled(samples: np.ndarray, mode: str, *, integer: bool) -> Image.Image:
    """One-channel 16-bit, 32-bit or float samples as 8-bit grey, scaled by the range the values declare."""
    if not np.isfinite(samples).all():
        raise UnreadableImage(f"a {mode} image holds non-finite values")
    low, high = (float(samples.min()), float(samples.max())) if samples.size else (0.0, 0.0)
    if low < 0:
        raise UnreadableImage(f"a {mode} image holds negative values (min {low:g})")
    if integer:
        if high > 65535:
            raise UnreadableImage(f"a {mode} image holds values up to {high:g}; at most 16-bit values are read")
        scale = 1.0 if high <= 255 and mode == "I" else 255 / 65535
    else:
        if high > 255:
            raise UnreadableImage(f"a float image holds values up to {high:g}; expected [0, 1] or [0, 255]")
        scale = 255.0 if high <= 1.0 else 1.0
    grey = np.clip(np.rint(samples * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")
