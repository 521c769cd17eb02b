"""HTTP client of the teacher vendor (wire protocol v1): retries what is worth retrying, types the rest."""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import requests

from teacher_service.schema import (
    IDEMPOTENCY_HEADER,
    REPLAYED_HEADER,
    REQUEST_ID_HEADER,
    EmbeddingResponse,
    ModelList,
    UsageReport,
    decode_vector,
)

DEFAULT_URL = "http://127.0.0.1:8000"
log = logging.getLogger("vl2v.client")
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
_ITEM = re.compile(r"^input\[(\d+)\]")


class VendorError(Exception):
    """The vendor refused or failed a request; `status` and `code` come from its error envelope."""

    def __init__(
        self, message: str, status: int | None = None, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.param = status, code, param

    @property
    def item(self) -> int | None:
        """The index of the input the vendor blames (`input[7]` -> 7), if it blames one."""
        match = _ITEM.match(self.param or "")
        return int(match[1]) if match else None


class VendorAuthError(VendorError):
    """401: the key is missing, wrong or revoked."""


class QuotaExhausted(VendorError):
    """402: the balance at the vendor does not cover the request."""


class VendorUnreachable(VendorError):
    """Connection failures, timeouts, 429s or 5xx answers outlasted every retry."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    base_s: float = 0.5
    cap_s: float = 30.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Exponential with full jitter in [0.5, 1.5) of the step, capped."""
        return min(self.cap_s, self.base_s * 2**attempt) * rng.uniform(0.5, 1.5)


@dataclass(frozen=True)
class Embedded:
    """One successful answer: vectors in input order, what it cost, and whether it was a free replay."""

    vectors: list[np.ndarray]
    request_id: str
    images: int
    texts: int
    tokens: int
    cost: float
    replayed: bool


class TeacherClient:
    """Thread-safe client (one `requests.Session` per thread) for one vendor URL and key."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: tuple[float, float] = (5.0, 300.0),
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout = timeout
        self._retry = retry
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._local = threading.local()

    def model(self) -> dict:
        """The served model card (`GET /v1/models`, first entry)."""
        return ModelList.model_validate(self._request("GET", "/v1/models").json()).data[0].model_dump()

    def usage(self) -> dict:
        return UsageReport.model_validate(self._request("GET", "/v1/usage").json()).model_dump()

    def embed(self, model: str, inputs: list, idempotency_key: str) -> Embedded:
        """`POST /v1/embeddings` with an idempotency key: a retry after a lost answer is replayed, not billed."""
        response = self._request(
            "POST",
            "/v1/embeddings",
            json={"model": model, "input": inputs, "encoding_format": "base64"},
            headers={IDEMPOTENCY_HEADER: idempotency_key},
        )
        body = EmbeddingResponse.model_validate(response.json())
        replayed = response.headers.get(REPLAYED_HEADER) == "true"
        request_id = response.headers.get("x-original-request-id" if replayed else REQUEST_ID_HEADER, "")
        return Embedded(
            vectors=[decode_vector(d.embedding) for d in sorted(body.data, key=lambda d: d.index)],
            request_id=request_id,
            images=body.usage.images,
            texts=body.usage.texts,
            tokens=body.usage.prompt_tokens,
            cost=body.usage.cost,
            replayed=replayed,
        )

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers.update(self._headers)
        return session

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        last = ""
        for attempt in range(self._retry.attempts):
            try:
                response = self._session().request(method, self.url + path, timeout=self._timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
                last = f"{type(e).__name__}: {e}"
                self._wait_to_retry(path, attempt, last, self._retry.backoff(attempt, self._rng))
                continue
            if response.ok:
                return response
            if response.status_code in _RETRY_STATUS and response.headers.get("x-should-retry") != "false":
                last = f"HTTP {response.status_code}: {_message(response)}"
                self._wait_to_retry(
                    path, attempt, last, _retry_after(response) or self._retry.backoff(attempt, self._rng)
                )
                continue
            raise _typed_error(response)
        raise VendorUnreachable(f"{self.url}{path}: gave up after {self._retry.attempts} attempts ({last})")

    def _wait_to_retry(self, path: str, attempt: int, reason: str, seconds: float) -> None:
        if attempt + 1 < self._retry.attempts:
            log.info(
                "retrying %s in %.2fs (attempt %d of %d): %s", path, seconds, attempt + 2, self._retry.attempts, reason
            )
            self._sleep(seconds)


def _retry_after(response: requests.Response) -> float | None:
    for header, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value:
            try:
                return float(value) / scale
            except ValueError:
                continue
    return None


def _envelope(response: requests.Response) -> dict:
    try:
        error = response.json().get("error")
    except ValueError:
        return {}
    return error if isinstance(error, dict) else {}


def _message(response: requests.Response) -> str:
    return _envelope(response).get("message") or response.text[:200] or response.reason


def _typed_error(response: requests.Response) -> VendorError:
    error = _envelope(response)
    kind = {401: VendorAuthError, 402: QuotaExhausted}.get(response.status_code, VendorError)
    return kind(
        f"HTTP {response.status_code}: {_message(response)}",
        status=response.status_code,
        code=error.get("code"),
        param=error.get("param"),
    )
