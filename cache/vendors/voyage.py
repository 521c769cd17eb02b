"""Voyage AI's multimodal embeddings (voyage-multimodal-3), from its public documentation.

`POST https://api.voyageai.com/v1/multimodalembeddings`, Bearer key (VOYAGE_API_KEY), `{"model", "inputs":
[{"content": [{"type": "image_base64", "image_base64": data URL} | {"type": "text", "text": ...}]}]}`, up to 1,000
inputs a request, images up to 16 million pixels and 20 MB; the answer is `{"data": [{"embedding", "index"}],
"usage": {"text_tokens", "image_pixels", "total_tokens"}}`. Billed per pixel: 0.60 USD per billion, each image
counted between 50,000 and 2,000,000 pixels (so 0.00003 to 0.0012 USD an image), texts per token.
"""

from __future__ import annotations

from ..pricing import Pixels
from .adapter import VendorAdapter


class Voyage(VendorAdapter):
    NAME = "voyage"
    DEFAULT_URL = "https://api.voyageai.com/v1"
    KEY_ENV = "VOYAGE_API_KEY"
    HOSTS = frozenset({"api.voyageai.com"})
    DEFAULT_MODEL = "voyage-multimodal-3"
    MAX_INPUTS = 1000
    IMAGE_SIZE = 512
    PRICE = Pixels(per_billion_pixels=0.60, min_pixels=50_000, max_pixels=2_000_000, per_1m_tokens=0.12)
    DOCS = "https://docs.voyageai.com/docs/multimodal-embeddings and https://docs.voyageai.com/docs/pricing"

    def request(self, kind: str, inputs: list[str]) -> tuple[str, dict]:
        if kind == "images":
            items = [{"content": [{"type": "image_base64", "image_base64": url}]} for url in inputs]
        else:
            items = [{"content": [{"type": "text", "text": t}]} for t in inputs]
        return "/multimodalembeddings", {"model": self.model_id, "inputs": items}

    def answer(self, body: dict, count: int) -> tuple[list[list[float]], int | None]:
        data = sorted(body["data"], key=lambda d: d["index"])
        return [d["embedding"] for d in data], body.get("usage", {}).get("text_tokens")
