"""Turning a data URL into a decoded RGB image, refusing anything malformed or dangerous before it is decoded.

Two passes: `read_header` checks every item of a request from its data URL and its image header alone (MIME,
size, pixel count, aspect ratio, that the bytes are the declared format), so one bad item fails the request before
any image is decoded; `decode` then decodes the pixels and reads them the way the wire protocol defines
(`imaging.to_rgb`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from common.imaging import ACCEPTED_MIME, UnreadableImage, mime_matches, to_rgb

from .errors import InvalidInput, PayloadTooLarge

_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(;[\w.+-]+=[\w.+-]+)*);base64,", re.ASCII)
MAX_ASPECT_RATIO = 20
HEADER_BYTES = 48 << 10  # decoded to read an image's header (a multiple of 3: whole base64 quanta)


@dataclass(frozen=True)
class EncodedImage:
    """One request item whose header passed: its base64 text, and where it sits in the request."""

    payload: str
    param: str


def read_header(url: str, param: str, max_bytes: int, max_pixels: int) -> EncodedImage:
    """Everything knowable about one item without decoding its pixels; raises the item's 4xx if it is bad.

    Only the first `HEADER_BYTES` of the image are base64-decoded for this (enough for the header of nearly every
    file); the rest is decoded with the pixels, so a request with a bad header costs little to refuse.
    """
    mime, payload = _payload(url, param, max_bytes)
    prefix = payload[: HEADER_BYTES // 3 * 4]
    try:
        _check_header(_b64(prefix, param), mime, param, max_pixels)
    except InvalidInput:
        if len(prefix) == len(payload):
            raise
        _check_header(_b64(payload, param), mime, param, max_pixels)  # a header longer than the prefix
    return EncodedImage(payload, param)


def decode(item: EncodedImage) -> Image.Image:
    """The item's pixels as RGB (`imaging.to_rgb`); refuse truncated or unreadable files with a 400."""
    with _opened(_b64(item.payload, item.param), item.param) as image:
        try:
            image.load()
            return to_rgb(image)
        except UnreadableImage as e:
            raise InvalidInput(str(e), param=item.param) from None
        except Exception as e:  # any decoder failure on untrusted bytes is this item's fault, never a 500
            raise InvalidInput(f"image is corrupt or truncated ({type(e).__name__}: {e})", param=item.param) from None


def _payload(url: str, param: str, max_bytes: int) -> tuple[str, str]:
    """(MIME type, base64 text) of a data URL, checked without decoding anything."""
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
    if not payload:
        raise InvalidInput("image is empty", param=param)
    return mime, payload


def _b64(text: str, param: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("image data is not valid base64", param=param) from None


def _check_header(data: bytes, mime: str, param: str, max_pixels: int) -> None:
    with _opened(data, param) as image:
        width, height = image.size  # from the header: no pixel is decoded here
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
        if not mime_matches(mime, image.format):
            raise InvalidInput(f"the data URL says {mime} but the data is {image.format or 'unknown'}", param=param)


@contextlib.contextmanager
def _opened(data: bytes, param: str) -> Iterator[Image.Image]:
    """`Image.open` on untrusted bytes: every way opening can fail becomes a 400 naming the item."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidInput("data is not a decodable image", param=param) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidInput("image is a decompression bomb", param=param, code="image_too_many_pixels") from None
    except Exception as e:
        raise InvalidInput(f"image header is corrupt ({type(e).__name__}: {e})", param=param) from None
    with image:
        yield image
