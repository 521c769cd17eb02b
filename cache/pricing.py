"""Price models as vendors publish them: per image, per token with images counted in tiles, per pixel.

A model prices one input from what the client knows before sending it (an image's width and height, a text), so
`--dry-run`, the money cap and the adapter's charge are the same function of the same inputs. Texts are priced on
the vendor's own token count when its answer reports one, else on an estimate (words plus two).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from dataclasses import dataclass
from typing import ClassVar

from PIL import Image

from .errors import InvalidOption


def estimated_tokens(text: str) -> int:
    """A prompt's tokens, estimated as its words and two special tokens: the vendor's own count wins."""
    return len(text.split()) + 2


def image_size(data_url: str) -> tuple[int, int]:
    """Width and height of a base64 data URL's image, from its header alone."""
    try:
        data = base64.b64decode(data_url.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (IndexError, binascii.Error, OSError) as e:
        raise InvalidOption(f"not a base64 image data URL: {e}") from None


@dataclass(frozen=True)
class PriceModel:
    """How a vendor prices one input; `card()` and `describe()` say it in the ledger's and the report's terms."""

    currency: str = "USD"
    unit: ClassVar[str] = "image"

    def image_units(self, width: int, height: int) -> int:
        """What one image counts as in the vendor's billing unit (images, tokens, pixels)."""
        return 1

    def image_cost(self, width: int, height: int) -> float:
        raise NotImplementedError

    def text_cost(self, tokens: int) -> float:
        raise NotImplementedError

    def max_image_cost(self) -> float:
        """The most one image can cost: what an image whose answer was lost counts as, possibly paid."""
        raise NotImplementedError

    def card(self) -> dict:
        """The `pricing` entry of a teacher card: per image as a list price (the dearest image, for bounds)."""
        return {"per_image": self.max_image_cost(), "per_1k_tokens": self.text_cost(1000), "currency": self.currency}

    def describe(self) -> dict:
        return {"model": type(self).__name__, "unit": self.unit} | {
            name: getattr(self, name) for name in self.__dataclass_fields__
        }


@dataclass(frozen=True)
class Price(PriceModel):
    """Per image and per 1k text tokens: vl2v's own vendor, Cohere, a self-hosted server (0)."""

    per_image: float = 0.0
    per_1k_tokens: float = 0.0

    @classmethod
    def of(cls, pricing: dict) -> Price:
        """vl2v's own vendor's card `pricing` as a price model."""
        return Price(
            per_image=float(pricing["per_image"]), per_1k_tokens=float(pricing["per_1k_tokens"]),
            currency=str(pricing["currency"]),
        )  # fmt: skip

    def image_cost(self, width: int, height: int) -> float:
        return self.per_image

    def text_cost(self, tokens: int) -> float:
        return tokens * self.per_1k_tokens / 1000

    def max_image_cost(self) -> float:
        return self.per_image


@dataclass(frozen=True)
class TokensPerMillion(PriceModel):
    """Texts at a price per million tokens, the way the token-billed vendors publish it."""

    per_1m_tokens: float = 0.0

    def text_cost(self, tokens: int) -> float:
        return tokens * self.per_1m_tokens / 1e6


@dataclass(frozen=True)
class TokenTiles(TokensPerMillion):
    """Tokens, with an image counted as `tokens_per_tile` for each `tile` x `tile` square it covers (Jina)."""

    tile: int = 224
    tokens_per_tile: int = 1000
    max_tiles: int = 64
    unit: ClassVar[str] = "token"

    def image_units(self, width: int, height: int) -> int:
        tiles = math.ceil(width / self.tile) * math.ceil(height / self.tile)
        return min(tiles, self.max_tiles) * self.tokens_per_tile

    def image_cost(self, width: int, height: int) -> float:
        return self.text_cost(self.image_units(width, height))

    def max_image_cost(self) -> float:
        return self.text_cost(self.max_tiles * self.tokens_per_tile)


@dataclass(frozen=True)
class Pixels(TokensPerMillion):
    """Pixels, each image billed between `min_pixels` and `max_pixels` (Voyage's multimodal models)."""

    per_billion_pixels: float = 0.0
    min_pixels: int = 0
    max_pixels: int = 2**62
    unit: ClassVar[str] = "pixel"

    def image_units(self, width: int, height: int) -> int:
        return min(max(width * height, self.min_pixels), self.max_pixels)

    def image_cost(self, width: int, height: int) -> float:
        return self.image_units(width, height) * self.per_billion_pixels / 1e9

    def max_image_cost(self) -> float:
        return self.max_pixels * self.per_billion_pixels / 1e9
