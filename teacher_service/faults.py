"""Injected faults (off by default): errors before any work, added latency, answers cut off after the charge.

A cut-off answer is the nastiest case for a client: the money is taken and the ledger row written, but the
client never sees the embeddings. An idempotent retry must then get them for free.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator

from .errors import ApiError
from .settings import Settings


class InjectedFault(ApiError):
    type = "server_error"
    code = "injected_fault"


class FaultInjector:
    def __init__(self, settings: Settings) -> None:
        self.error_rate = settings.fault_error_rate
        self.latency_s = settings.fault_latency_ms / 1000
        self.drop_rate = settings.fault_drop_rate
        self._rng = random.Random(settings.fault_seed)
        self._lock = threading.Lock()

    def _roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    async def before_work(self) -> None:
        """Maybe delay, maybe fail with 500 or 503 before anything is decoded or charged."""
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self._roll(self.error_rate):
            fault = InjectedFault("injected fault: nothing was charged")
            fault.status = 503 if self._roll(0.5) else 500
            raise fault

    def drop_after_charge(self) -> bool:
        return self._roll(self.drop_rate)


async def cut_off(body: bytes) -> AsyncIterator[bytes]:
    """Send half of `body`, then fail: the server closes the connection mid-answer."""
    yield body[: len(body) // 2]
    raise ConnectionAbortedError("injected fault: connection dropped after the charge")
