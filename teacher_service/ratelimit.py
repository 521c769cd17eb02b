"""Per-key rate limits on requests and images, as token buckets that refill continuously over a minute."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import InvalidRequest, RateLimited


@dataclass
class _Bucket:
    capacity: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.capacity / 60.0)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` tokens are available (0 if they are now)."""
        return max(0.0, (amount - self.tokens) * 60.0 / self.capacity)


class RateLimiter:
    """`requests_per_min` and `images_per_min` per account; 0 means unlimited.

    `check` either takes one request and `images` images from the account's buckets and returns the
    `x-ratelimit-*` headers, or takes nothing and raises `RateLimited` with the wait.
    """

    def __init__(self, requests_per_min: int, images_per_min: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = {"requests": requests_per_min, "images": images_per_min}
        self._clock = clock
        self._buckets: dict[tuple[int, str], _Bucket] = {}
        self._lock = threading.Lock()

    def check(self, account_id: int, images: int, requests: int = 1) -> dict[str, str]:
        """Take `requests` requests and `images` images from the account's buckets (or raise `RateLimited`)."""
        wanted = {"requests": requests, "images": images}
        for unit, amount in wanted.items():
            limit = self._limits[unit]
            if limit and amount > limit:
                raise InvalidRequest(
                    f"this request has {amount} {unit}, more than the {limit} per minute this key may send; "
                    "split it into smaller requests",
                    param="input",
                )
        with self._lock:
            now = self._clock()
            buckets = {unit: self._bucket(account_id, unit, now) for unit in wanted if self._limits[unit]}
            wait = max((b.wait_for(wanted[u]) for u, b in buckets.items()), default=0.0)
            if wait > 0:
                raise RateLimited(
                    f"rate limit reached for {', '.join(self._describe(u) for u in buckets)}; retry in {wait:.2f}s",
                    retry_after_s=wait,
                    headers=self._headers(buckets),
                )
            for unit, bucket in buckets.items():
                bucket.tokens -= wanted[unit]
            return self._headers(buckets)

    def _bucket(self, account_id: int, unit: str, now: float) -> _Bucket:
        bucket = self._buckets.get((account_id, unit))
        if bucket is None:
            capacity = float(self._limits[unit])
            bucket = self._buckets[(account_id, unit)] = _Bucket(capacity, capacity, now)
        bucket.refill(now)
        return bucket

    def _describe(self, unit: str) -> str:
        return f"{self._limits[unit]} {unit}/min"

    def _headers(self, buckets: dict[str, _Bucket]) -> dict[str, str]:
        headers = {}
        for unit, bucket in buckets.items():
            headers[f"x-ratelimit-limit-{unit}"] = str(self._limits[unit])
            headers[f"x-ratelimit-remaining-{unit}"] = str(max(0, math.floor(bucket.tokens)))
            headers[f"x-ratelimit-reset-{unit}"] = f"{bucket.wait_for(bucket.capacity):.3g}s"
        return headers
