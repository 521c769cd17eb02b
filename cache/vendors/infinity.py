"""infinity-emb, the self-hosted OpenAI-shaped embedding server that serves CLIP (read in its source, 0.0.77).

`POST {prefix}/embeddings` with `{"model", "modality": "image" | "text", "input": [...], "encoding_format"}`, up to
32 inputs; images as data URLs. The prefix is empty unless the server was started with `--url-prefix /v1`: the
adapter finds it (`/models`, then `/v1/models`). `GET {prefix}/models` lists what is served, with no fingerprint
or dimension. A key is checked only when the server was started with `--api-key`. Self-hosted, so free by default;
`--price-per-image` prices the user's own GPU time if they want it in the ledger.
"""

from __future__ import annotations

from ..client import VendorError
from ..errors import InvalidOption
from .adapter import VendorAdapter


class Infinity(VendorAdapter):
    NAME = "infinity"
    DEFAULT_URL = "http://127.0.0.1:7997"
    KEY_ENV = "INFINITY_API_KEY"
    MAX_INPUTS = 32
    DOCS = "https://github.com/michaelfeil/infinity (libs/infinity_emb, 0.0.77: fastapi_schemas, infinity_server.py)"

    def served_model(self) -> str:
        """The served model: `--vendor-model`, checked against `/models`, or the one model that embeds images."""
        models = self._models()
        images = [m["id"] for m in models if "image_embed" in m.get("capabilities", [])]
        if self.model_id:
            if self.model_id not in {m["id"] for m in models}:
                raise InvalidOption(
                    f"infinity at {self.url} does not serve {self.model_id!r}; it serves {[m['id'] for m in models]}"
                )
            return self.model_id
        if len(images) != 1:
            raise InvalidOption(
                f"infinity at {self.url} serves {len(images)} image models {images}; name one with --vendor-model"
            )
        self.model_id = images[0]
        return self.model_id

    def _models(self) -> list[dict]:
        try:
            return self._request("GET", "/models").json()["data"]
        except VendorError as e:
            if e.status != 404 or self.url.endswith("/v1"):
                raise
        self.url += "/v1"  # started with --url-prefix /v1
        return self._request("GET", "/models").json()["data"]

    def request(self, kind: str, inputs: list[str]) -> tuple[str, dict]:
        modality = "image" if kind == "images" else "text"
        return "/embeddings", {
            "model": self.model_id,
            "modality": modality,
            "input": inputs,
            "encoding_format": "float",
        }

    def answer(self, body: dict, count: int) -> tuple[list[list[float]], int | None]:
        data = sorted(body["data"], key=lambda d: d["index"])
        if [d["index"] for d in data] != list(range(count)):
            raise ValueError("indices are not 0..n-1")
        return [d["embedding"] for d in data], body.get("usage", {}).get("prompt_tokens")
