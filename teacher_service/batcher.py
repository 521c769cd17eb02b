"""Dynamic batching: concurrent requests' items are coalesced into one model call."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class _Pending:
    item: torch.Tensor
    future: asyncio.Future = field(repr=False)


class DynamicBatcher:
    """Collects items from concurrent callers and runs `encode` on up to `max_batch` at a time.

    A batch is sent as soon as it is full, or `max_wait_s` after its first item arrived. The model runs in
    `executor` (one thread shared by every batcher, so image and text calls never compete for the cores) while
    the event loop keeps accepting, decoding and queueing the next requests.
    """

    def __init__(
        self,
        encode: Callable[[torch.Tensor], np.ndarray],
        executor: Executor,
        *,
        max_batch: int,
        max_wait_s: float,
        on_batch: Callable[[int, float], None] = lambda size, seconds: None,
    ) -> None:
        self._encode = encode
        self._executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def submit(self, items: Sequence[torch.Tensor]) -> list[np.ndarray]:
        """Encode `items` (each one unbatched tensor); one (D,) row per item, in the same order."""
        loop = asyncio.get_running_loop()
        pending = [_Pending(item, loop.create_future()) for item in items]
        for p in pending:
            self._queue.put_nowait(p)
        return list(await asyncio.gather(*(p.future for p in pending)))

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                timeout = deadline - time.monotonic()
                if timeout <= 0 and self._queue.empty():
                    break
                try:
                    batch.append(
                        self._queue.get_nowait()
                        if not self._queue.empty()
                        else await asyncio.wait_for(self._queue.get(), timeout)
                    )
                except asyncio.TimeoutError:  # noqa: UP041 (distinct from TimeoutError before 3.11)
                    break
            batch = [p for p in batch if not p.future.cancelled()]
            if batch:
                await self._dispatch(batch)

    async def _dispatch(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            stacked = torch.stack([p.item for p in batch])
            out = await asyncio.get_running_loop().run_in_executor(self._executor, self._encode, stacked)
        except Exception as e:  # the model failed: every caller in this batch gets the error
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(e)
            return
        self._on_batch(len(batch), time.perf_counter() - started)
        for p, row in zip(batch, out, strict=True):
            if not p.future.done():
                p.future.set_result(row)
