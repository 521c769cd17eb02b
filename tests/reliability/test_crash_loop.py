"""`kill -9` the query client at random moments, round after round, resuming each time: nothing lost, nothing
paid twice. The moments are drawn from a fixed seed, so a failure replays the same way."""

from __future__ import annotations

import random
import time

from cache.store import EmbeddingCache

from ..conftest import run_service, wait_until
from ..query_runs import assert_paid_once, paid_images, slow_encoder, spawn_query

ROUNDS = 24
SEED = 20261123
CAROL = "carol:sk-carol:1000"


def test_24_rounds_of_kill_9_then_a_resume_pays_each_image_exactly_once(make_settings, pacs_mini, tmp_path):
    rng = random.Random(SEED)
    cache = tmp_path / "c"
    # 2 requests of 4 images in flight against 80 ms batches caps the vendor at 100 images/s. With the seeded draws
    # below, even a client that started instantly would buy at most ~680 images before the last round: the loop
    # never runs out of images to be killed over.
    args = ("--batch-size", "4", "--concurrency", "2")
    pending_at_kill = []
    with run_service(make_settings(api_keys=CAROL, max_batch=8), slow_encoder(0.08)) as vendor:
        for round_ in range(ROUNDS):
            rows_before = len(vendor.state.store.ledger())
            process = spawn_query(vendor.url, pacs_mini, cache, *args)
            if round_ % 4 == 3:  # anywhere: start-up (~0.4 s), replaying what the last kill left pending, paying
                time.sleep(rng.uniform(0.0, 1.0))
            else:  # somewhere in the paying phase
                wait_until(
                    lambda p=process, n=rows_before: len(vendor.state.store.ledger()) > n or p.poll() is not None,
                    what="this round to pay for something",
                    timeout=120,
                )
                time.sleep(rng.uniform(0.0, 0.25))
            assert process.poll() is None, f"round {round_} finished before its kill: {process.communicate()[1]}"
            process.kill()
            process.wait(30)
            if (cache / "data.mdb").exists():
                with EmbeddingCache.open(cache) as store:
                    pending_at_kill.append(len(store.pending()))

        paid_by_the_crashed_rounds = paid_images(vendor.state.store.ledger())
        final = spawn_query(vendor.url, pacs_mini, cache, *args)
        _, err = final.communicate(timeout=300)
        assert final.returncode == 0, err
        vendor_ledger = vendor.state.store.ledger()

    assert 0 < paid_by_the_crashed_rounds < 1120, "the crashed rounds bought some images, the last run the rest"
    assert len(pending_at_kill) >= ROUNDS - 1
    assert sum(n > 0 for n in pending_at_kill) >= ROUNDS // 4, "many kills landed with requests in flight"
    assert assert_paid_once(cache, vendor_ledger) == 1120
    with EmbeddingCache.open(cache) as store:
        assert any(row.replayed for row in store.ledger()), "some answers were paid before a kill and replayed free"
