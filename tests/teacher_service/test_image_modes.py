"""Every image mode is embedded as the picture it shows, or refused naming the item; never as a blank image."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from common.imaging import UnreadableImage, to_rgb
from common.schema import decode_vector

from .test_api_contract import embed, image
from .test_errors import assert_error


def encoded(picture: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    picture.save(out, fmt, **options)
    return out.getvalue()


def png_16bit(samples: np.ndarray) -> bytes:
    """A 16-bit PNG (grey, or RGB for an (H, W, 3) array), written by hand: Pillow writes neither for RGB."""
    height, width = samples.shape[:2]
    colour = 2 if samples.ndim == 3 else 0
    big_endian = samples.astype(">u2")
    raw = b"".join(b"\0" + big_endian[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def photo(pacs_mini) -> Image.Image:
    path = sorted((pacs_mini / "photo" / "dog").glob("*.jpg"))[0]
    return Image.open(path).convert("RGB").resize((96, 80))


def variants(photo: Image.Image) -> dict[str, tuple[bytes, str, Image.Image]]:
    """name -> (file bytes, MIME, the RGB picture the file shows)."""
    grey = photo.convert("L")
    grey8 = np.asarray(grey)
    rgb8 = np.asarray(photo)
    alpha = np.zeros(photo.size[::-1], np.uint8)
    alpha[:, : photo.size[0] // 2] = 255  # left half opaque, right half transparent
    rgba = photo.copy()
    rgba.putalpha(Image.fromarray(alpha))
    on_white = np.where(alpha[..., None] == 255, rgb8, 255).astype(np.uint8)
    palette = photo.quantize(16)
    palette.info["transparency"] = 0
    palette_rgb = np.asarray(palette.convert("RGB"))
    palette_shown = np.where((np.asarray(palette) == 0)[..., None], 255, palette_rgb).astype(np.uint8)
    rotated = photo.transpose(Image.Transpose.ROTATE_90)  # stored sideways, EXIF says: turn it back
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the picture is shown after turning it 90 degrees clockwise
    return {
        "16-bit grey PNG": (png_16bit(grey8.astype(np.uint16) * 257), "image/png", grey.convert("RGB")),
        "16-bit RGB PNG": (png_16bit(rgb8.astype(np.uint16) * 257), "image/png", photo),
        "float32 TIFF in [0, 1]": (
            encoded(Image.fromarray(grey8.astype(np.float32) / 255), "TIFF"),
            "image/tiff",
            grey.convert("RGB"),
        ),
        "32-bit integer TIFF": (
            encoded(Image.fromarray(grey8.astype(np.int32) * 257), "TIFF"),
            "image/tiff",
            grey.convert("RGB"),
        ),
        "RGBA PNG": (encoded(rgba, "PNG"), "image/png", Image.fromarray(on_white)),
        "palette PNG with transparency": (encoded(palette, "PNG"), "image/png", Image.fromarray(palette_shown)),
        "EXIF-rotated JPEG": (encoded(rotated, "JPEG", quality=100, exif=exif), "image/jpeg", photo),
        "CMYK JPEG": (encoded(photo.convert("CMYK"), "JPEG", quality=100), "image/jpeg", photo),
    }


CASES = [
    "16-bit grey PNG",
    "16-bit RGB PNG",
    "float32 TIFF in [0, 1]",
    "32-bit integer TIFF",
    "RGBA PNG",
    "palette PNG with transparency",
    "EXIF-rotated JPEG",
    "CMYK JPEG",
]


@pytest.mark.parametrize("name", CASES)
def test_every_mode_reads_as_the_picture_it_shows(photo, name):
    data, _, shown = variants(photo)[name]
    got = np.asarray(to_rgb(Image.open(io.BytesIO(data))), dtype=float)
    want = np.asarray(shown, dtype=float)
    assert got.shape == want.shape
    lossy = "JPEG" in name
    assert np.abs(got - want).mean() < (6 if lossy else 0.51), name
    assert got.std() > 20, "not a blank image"


@pytest.mark.parametrize("name", CASES)
def test_the_vendor_embeds_every_mode_like_its_plain_rgb_picture(service, photo, name):
    data, mime, shown = variants(photo)[name]
    response = embed(
        service, [image(data, mime), image(encoded(shown, "PNG"), "image/png"), image(blank(), "image/png")]
    )
    assert response.status_code == 200, response.text
    mode_vector, plain, white = (decode_vector(d["embedding"]) for d in response.json()["data"])
    # Far closer to its plain picture than that picture is to a blank one, whatever the tiny model's resolution.
    assert 1 - float(mode_vector @ plain) < 0.2 * (1 - float(plain @ white)), "embedded as its picture, not blank"


def blank() -> bytes:
    return encoded(Image.new("RGB", (96, 80), (255, 255, 255)), "PNG")


@pytest.mark.parametrize(
    ("picture", "fragment"),
    [
        (Image.fromarray(np.full((20, 20), 300.0, np.float32)), "float image holds values up to 300"),
        (Image.fromarray(np.full((20, 20), -1.0, np.float32)), "negative values"),
        (Image.fromarray(np.full((20, 20), np.nan, np.float32)), "non-finite values"),
        (Image.fromarray(np.full((20, 20), 2**20, np.int32)), "at most 16-bit values"),
    ],
)
def test_samples_with_no_faithful_8_bit_form_are_refused_naming_the_item(service, picture, fragment):
    with pytest.raises(UnreadableImage, match=fragment):
        to_rgb(picture)
    error = assert_error(embed(service, ["a dog", image(encoded(picture, "TIFF"), "image/tiff")]), 400, "invalid_input")
    assert error["param"] == "input[1]" and fragment in error["message"]
