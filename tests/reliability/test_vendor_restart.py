"""The vendor dies with `kill -9` while answering and comes back on the same port: the client waits it out, the
run finishes, and balance, vendor ledger and cache ledger agree to the nano-unit."""

from __future__ import annotations

from teacher_service.billing import BILLING_DB
from teacher_service.local import free_port, local_vendor

from ..conftest import wait_until
from ..query_runs import assert_paid_once, paid_images, read_vendor_balances, read_vendor_ledger, spawn_query

KILLS = 3
BUDGET = 400
START_BALANCE_NANOS = 1000 * 10**9


def images_sold(state_dir) -> int:
    return paid_images(read_vendor_ledger(state_dir)) if (state_dir / BILLING_DB).exists() else 0


def test_the_vendor_killed_mid_request_three_times_loses_and_double_bills_nothing(tiny_checkpoint, pacs_mini, tmp_path):
    state, cache, port = tmp_path / "vendor", tmp_path / "cache", free_port()
    serve = {"model": "vl2v-tiny", "pretrained": tiny_checkpoint, "max_batch": 8, "log_level": "warning"}
    serve |= {"api_keys": "carol:sk-carol:1000", "fault_latency_ms": 50}  # each request lingers 50 ms
    query = None
    try:
        for life in range(KILLS + 1):
            with local_vendor(serve, state, port=port) as vendor:
                if query is None:
                    query = spawn_query(vendor.url, pacs_mini, cache, "--batch-size", "4", "--budget", str(BUDGET))
                if life == KILLS:
                    _, err = query.communicate(timeout=300)
                    break
                goal = images_sold(state) + 20
                wait_until(
                    lambda g=goal: images_sold(state) >= g, what="the vendor to sell 20 more images", timeout=120
                )
                vendor.process.kill()
                vendor.process.wait(30)
                assert query.poll() is None, "the client outlives its vendor"
    finally:
        if query is not None and query.poll() is None:
            query.kill()

    assert query.returncode == 0, err
    assert "connection aborted" in err, "a request was in flight when the vendor died"
    assert err.count("retrying /v1/embeddings") >= KILLS
    assert "HTTP 409" not in err, "a restarted vendor frees the claims of the process it replaced at once"
    ledger = read_vendor_ledger(state)
    assert assert_paid_once(cache, ledger) == BUDGET
    balance, spent = read_vendor_balances(state)["carol"]
    assert spent == sum(r["cost"] for r in ledger) and balance + spent == START_BALANCE_NANOS
