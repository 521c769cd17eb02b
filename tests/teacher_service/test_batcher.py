"""Dynamic batching: concurrent callers share model calls, each gets its own rows back."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from teacher_service.batcher import DynamicBatcher


def run(coro):
    return asyncio.run(coro)


def test_concurrent_items_coalesce_up_to_max_batch_and_keep_their_order():
    calls: list[int] = []

    def encode(x: torch.Tensor) -> np.ndarray:
        calls.append(len(x))
        return x.numpy() * 2

    async def main():
        batcher = DynamicBatcher(encode, ThreadPoolExecutor(1), max_batch=4, max_wait_s=0.05)
        batcher.start()
        requests = [[torch.tensor([float(10 * r + i)]) for i in range(3)] for r in range(4)]
        results = await asyncio.gather(*(batcher.submit(items) for items in requests))
        await batcher.stop()
        return requests, results

    requests, results = run(main())
    for items, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(np.stack(result)[:, 0], [2 * float(t) for t in items])
    assert sum(calls) == 12 and max(calls) <= 4 and len(calls) == 3


def test_a_lone_item_waits_at_most_max_wait():
    async def main():
        batcher = DynamicBatcher(lambda x: x.numpy(), ThreadPoolExecutor(1), max_batch=64, max_wait_s=0.01)
        batcher.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.submit([torch.zeros(2)])
        elapsed = loop.time() - started
        await batcher.stop()
        return elapsed

    assert run(main()) < 1.0


def test_a_model_error_reaches_every_caller_of_that_batch():
    def broken(x):
        raise RuntimeError("CUDA out of memory")

    async def main():
        batcher = DynamicBatcher(broken, ThreadPoolExecutor(1), max_batch=8, max_wait_s=0.01)
        batcher.start()
        results = await asyncio.gather(
            batcher.submit([torch.zeros(1)]), batcher.submit([torch.zeros(1)]), return_exceptions=True
        )
        await batcher.stop()
        return results

    assert all(isinstance(r, RuntimeError) for r in run(main()))


def test_submit_after_stop_is_not_silently_lost():
    async def main():
        batcher = DynamicBatcher(lambda x: x.numpy(), ThreadPoolExecutor(1), max_batch=8, max_wait_s=0.01)
        batcher.start()
        await batcher.stop()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(batcher.submit([torch.zeros(1)]), 0.2)

    run(main())


def test_announced_items_still_being_prepared_join_the_batch_and_withdrawn_ones_stall_nothing():
    calls: list[int] = []

    def encode(x: torch.Tensor) -> np.ndarray:
        calls.append(len(x))
        return x.numpy()

    async def request(batcher: DynamicBatcher, prepare_s: float, fails: bool = False):
        with batcher.admission() as ticket:
            await asyncio.sleep(prepare_s)  # decoding
            if fails:
                return None  # a bad image: the announcement is withdrawn
            return await batcher.submit([torch.zeros(1)], ticket)

    async def main(admit_s: float):
        calls.clear()
        batcher = DynamicBatcher(encode, ThreadPoolExecutor(1), max_batch=8, max_wait_s=0.001, max_admit_s=admit_s)
        batcher.start()
        # Four requests arrive together; their images are ready 0, 20, 40 and 60 ms later.
        await asyncio.gather(*(request(batcher, 0.02 * i) for i in range(4)))
        one_call = list(calls)
        calls.clear()
        started = asyncio.get_running_loop().time()
        await asyncio.gather(request(batcher, 0.0), request(batcher, 0.05, fails=True))
        elapsed = asyncio.get_running_loop().time() - started
        await batcher.stop()
        return one_call, elapsed

    shared, elapsed = run(main(admit_s=0.5))
    assert shared == [4], "one model call for the four admitted requests"
    assert elapsed < 0.3, "a withdrawn announcement does not hold the batch to max_admit_s"
    trickled, _ = run(main(admit_s=0.0))
    assert len(trickled) > 1, "without admission they trickle into several calls"
