"""Jina AI's embeddings API with its CLIP models (jina-clip-v2, jina-clip-v1), from its public documentation.

`POST https://api.jina.ai/v1/embeddings`, Bearer key (JINA_API_KEY), `{"model", "input": [{"image": base64} |
{"text": ...}], "normalized": true, "embedding_type": "float"}`; the answer is OpenAI-shaped with `usage.total_tokens`.
Billed in tokens, an image counted as 1,000 tokens per 224 x 224 tile it covers (jina-clip-v1's published rule;
for v2 the tile size was not verified: pass `--price-tile`). The token price is a setting, not a fact vl2v can
check offline: `--price-per-million` (default 0.02 USD, from the docs' excerpts) before you spend real money.
"""

from __future__ import annotations

from ..pricing import TokenTiles
from .adapter import VendorAdapter


class Jina(VendorAdapter):
    NAME = "jina"
    DEFAULT_URL = "https://api.jina.ai/v1"
    KEY_ENV = "JINA_API_KEY"
    HOSTS = frozenset({"api.jina.ai"})
    DEFAULT_MODEL = "jina-clip-v2"
    MAX_INPUTS = 64
    IMAGE_SIZE = 512
    PRICE = TokenTiles(tile=224, tokens_per_tile=1000, per_1m_tokens=0.02)
    DOCS = "https://jina.ai/embeddings/ (API reference: POST /v1/embeddings, jina-clip models, usage and billing)"

    def request(self, kind: str, inputs: list[str]) -> tuple[str, dict]:
        items = (
            [{"image": url.split(",", 1)[1]} for url in inputs] if kind == "images" else [{"text": t} for t in inputs]
        )
        return "/embeddings", {"model": self.model_id, "input": items, "normalized": True, "embedding_type": "float"}

    def answer(self, body: dict, count: int) -> tuple[list[list[float]], int | None]:
        data = sorted(body["data"], key=lambda d: d["index"])
        return [d["embedding"] for d in data], body.get("usage", {}).get("total_tokens")
