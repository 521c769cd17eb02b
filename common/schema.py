"""Wire schema v1, shared by the service and its clients (shaped like the OpenAI embeddings API)."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

API_PREFIX = "/v1"
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
REQUEST_ID_HEADER = "x-request-id"
COST_HEADER = "x-request-cost"
BALANCE_HEADER = "x-balance-remaining"


class TextInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ImageInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["image"]
    image: str = Field(description="data URL: data:image/jpeg;base64,...")


InputItem = Annotated[
    str | Annotated[TextInput | ImageInput, Field(discriminator="type")],
    Field(union_mode="left_to_right"),
]


class EmbeddingRequest(BaseModel):
    """`POST /v1/embeddings`: a string, or a list of strings, text items and image items."""

    model_config = ConfigDict(extra="forbid")
    model: str
    input: str | list[InputItem] = Field(union_mode="left_to_right")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, description="must equal the model's embedding dim if given")
    user: str | None = None

    def items(self) -> list[str | TextInput | ImageInput]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int = Field(description="text tokens, as OpenAI counts them")
    total_tokens: int
    images: int
    texts: int
    cost: float
    currency: str


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class Pricing(BaseModel):
    per_image: float
    per_1k_tokens: float
    currency: str


class ModelCard(BaseModel):
    """What a client must record to know which teacher produced an embedding."""

    id: str
    object: Literal["model"] = "model"
    owned_by: str = "vl2v"
    architecture: str
    pretrained: str | None
    fingerprint: str = Field(description="sha256 of weights, preprocessing and precision")
    embedding_dim: int
    image_size: list[int]
    context_length: int
    logit_scale: float
    preprocess: dict
    precision: str
    pricing: Pricing
    idempotency_ttl_s: float | None = Field(
        None, description="how long an answer is replayed free under its Idempotency-Key; later, it is charged anew"
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class UsageReport(BaseModel):
    object: Literal["usage"] = "usage"
    key: str
    balance: float
    spent: float
    images: int
    texts: int
    tokens: int
    requests: int
    currency: str


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI `responses` entries documenting that a route may answer these statuses with the error envelope."""
    return {status: {"model": ErrorEnvelope} for status in statuses}


def image_data_url(data: bytes, mime: str = "image/jpeg") -> str:
    """The wire form of an image: a base64 data URL."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    """float: a JSON list; base64: little-endian float32 bytes, as OpenAI sends them."""
    vector = np.asarray(vector, dtype="<f4")
    if encoding_format == "base64":
        return base64.b64encode(vector.tobytes()).decode("ascii")
    return vector.tolist()


def decode_vector(embedding: list[float] | str) -> np.ndarray:
    """Inverse of `encode_vector`, whichever encoding the response used."""
    if isinstance(embedding, str):
        try:
            return np.frombuffer(base64.b64decode(embedding, validate=True), dtype="<f4").astype(np.float32)
        except (binascii.Error, ValueError) as e:
            raise ValueError(f"embedding is not base64 float32: {e}") from None
    return np.asarray(embedding, dtype=np.float32)
