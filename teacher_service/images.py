"""Turning a data URL into a decoded RGB image, refusing anything malformed or dangerous before it is decoded."""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings

from PIL import Image, UnidentifiedImageError

from .errors import InvalidInput, PayloadTooLarge

_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(;[\w.+-]+=[\w.+-]+)*);base64,", re.ASCII)
MAX_ASPECT_RATIO = 20
ACCEPTED_MIME = {"image/jpeg", "image/jpg", "image/png", "image/webp", "image/bmp", "image/gif", "image/tiff"}


def decode_data_url(url: str, param: str, max_bytes: int) -> bytes:
    """The image bytes inside `data:image/...;base64,...`; `param` names the item in errors."""
    match = _DATA_URL.match(url)
    if match is None:
        raise InvalidInput("image must be a base64 data URL such as 'data:image/jpeg;base64,...'", param=param)
    mime = match["mime"].lower()
    if mime not in ACCEPTED_MIME:
        raise InvalidInput(f"unsupported image type {mime!r}; accepted: {sorted(ACCEPTED_MIME)}", param=param)
    payload = url[match.end() :]
    # 4 base64 characters carry 3 bytes: refuse before decoding anything too big.
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise PayloadTooLarge(f"image is larger than {max_bytes} bytes", param=param, code="image_too_large")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("image data is not valid base64", param=param) from None
    if not data:
        raise InvalidInput("image is empty", param=param)
    return data


def open_image(data: bytes, param: str, max_pixels: int) -> Image.Image:
    """Decode fully into RGB; refuse truncated files, non-images and decompression bombs with a 400."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size  # read from the header, before any pixel is decoded
            if width * height > max_pixels:
                raise InvalidInput(
                    f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
                    param=param,
                    code="image_too_many_pixels",
                )
            if width == 0 or height == 0:
                raise InvalidInput("image has no pixels", param=param)
            if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
                # Resizing the short side to the model's size would blow the long side up to millions of pixels.
                raise InvalidInput(
                    f"image is {width}x{height}; aspect ratios beyond {MAX_ASPECT_RATIO}:1 are refused", param=param
                )
            image.load()
            return image.convert("RGB")
    except InvalidInput:
        raise
    except UnidentifiedImageError:
        raise InvalidInput("data is not a decodable image", param=param) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidInput("image is a decompression bomb", param=param, code="image_too_many_pixels") from None
    except Exception as e:  # any decoder failure on untrusted bytes is this item's fault, never a 500
        raise InvalidInput(f"image is corrupt or truncated ({type(e).__name__}: {e})", param=param) from None
