"""What every vendor that is not vl2v's own has in common, beneath the one query job.

The job speaks one request form, vl2v's own body (`{"model", "input": [text | {"type": "image", "image": data
URL}]}`), journals it before sending and re-sends it after a crash. An adapter turns that body into its vendor's
requests (its route, shape, inputs per request, authentication), their answers back into unit vectors in input
order, and prices each answer with the vendor's published price model. The HTTP layer (retries, Retry-After, 429
and 5xx, typed errors) is the client's.

What these vendors do not give, the adapter makes up for:
- No idempotency keys: a request re-sent after a crash is bought again. The card says so
  (`idempotency_ttl_s` 0), and the job counts the first send as possibly paid: at most the requests in flight when
  the run died (`--concurrency` x `--batch-size` images) are paid twice, each recorded.
- No weights fingerprint: the teacher is its vendor, its model id and the embeddings of a fixed probe (one image,
  one text), bought at the start of every run that buys; a cache refuses answers once the probe's embeddings move.
- No account endpoint: the account is a hash of the key, the balance unknown (the money cap is the client's).
- Vectors that are not unit-norm: normalised here (distillation reads directions); a zero vector is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from typing import Any, ClassVar
from urllib.parse import urlsplit

import numpy as np
import requests
from PIL import Image

from common.schema import UsageReport, image_data_url

from ..client import Embedded, RetryPolicy, TeacherClient, VendorAnswerInvalid
from ..errors import InvalidOption
from ..pricing import Price, PriceModel, estimated_tokens, image_size

PROBE_TEXT = "a photo of a dog"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def probe_image() -> str:
    """The fixed probe image: a 32 x 32 colour gradient, PNG, as a data URL (the same bytes everywhere)."""
    ramp = np.arange(32, dtype=np.uint8) * 8
    pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 255 - ramp[None, :]), axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), "RGB").save(buffer, "PNG")
    return image_data_url(buffer.getvalue(), "image/png")


class VendorAdapter(TeacherClient):
    """One vendor's request and answer shapes and price model; subclasses fill in the class attributes and the
    two methods `request` and `answer`."""

    NAME: ClassVar[str]
    DEFAULT_URL: ClassVar[str]
    KEY_ENV: ClassVar[str]  # the environment variable holding this vendor's key, sent to no other host
    HOSTS: ClassVar[frozenset[str]] = frozenset()  # where the key may go besides loopback (empty: anywhere)
    DEFAULT_MODEL: ClassVar[str | None] = None
    MAX_INPUTS: ClassVar[int] = 32  # per request
    IMAGE_SIZE: ClassVar[int] = 224  # the side the vendor's model sees; views are rendered at it
    PRICE: ClassVar[PriceModel] = Price()
    DOCS: ClassVar[str] = ""  # the documentation the adapter follows

    def __init__(
        self,
        url: str | None,
        api_key: str | None,
        *,
        model: str | None = None,
        price: PriceModel | None = None,
        retry: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(url or self.DEFAULT_URL, api_key or "", retry=retry or RetryPolicy(), **kwargs)
        host = urlsplit(self.url).hostname or ""
        if self.HOSTS and host not in self.HOSTS | LOOPBACK:
            raise InvalidOption(
                f"{self.KEY_ENV} is only sent to {', '.join(sorted(self.HOSTS))} (or a loopback address); "
                f"{self.url} is another host. Leave --teacher-url unset for {self.NAME}"
            )
        if not api_key:
            self._headers.pop("Authorization", None)  # a self-hosted server without --api-key
        self.model_id = model or self.DEFAULT_MODEL
        self.price = price or self.PRICE
        self.account = f"{self.NAME}:{hashlib.sha256((api_key or '').encode()).hexdigest()[:12]}"
        self.dim: int | None = None

    # -- the two shapes a subclass defines ----------------------------------------------------------------------

    def request(self, kind: str, inputs: list[str]) -> tuple[str, dict]:
        """The path (under the URL) and JSON body of one request for `inputs`, all texts or all image data URLs."""
        raise NotImplementedError

    def answer(self, body: dict, count: int) -> tuple[list[list[float]], int | None]:
        """The embeddings of an answer in input order, and the text tokens it reports (None: it reports none)."""
        raise NotImplementedError

    def max_inputs(self, kind: str) -> int:
        """Inputs per request of `kind` ("texts" or "images")."""
        return self.MAX_INPUTS

    def served_model(self) -> str:
        """The model id requests name; a subclass may ask its vendor (infinity lists what it serves)."""
        if not self.model_id:
            raise InvalidOption(f"{self.NAME} needs --vendor-model (for example {self.DEFAULT_MODEL!r})")
        return self.model_id

    # -- the client's interface, as the query job calls it --------------------------------------------------------

    def model(self) -> dict:
        """The teacher card, without buying anything: what `--dry-run` reads. `probe()` completes it."""
        model = self.served_model()
        identity = hashlib.sha256(f"{self.NAME}:{model}".encode()).hexdigest()
        return {
            "id": model,
            "owned_by": self.NAME,
            "vendor": self.NAME,
            "architecture": model,
            "pretrained": None,
            "fingerprint": f"{self.NAME}:{identity}",
            "embedding_dim": self.dim,
            "image_size": [self.IMAGE_SIZE, self.IMAGE_SIZE],
            "logit_scale": 100.0,  # CLIP's learned scale at its cap; these vendors do not publish theirs
            "preprocess": {"by": self.NAME},
            "precision": "unknown",
            "pricing": self.price.card(),
            "price_model": self.price.describe(),
            "idempotency_ttl_s": 0.0,  # no idempotency keys: a re-sent request is bought again
        }

    def price_of(self, card: dict) -> PriceModel:
        return self.price

    def probe(self) -> tuple[dict, Embedded]:
        """Buy the probe (one image, one text): the teacher's identity where no fingerprint is published, and its
        embedding dimension. Returns the card's `probe` entry and the answers, for the ledger."""
        image = self._embed_inputs("images", [probe_image()], None)
        text = self._embed_inputs("texts", [PROBE_TEXT], None)
        self.dim = int(image.vectors[0].size)
        if text.vectors[0].size != self.dim:
            raise VendorAnswerInvalid(f"{self.NAME}: image and text embeddings differ in size")
        probe = {"image": _rounded(image.vectors[0]), "text": _rounded(text.vectors[0])}
        both = Embedded([], image.request_id, 0, 0, text.tokens, image.cost + text.cost, replayed=False)
        return probe, both

    def usage(self) -> UsageReport:
        """No account endpoint: the account is the key's hash, the balance unknown (infinite to the job)."""
        return UsageReport(
            key=self.account, balance=math.inf, spent=0, images=0, texts=0, tokens=0, requests=0,
            currency=self.price.currency,
        )  # fmt: skip

    def embed(self, body: bytes, idempotency_key: str, *, count: int, dim: int) -> Embedded:
        """The job's request, sent as this vendor's (in as many requests as its limit needs; the idempotency key
        is vl2v's alone: the vendor keeps none)."""
        inputs = json.loads(body)["input"]
        texts = [i for i in inputs if isinstance(i, str)]
        images = [i["image"] for i in inputs if isinstance(i, dict)]
        if texts and images:
            raise InvalidOption("one request holds texts or images, not both")
        answer = self._embed_inputs("texts" if texts else "images", texts or images, dim)
        if len(answer.vectors) != count:
            raise VendorAnswerInvalid(f"{self.NAME} answered {len(answer.vectors)} embeddings for {count} inputs")
        return answer

    # -- sending --------------------------------------------------------------------------------------------------

    def _embed_inputs(self, kind: str, inputs: list[str], dim: int | None) -> Embedded:
        vectors: list[np.ndarray] = []
        tokens, cost, ids, uncertain = 0, 0.0, [], False
        step = self.max_inputs(kind)
        for start in range(0, len(inputs), step):
            chunk = inputs[start : start + step]
            path, payload = self.request(kind, chunk)
            failures: list[str] = []
            response = self._request("POST", path, json=payload, failures=failures, allow_redirects=False)
            uncertain |= any(f != "refused" for f in failures)
            got, reported = self._parse(response, len(chunk), dim)
            vectors += got
            ids.append(response.headers.get("x-request-id") or _json(response).get("id") or "")
            if kind == "texts":
                used = reported if reported is not None else sum(estimated_tokens(t) for t in chunk)
                tokens += used
                cost += self.price.text_cost(used)
            else:
                cost += sum(self.price.image_cost(*image_size(url)) for url in chunk)
        images = len(inputs) if kind == "images" else 0
        return Embedded(
            vectors=vectors, request_id=",".join(filter(None, ids)), images=images, texts=len(inputs) - images,
            tokens=tokens, cost=round(cost, 12), replayed=False, maybe_sent_before=uncertain,
        )  # fmt: skip

    def _parse(self, response: requests.Response, count: int, dim: int | None) -> tuple[list[np.ndarray], int | None]:
        where = f"{self.NAME}'s answer"
        try:
            raw, tokens = self.answer(_json(response, strict=True), count)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise VendorAnswerInvalid(f"{where} is not an embeddings response: {str(e)[:200]}") from None
        if len(raw) != count:
            raise VendorAnswerInvalid(f"{where} holds {len(raw)} embeddings for {count} inputs")
        vectors = []
        for i, values in enumerate(raw):
            vector = np.asarray(values, dtype=np.float32)
            if vector.ndim != 1 or (dim is not None and vector.size != dim):
                raise VendorAnswerInvalid(f"{where}: embedding {i} has {vector.size} values, expected {dim}")
            norm = float(np.linalg.norm(vector))
            if not np.isfinite(vector).all() or norm == 0:
                raise VendorAnswerInvalid(f"{where}: embedding {i} is not finite or is zero")
            vectors.append(vector / norm)
        return vectors, tokens


def _rounded(vector: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in vector]


def _json(response: requests.Response, strict: bool = False) -> dict:
    try:
        body = response.json()
    except ValueError:
        if strict:
            raise
        return {}
    if not isinstance(body, dict):
        if strict:
            raise TypeError("the answer is not a JSON object")
        return {}
    return body
