"""HTTP client of the teacher vendor (wire protocol v1): retries what is worth retrying, types the rest."""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

import numpy as np
import requests
import urllib3

from common.schema import (
    API_PREFIX,
    IDEMPOTENCY_HEADER,
    REPLAYED_HEADER,
    REQUEST_ID_HEADER,
    EmbeddingResponse,
    ModelList,
    Usage,
    UsageReport,
    decode_vector,
)

from .errors import InvalidOption
from .pricing import Price, PriceModel
from .store import NORM_TOLERANCE

DEFAULT_URL = "http://127.0.0.1:8000"
FIRST_CONTACT_ATTEMPTS = 3  # quick tries before a vendor that never answered is called unreachable
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


class VendorAnswerInvalid(VendorError):
    """A 200 answer that cannot be right: not the wire schema, the wrong count or dimension, non-finite or
    non-unit vectors. Nothing of it may be stored."""


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
    maybe_sent_before: bool = False  # an earlier attempt failed after it may have reached the vendor


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
        self.url = _checked_url(url)
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout = timeout
        self._retry = retry
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._local = threading.local()
        self._answered = False  # has the vendor answered once? Until it has, a refused connection fails fast.

    def model(self) -> dict:
        """The served model card (`GET /v1/models`, first entry)."""
        return ModelList.model_validate(self._request("GET", f"{API_PREFIX}/models").json()).data[0].model_dump()

    def price_of(self, card: dict) -> PriceModel:
        """The vendor's price model, as its card publishes it."""
        return Price.of(card["pricing"])

    def probe(self) -> tuple[dict, Embedded] | None:
        """vl2v's vendor publishes a weights fingerprint: no probe to buy."""
        return None

    def usage(self) -> UsageReport:
        """This key's account at the vendor: balance, spend and counts (`GET /v1/usage`)."""
        return UsageReport.model_validate(self._request("GET", f"{API_PREFIX}/usage").json())

    def embed(self, body: bytes, idempotency_key: str, *, count: int, dim: int) -> Embedded:
        """`POST /v1/embeddings` of a body made by `request_body`, sent as these exact bytes under an idempotency
        key: a retry after a lost answer is replayed, not billed.

        Args:
            count: how many inputs the body holds; dim: the teacher's embedding dimension. An answer that does not
                match them is refused (`VendorAnswerInvalid`) and nothing of it is returned.
        """
        attempts: list[str] = []
        response = self._request(
            "POST",
            f"{API_PREFIX}/embeddings",
            data=body,
            headers={IDEMPOTENCY_HEADER: idempotency_key, "Content-Type": "application/json"},
            failures=attempts,
        )
        answer = _valid_answer(response, count, dim)
        replayed = response.headers.get(REPLAYED_HEADER) == "true"
        request_id = response.headers.get("x-original-request-id" if replayed else REQUEST_ID_HEADER, "")
        return Embedded(
            vectors=answer.vectors,
            request_id=request_id,
            images=answer.usage.images,
            texts=answer.usage.texts,
            tokens=answer.usage.prompt_tokens,
            cost=answer.usage.cost,
            replayed=replayed,
            maybe_sent_before=any(f != "refused" for f in attempts),
        )

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers.update(self._headers)
        return session

    def _request(self, method: str, path: str, failures: list[str] | None = None, **kwargs) -> requests.Response:
        """The response, after retrying what is worth retrying. `failures` collects, per failed attempt, "refused"
        (the vendor certainly did no work: 408, 409, 429) or "uncertain" (it may have: a lost connection, 5xx)."""
        failures = [] if failures is None else failures
        last, attempt = "", 0
        while attempt < self._retry.attempts:
            try:
                response = self._session().request(method, self.url + path, timeout=self._timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
                last = _short(e)
                failures.append("refused" if _never_connected(e) else "uncertain")
                if not self._answered and _never_connected(e):
                    self._first_contact_failed(attempt, last)
                else:
                    self._wait_to_retry(path, attempt, last, self._retry.backoff(attempt, self._rng))
                attempt += 1
                continue
            self._answered = True
            attempt += 1
            if response.ok:
                return response
            if response.status_code in _RETRY_STATUS and response.headers.get("x-should-retry") != "false":
                failures.append("refused" if response.status_code in (408, 409, 429) else "uncertain")
                last = f"HTTP {response.status_code}: {_message(response)}"
                wait = _retry_after(response, self._retry.cap_s)
                backoff = wait if wait is not None else self._retry.backoff(attempt - 1, self._rng)
                self._wait_to_retry(path, attempt - 1, last, backoff)
                continue
            raise _typed_error(response)
        raise VendorUnreachable(f"{self.url}{path}: gave up after {self._retry.attempts} attempts ({last})")

    def _wait_to_retry(self, path: str, attempt: int, reason: str, seconds: float) -> None:
        if attempt + 1 < self._retry.attempts:
            log.info(
                "retrying %s in %.2fs (attempt %d of %d): %s", path, seconds, attempt + 2, self._retry.attempts, reason
            )
            self._sleep(seconds)

    def _first_contact_failed(self, attempt: int, reason: str) -> None:
        """A vendor that never answered is most likely not running: a few quick tries, then a clear error. (One
        that has answered gets the patient retries: it is restarting, or its network is hiccuping.)"""
        if attempt + 1 >= FIRST_CONTACT_ATTEMPTS:
            raise VendorUnreachable(
                f"cannot connect to {self.url} ({reason}); is the vendor running? Start one with `vl2v serve` or "
                "`docker compose up teacher`, or point --teacher-url (VL2V_TEACHER_URL) at yours"
            )
        log.info("cannot connect to %s (%s); trying again in 0.5s", self.url, reason)
        self._sleep(0.5)


def _checked_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        example = url.strip().split("://")[-1] or "127.0.0.1:8000"
        raise InvalidOption(f"vendor URL {url!r} needs a scheme and a host, e.g. http://{example}")
    return url.strip().rstrip("/")


def _short(error: requests.RequestException) -> str:
    """A transport error in a few words ("connection refused", "timed out"), not urllib3's nested repr."""
    if isinstance(error, requests.Timeout):
        return "timed out"
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return "the answer was cut off"
    text = str(error)
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if match:
        return match[1].strip().lower()
    return "connection aborted" if "aborted" in text.lower() else text[:80]


def _never_connected(error: requests.RequestException) -> bool:
    """The request never reached the vendor: the connection was refused or could not be opened in time."""
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def request_body(model: str, inputs: list) -> bytes:
    """The bytes of a `POST /v1/embeddings` body: kept with a pending request, so a retry is these bytes again."""
    return json.dumps({"model": model, "input": inputs, "encoding_format": "base64"}, separators=(",", ":")).encode()


@dataclass(frozen=True)
class _Answer:
    vectors: list[np.ndarray]
    usage: Usage


def _valid_answer(response: requests.Response, count: int, dim: int) -> _Answer:
    """The vectors of a 200 answer, in input order, after checking everything a wrong answer could get wrong."""
    where = f"the vendor's answer ({response.headers.get(REQUEST_ID_HEADER, 'no request id')})"
    try:
        body = EmbeddingResponse.model_validate_json(response.content)
    except ValueError as e:  # not JSON, or not the wire schema (pydantic's ValidationError is a ValueError)
        raise VendorAnswerInvalid(f"{where} is not an embeddings response: {str(e)[:200]}") from None
    indices = sorted(d.index for d in body.data)
    if indices != list(range(count)):
        raise VendorAnswerInvalid(f"{where} holds {len(body.data)} embeddings for {count} inputs (or bad indices)")
    vectors = []
    for item in sorted(body.data, key=lambda d: d.index):
        try:
            vector = decode_vector(item.embedding)
        except ValueError as e:
            raise VendorAnswerInvalid(f"{where}: embedding {item.index}: {e}") from None
        if vector.shape != (dim,):
            raise VendorAnswerInvalid(f"{where}: embedding {item.index} has {vector.size} values, expected {dim}")
        if not np.isfinite(vector).all():
            raise VendorAnswerInvalid(f"{where}: embedding {item.index} is not finite")
        if abs(float(np.linalg.norm(vector)) - 1) > NORM_TOLERANCE:
            raise VendorAnswerInvalid(f"{where}: embedding {item.index} is not unit-norm")
        vectors.append(vector)
    usage = body.usage
    if min(usage.images, usage.texts, usage.prompt_tokens) < 0 or not 0 <= usage.cost < float("inf"):
        raise VendorAnswerInvalid(f"{where} reports an impossible usage {usage.model_dump()}")
    return _Answer(vectors, usage)


def _retry_after(response: requests.Response, cap_s: float) -> float | None:
    """The wait the vendor asks for (`retry-after-ms`, then `Retry-After` in seconds or as an HTTP date), at most
    `cap_s`; None when it asks for nothing readable (the caller backs off on its own)."""
    for header in ("retry-after-ms", "retry-after"):
        value = (response.headers.get(header) or "").strip()
        if not value:
            continue
        seconds: float | None
        try:
            seconds = float(value) / (1000.0 if header == "retry-after-ms" else 1.0)
        except ValueError:
            seconds = _seconds_until(value) if header == "retry-after" else None
        if seconds is not None and math.isfinite(seconds) and seconds >= 0:
            return min(seconds, cap_s)
    return None


def _seconds_until(http_date: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


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
