"""Cohere's Embed API (embed-v4.0; the v3 models), from its public documentation.

`POST https://api.cohere.com/v2/embed`, Bearer key (COHERE_API_KEY), `{"model", "input_type": "image",
"embedding_types": ["float"], "images": [data URLs]}` for images and `{"texts": [...], "input_type":
"search_query"}` for the prompts; the answer holds `embeddings.float` in input order and `meta.billed_units`
(`images`, `input_tokens`). embed-v4.0 takes up to 96 inputs a request; the v3 models one image (and 96 texts).
Images are data URLs, JPEG or PNG, at most 5 MB. Billed per image and per text token; the prices are settings
(`--price-per-image`, `--price-per-1k-tokens`), not facts vl2v can check offline.
"""

from __future__ import annotations

from ..pricing import Price
from .adapter import VendorAdapter


class Cohere(VendorAdapter):
    NAME = "cohere"
    DEFAULT_URL = "https://api.cohere.com"
    KEY_ENV = "COHERE_API_KEY"
    HOSTS = frozenset({"api.cohere.com", "api.cohere.ai"})
    DEFAULT_MODEL = "embed-v4.0"
    MAX_INPUTS = 96
    IMAGE_SIZE = 512
    PRICE = Price(per_image=0.0001, per_1k_tokens=0.00012)
    DOCS = "https://docs.cohere.com/reference/embed (v2 embed: images, input_type, embedding_types, billed_units)"

    def request(self, kind: str, inputs: list[str]) -> tuple[str, dict]:
        body = {"model": self.model_id, "embedding_types": ["float"]}
        if kind == "images":
            return "/v2/embed", body | {"input_type": "image", "images": inputs}
        return "/v2/embed", body | {"input_type": "search_query", "texts": inputs}

    def max_inputs(self, kind: str) -> int:
        """The v3 models take one image a request; embed-v4.0 takes 96 of either."""
        return 1 if kind == "images" and "v3" in (self.model_id or "") else self.MAX_INPUTS

    def answer(self, body: dict, count: int) -> tuple[list[list[float]], int | None]:
        return body["embeddings"]["float"], body.get("meta", {}).get("billed_units", {}).get("input_tokens")
