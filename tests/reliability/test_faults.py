"""A query under injected faults ends exactly as a fault-free one: same cache, same total charge."""

from __future__ import annotations

import numpy as np

from cache.client import RetryPolicy, TeacherClient
from cache.inspect import verify_cache
from cache.query import QueryConfig, run_query
from cache.store import EmbeddingCache

from ..conftest import run_service


def query_through(settings, pacs_mini, cache_dir) -> tuple[dict, list[dict], str]:
    with run_service(settings) as vendor:
        client = TeacherClient(vendor.url, "sk-carol", retry=RetryPolicy(attempts=12, base_s=0.02, cap_s=0.2))
        report = run_query(
            QueryConfig(dataset="pacs", data_dir=pacs_mini, cache_dir=cache_dir, budget=120, batch_size=16), client
        )
        ledger = vendor.state.store.ledger()
        metrics = vendor.state.metrics.render()
    return report.as_dict(), ledger, metrics


def contents(cache_dir) -> tuple[dict, dict]:
    with EmbeddingCache.open(cache_dir) as cache:
        assert verify_cache(cache) == []
        return dict(cache.images()), cache.texts()


def test_errors_latency_and_dropped_answers_change_nothing_but_the_time(make_settings, pacs_mini, tmp_path):
    calm, calm_ledger, _ = query_through(
        make_settings(api_keys="carol:sk-carol:100", state_dir=tmp_path / "s1"), pacs_mini, tmp_path / "calm"
    )
    faulty = make_settings(
        api_keys="carol:sk-carol:100",
        state_dir=tmp_path / "s2",
        fault_error_rate=0.3,
        fault_drop_rate=0.3,
        fault_latency_ms=5,
        fault_seed=7,
    )
    stormy, stormy_ledger, metrics = query_through(faulty, pacs_mini, tmp_path / "stormy")
    assert 'code="injected_fault"' in metrics, "the vendor answered some requests with injected 500/503s"

    calm_images, calm_texts = contents(tmp_path / "calm")
    stormy_images, stormy_texts = contents(tmp_path / "stormy")
    assert set(stormy_images) == set(calm_images) and len(calm_images) == 120
    assert set(stormy_texts) == set(calm_texts)
    for key, vector in calm_images.items():
        np.testing.assert_allclose(stormy_images[key], vector, atol=1e-5)
    total = [
        (sum(r["images"] for r in ledger), sum(r["texts"] for r in ledger), sum(r["cost"] for r in ledger))
        for ledger in (calm_ledger, stormy_ledger)
    ]
    assert total[0] == total[1], "every image and prompt is charged exactly once, faults or not"
    assert stormy["replayed_requests"] > 0, "some answers were cut off after the charge and replayed for free"
    with EmbeddingCache.open(tmp_path / "stormy") as cache:
        assert {r.request_id for r in cache.ledger()} == {r["request_id"] for r in stormy_ledger}
