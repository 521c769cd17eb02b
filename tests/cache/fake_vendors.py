"""Local servers that answer as infinity-emb and the hosted embedding APIs document they do (tests only).

Each reproduces its vendor's route, request shape (validated strictly: a request of the wrong shape is a 422, as
the real ones refuse it), authentication, inputs per request, answer shape, usage fields and a 429 with
Retry-After. The embeddings come from a real (tiny) CLIP, scaled off unit norm as some vendors send them. Every
request is recorded, for the tests to read what was sent and to whom.
"""

from __future__ import annotations

import base64
import io
import math
import threading
import uuid
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

SCALE = 2.5  # the fakes answer vectors of this norm; the adapters normalise


@dataclass
class Seen:
    """What one fake was sent: (path, Authorization header, JSON body) per request."""

    requests: list[tuple[str, str | None, dict]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    throttle: int = 0  # answer this many embedding requests 429 first
    images: int = 0  # images embedded and billed (a re-sent request counts again: these vendors keep no keys)

    def record(self, path: str, authorization: str | None, body: dict) -> bool:
        """Record a request; True when it is to be throttled."""
        with self.lock:
            self.requests.append((path, authorization, body))
            if self.throttle > 0:
                self.throttle -= 1
                return True
            return False


class Embedder:
    """A real CLIP (the tests' tiny one) behind the fakes; its weights can be swapped to play a changed model."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder

    def images(self, data: list[bytes]) -> list[list[float]]:
        pixels = torch.stack([self.encoder.preprocess_image(Image.open(io.BytesIO(d))) for d in data])
        return [(SCALE * v).tolist() for v in np.asarray(self.encoder.encode_images(pixels))]

    def texts(self, texts: list[str]) -> list[list[float]]:
        return [(SCALE * v).tolist() for v in np.asarray(self.encoder.encode_texts(self.encoder.tokenize(texts)))]


def _bearer(authorization: str | None, key: str | None) -> None:
    if key is not None and authorization != f"Bearer {key}":
        raise HTTPException(401, "invalid or missing API key")


def _too_many() -> JSONResponse:
    return JSONResponse({"detail": "rate limit exceeded"}, status_code=429, headers={"Retry-After": "0"})


def _data_url_bytes(url: str) -> bytes:
    if not url.startswith("data:image/") or ";base64," not in url:
        raise HTTPException(400, "images must be base64 data URLs")
    return base64.b64decode(url.split(",", 1)[1])


def _tokens(texts: list[str]) -> int:
    return sum(len(t.split()) + 3 for t in texts)  # the vendor's own tokenizer: not vl2v's estimate


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- infinity-emb ------------------------------------------------------------------------------------------------


class InfinityRequest(Strict):
    model: str
    input: list[str] | str = Field(min_length=1)
    modality: Literal["text", "image"] = "text"
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int = 0


def infinity(embedder: Embedder, seen: Seen, *, model: str = "clip", prefix: str = "", key: str | None = None):
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"unix": 0.0}

    @app.get(prefix + "/models")
    def models(authorization: str | None = Header(None)) -> dict:
        _bearer(authorization, key)
        card = {"id": model, "object": "model", "owned_by": "infinity", "created": 0, "backend": "torch",
                "capabilities": ["embed", "image_embed"], "stats": {"batch_size": 32}}  # fmt: skip
        return {"object": "list", "data": [card]}

    @app.post(prefix + "/embeddings")
    def embeddings(body: InfinityRequest, authorization: str | None = Header(None)):
        _bearer(authorization, key)
        if seen.record("/embeddings", authorization, body.model_dump()):
            return _too_many()
        if body.model != model:
            raise HTTPException(400, f"model {body.model} not found")
        inputs = [body.input] if isinstance(body.input, str) else body.input
        if len(inputs) > 32:
            raise HTTPException(422, "at most 32 inputs")
        if body.modality == "image":
            vectors = embedder.images([_data_url_bytes(u) for u in inputs])
            seen.images += len(inputs)
            tokens = 0
        else:
            vectors, tokens = embedder.texts(inputs), _tokens(inputs)
        data = [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return {"object": "list", "data": data, "model": model, "usage": usage, "id": f"infinity-{uuid.uuid4()}"}

    return app


# -- Jina --------------------------------------------------------------------------------------------------------


class JinaImage(Strict):
    image: str


class JinaText(Strict):
    text: str


class JinaRequest(Strict):
    model: str
    input: list[JinaImage | JinaText] = Field(min_length=1)
    normalized: bool = False
    embedding_type: Literal["float", "base64", "binary", "ubinary"] = "float"
    dimensions: int | None = None


def jina(embedder: Embedder, seen: Seen, *, key: str = "jina-key"):
    app = FastAPI()

    @app.get("/")
    def root() -> dict:
        return {}

    @app.post("/v1/embeddings")
    def embeddings(body: JinaRequest, authorization: str | None = Header(None)):
        _bearer(authorization, key)
        if seen.record("/v1/embeddings", authorization, body.model_dump()):
            return _too_many()
        images = [i.image for i in body.input if isinstance(i, JinaImage)]
        texts = [i.text for i in body.input if isinstance(i, JinaText)]
        if images and texts:
            raise HTTPException(400, "this fake embeds one modality per request")
        if images:
            data = [base64.b64decode(b) for b in images]  # bare base64, as the docs show
            sizes = [Image.open(io.BytesIO(d)).size for d in data]
            vectors = embedder.images(data)
            tokens = sum(math.ceil(w / 224) * math.ceil(h / 224) * 1000 for w, h in sizes)
            seen.images += len(images)
        else:
            vectors, tokens = embedder.texts(texts), _tokens(texts)
        data_out = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        usage = {"total_tokens": tokens, "prompt_tokens": tokens}
        return {"model": body.model, "object": "list", "usage": usage, "data": data_out}

    return app


# -- Cohere ------------------------------------------------------------------------------------------------------


class CohereRequest(Strict):
    model: str
    input_type: Literal["search_document", "search_query", "classification", "clustering", "image"]
    embedding_types: list[Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]] = ["float"]
    images: list[str] | None = None
    texts: list[str] | None = None
    truncate: Literal["NONE", "START", "END"] | None = None


def cohere(embedder: Embedder, seen: Seen, *, key: str = "cohere-key"):
    app = FastAPI()

    @app.get("/")
    def root() -> dict:
        return {}

    @app.post("/v2/embed")
    def embed(body: CohereRequest, authorization: str | None = Header(None)):
        _bearer(authorization, key)
        if seen.record("/v2/embed", authorization, body.model_dump()):
            return _too_many()
        if (body.images is None) == (body.texts is None):
            raise HTTPException(400, "give images or texts")
        if body.images is not None:
            if body.input_type != "image" or len(body.images) > (1 if "v3" in body.model else 96):
                raise HTTPException(400, "images need input_type image, one a request for v3, 96 for v4")
            data = [_data_url_bytes(u) for u in body.images]
            vectors = embedder.images(data)
            seen.images += len(data)
            billed = {"images": len(data)}
        else:
            vectors = embedder.texts(body.texts or [])
            billed = {"input_tokens": _tokens(body.texts or [])}
        meta = {"api_version": {"version": "2"}, "billed_units": billed}
        return {"id": str(uuid.uuid4()), "embeddings": {"float": vectors}, "texts": body.texts or [], "meta": meta}

    return app


# -- Voyage ------------------------------------------------------------------------------------------------------


class VoyageImage(Strict):
    type: Literal["image_base64"]
    image_base64: str


class VoyageText(Strict):
    type: Literal["text"]
    text: str


class VoyageInput(Strict):
    content: list[VoyageImage | VoyageText] = Field(min_length=1)


class VoyageRequest(Strict):
    model: str
    inputs: list[VoyageInput] = Field(min_length=1, max_length=1000)
    input_type: Literal["query", "document"] | None = None
    truncation: bool = True
    output_encoding: Literal["base64"] | None = None


def voyage(embedder: Embedder, seen: Seen, *, key: str = "voyage-key"):
    app = FastAPI()

    @app.get("/")
    def root() -> dict:
        return {}

    @app.post("/v1/multimodalembeddings")
    async def embed(request: Request, authorization: str | None = Header(None)):
        _bearer(authorization, key)
        body = VoyageRequest.model_validate(await request.json())
        if seen.record("/v1/multimodalembeddings", authorization, body.model_dump()):
            return _too_many()
        pieces = [i.content[0] for i in body.inputs]
        if all(isinstance(p, VoyageImage) for p in pieces):
            data = [_data_url_bytes(p.image_base64) for p in pieces]  # type: ignore[union-attr]
            pixels = [Image.open(io.BytesIO(d)).size for d in data]
            vectors, tokens = embedder.images(data), 0
            image_pixels = sum(w * h for w, h in pixels)
            seen.images += len(data)
        else:
            texts = [p.text for p in pieces]  # type: ignore[union-attr]
            vectors, tokens, image_pixels = embedder.texts(texts), _tokens(texts), 0
        data_out = [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)]
        usage = {"text_tokens": tokens, "image_pixels": image_pixels, "total_tokens": tokens}
        return {"object": "list", "data": data_out, "model": body.model, "usage": usage}

    return app
