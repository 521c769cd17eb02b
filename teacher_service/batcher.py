"""Dynamic batching: concurrent requests' items are coalesced into one model call."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Ticket:
    """A caller's announcement that it may still submit items; `withdraw` when it will not."""

    batcher: DynamicBatcher
    open: bool = True

    def withdraw(self, *, wake: bool = True) -> None:
        """End the announcement; `wake` a batch that may be waiting for this caller (not needed when items
        submitted right after wake it)."""
        if self.open:
            self.open = False
            self.batcher._announced -= 1
            if wake:
                self.batcher._queue.put_nowait(None)


@dataclass
class _Pending:
    item: torch.Tensor
    future: asyncio.Future = field(repr=False)


class DynamicBatcher:
    """Collects items from concurrent callers and runs `encode` on up to `max_batch` at a time.

    A batch is sent as soon as it is full, or `max_wait_s` after its first item arrived. Callers may announce
    items still being prepared (`admission`): a batch then also waits for those, up to `max_admit_s`, so requests
    that arrived together share one model call instead of trickling into several small ones. The model runs in
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
        max_admit_s: float = 0.0,
        on_batch: Callable[[int, float], None] = lambda size, seconds: None,
    ) -> None:
        self._encode = encode
        self._executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_admit_s = max_admit_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()  # None: an announcement was withdrawn
        self._task: asyncio.Task | None = None
        self._announced = 0  # callers that announced items and have not submitted them yet

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @contextlib.contextmanager
    def admission(self) -> Iterator[Ticket]:
        """Announce that this caller may `submit` items (with the ticket) once they are ready; the announcement
        ends with the submit, `Ticket.withdraw`, or the block (a request that failed or had no items)."""
        ticket = Ticket(self)
        self._announced += 1
        try:
            yield ticket
        finally:
            ticket.withdraw()

    async def submit(self, items: Sequence[torch.Tensor], ticket: Ticket | None = None) -> list[np.ndarray]:
        """Encode `items` (each one unbatched tensor); one (D,) row per item, in the same order."""
        loop = asyncio.get_running_loop()
        if ticket is not None:
            ticket.withdraw(wake=not items)  # the items themselves wake a waiting batch
        pending = [_Pending(item, loop.create_future()) for item in items]
        for p in pending:
            self._queue.put_nowait(p)
        return list(await asyncio.gather(*(p.future for p in pending)))

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                continue
            batch = [first]
            now = time.monotonic()
            deadline, admit_deadline = now + self.max_wait_s, now + self.max_admit_s
            while len(batch) < self.max_batch:
                if self._queue.empty():
                    # Wait for the batch window, or longer for announced items; every withdrawal wakes this up.
                    until = max(deadline, admit_deadline) if self._announced > 0 else deadline
                    timeout = until - time.monotonic()
                    if timeout <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), timeout)
                    except asyncio.TimeoutError:  # noqa: UP041 (distinct from TimeoutError before 3.11)
                        continue  # look again: a request may have announced itself meanwhile
                else:
                    item = self._queue.get_nowait()
                if item is not None:
                    batch.append(item)
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
