"""Token buckets: a minute's allowance, refilled continuously, per key and per unit."""

from __future__ import annotations

import pytest

from teacher_service.billing import BillingStore
from teacher_service.errors import InvalidRequest, RateLimited
from teacher_service.ledger_db import connect
from teacher_service.ratelimit import RateLimiter
from teacher_service.settings import ApiKey

from ..conftest import Clock


def test_requests_refill_at_the_per_minute_rate():
    clock = Clock(1000.0)
    limiter = RateLimiter(requests_per_min=60, images_per_min=0, clock=clock)
    for _ in range(60):
        limiter.check(1, images=0)
    with pytest.raises(RateLimited) as raised:
        limiter.check(1, images=0)
    assert raised.value.headers["retry-after"] == "1" and raised.value.headers["retry-after-ms"] == "1000"
    clock.now += 1.0  # one second refills one request
    headers = limiter.check(1, images=0)
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-limit-images" not in headers  # unlimited units send no headers


def test_images_are_counted_and_a_refusal_takes_nothing():
    clock = Clock(1000.0)
    limiter = RateLimiter(requests_per_min=0, images_per_min=100, clock=clock)
    limiter.check(1, images=90)
    with pytest.raises(RateLimited) as raised:
        limiter.check(1, images=20)
    assert raised.value.headers["retry-after-ms"] == "6000"  # 10 images at 100/min
    assert limiter.check(1, images=10)["x-ratelimit-remaining-images"] == "0"


def test_keys_have_separate_buckets():
    limiter = RateLimiter(requests_per_min=1, images_per_min=0, clock=Clock(1000.0))
    limiter.check(1, images=0)
    limiter.check(2, images=0)
    with pytest.raises(RateLimited):
        limiter.check(1, images=0)


def test_a_request_larger_than_a_minute_of_allowance_is_a_400():
    with pytest.raises(InvalidRequest, match="more than the 5 per minute"):
        RateLimiter(requests_per_min=0, images_per_min=5, clock=Clock(1000.0)).check(1, images=6)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_buckets_in_the_database_are_shared_and_a_refusal_takes_nothing(tmp_path, database_url):
    """Two replicas' limiters on one database: what one takes, the other sees; both units are read and written."""
    stores = [BillingStore(connect(database_url, tmp_path / "unused", create=True), b"s" * 32) for _ in range(2)]
    try:
        stores[0].sync_keys([ApiKey(name="alice", secret="sk-alice", balance=1.0)])
        account_id = stores[0].authenticate("sk-alice").id
        first, second = (RateLimiter(5, 10, buckets=store.shared_buckets()) for store in stores)
        first.check(account_id, images=4)
        headers = second.check(account_id, images=4)
        assert headers["x-ratelimit-remaining-requests"] == "3"  # refills 5 a minute: not a whole one in a moment
        assert headers["x-ratelimit-remaining-images"] == "2"
        with pytest.raises(RateLimited, match="10 images/min"):
            first.check(account_id, images=4)
        headers = second.check(account_id, images=2)
        assert headers["x-ratelimit-remaining-requests"] == "2"  # the refused request took nothing
        assert headers["x-ratelimit-remaining-images"] == "0"
    finally:
        for store in stores:
            store.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_only_a_transaction_marked_not_durable_skips_the_wait_for_the_disk(tmp_path, database_url):
    """Buckets may lose their last moments in a database crash; a charge may not, nor may what follows a bucket."""
    db = connect(database_url, tmp_path / "unused", create=True)
    try:
        with db.transaction(durable=False) as cursor:
            assert cursor.execute("SHOW synchronous_commit") == [("off",)]
        with db.transaction() as cursor:
            assert cursor.execute("SHOW synchronous_commit") == [("on",)]
        assert db.execute("SHOW synchronous_commit") == [("on",)]
    finally:
        db.close()
