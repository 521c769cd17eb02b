"""Per-key rate limits on requests and images, as token buckets that refill continuously over a minute.

Where the buckets live decides what a limit means: in this process's memory (one replica: the SQLite default), or
in the database the replicas share (`BillingStore.shared_buckets`), where each check reads and writes the key's
rows under a row lock, so a limit holds for the key across every replica together.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from .errors import InvalidRequest, RateLimited


@dataclass
class Bucket:
    """`tokens` of `capacity` at time `updated`; refills `capacity` per minute."""

    capacity: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.capacity / 60.0)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` tokens are available (0 if they are now)."""
        return max(0.0, (amount - self.tokens) * 60.0 / self.capacity)


Held = contextlib.AbstractContextManager[dict[str, Bucket]]


class Buckets(Protocol):
    def hold(self, account_id: int, capacities: dict[str, float]) -> Held:
        """The account's buckets, full when new and refilled to now, for the block; what the block takes from them
        is kept, unless it raises."""
        ...


class MemoryBuckets:
    """Buckets in this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[int, str], Bucket] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, account_id: int, capacities: dict[str, float]) -> Iterator[dict[str, Bucket]]:
        with self._lock:
            now = self._clock()
            held = {}
            for unit, capacity in capacities.items():
                bucket = self._buckets.setdefault((account_id, unit), Bucket(capacity, capacity, now))
                bucket.refill(now)
                held[unit] = bucket
            yield held


class RateLimiter:
    """`requests_per_min` and `images_per_min` per account; 0 means unlimited.

    `check` either takes one request and `images` images from the account's buckets and returns the
    `x-ratelimit-*` headers, or takes nothing and raises `RateLimited` with the wait.
    """

    def __init__(
        self,
        requests_per_min: int,
        images_per_min: int,
        clock: Callable[[], float] = time.monotonic,
        buckets: Buckets | None = None,
    ) -> None:
        self._limits = {"requests": requests_per_min, "images": images_per_min}
        self._buckets = buckets or MemoryBuckets(clock)

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
        capacities = {unit: float(self._limits[unit]) for unit in wanted if self._limits[unit]}
        if not capacities:
            return {}
        with self._buckets.hold(account_id, capacities) as buckets:
            wait = max(bucket.wait_for(wanted[unit]) for unit, bucket in buckets.items())
            if wait > 0:
                raise RateLimited(
                    f"rate limit reached for {', '.join(self._describe(u) for u in buckets)}; retry in {wait:.2f}s",
                    retry_after_s=wait,
                    headers=self._headers(buckets),
                )
            for unit, bucket in buckets.items():
                bucket.tokens -= wanted[unit]
            return self._headers(buckets)

    def _describe(self, unit: str) -> str:
        return f"{self._limits[unit]} {unit}/min"

    def _headers(self, buckets: dict[str, Bucket]) -> dict[str, str]:
        headers = {}
        for unit, bucket in buckets.items():
            headers[f"x-ratelimit-limit-{unit}"] = str(self._limits[unit])
            headers[f"x-ratelimit-remaining-{unit}"] = str(max(0, math.floor(bucket.tokens)))
            headers[f"x-ratelimit-reset-{unit}"] = f"{bucket.wait_for(bucket.capacity):.3g}s"
        return headers
