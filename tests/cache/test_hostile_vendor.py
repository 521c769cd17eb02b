"""A vendor, or a proxy in front of it, that misbehaves: request ids repeated, omitted or rewritten, answers of the
wrong size or full of NaN, Retry-After headers that make no sense, bodies it finds too large. The client spends no
more than its budget, stores nothing wrong, and finishes paying once."""

from __future__ import annotations

import json
import math

import pytest

from cache.client import RetryPolicy, TeacherClient, VendorAnswerInvalid, _retry_after, request_body
from cache.store import EmbeddingCache

from ..conftest import run_service
from ..query_runs import RewritingProxy, assert_paid_once, pacs_args, paid_images
from .test_client import OK, Scripted
from .test_query import CAROL, cli, query


@pytest.fixture
def vendor(make_settings):
    with run_service(make_settings(api_keys=CAROL)) as service:
        yield service


@pytest.mark.parametrize("how", ["repeated", "omitted", "rewritten"])
def test_request_ids_repeated_omitted_or_rewritten_cannot_push_spending_past_the_budget(
    vendor, pacs_mini, tmp_path, how
):
    counter = iter(range(10**6))

    def rewrite(path, status, headers, body):
        headers = {k: v for k, v in headers.items() if k.lower() not in ("x-request-id", "x-original-request-id")}
        if how == "repeated":
            headers["x-request-id"] = "req_always_the_same"
        elif how == "rewritten":
            headers["x-request-id"] = f"req_proxy_{next(counter)}"
        return status, headers, body

    proxy = RewritingProxy(vendor.url, rewrite)
    try:
        for budget in ("100", "100", "120"):
            code, report = query(proxy, *pacs_args(pacs_mini, tmp_path / "c", "--budget", budget, "--batch-size", "8"))
            assert code == 0, report
    finally:
        proxy.close()
    assert paid_images(vendor.state.store.ledger()) == 120, "the vendor's own books: exactly the budget"
    with EmbeddingCache.open(tmp_path / "c") as cache:
        totals = cache.totals()
    assert (totals.paid_images, totals.requests) == (120, len(vendor.state.store.ledger()))
    assert cli("cache", "verify", str(tmp_path / "c"))[0] == 0


@pytest.mark.parametrize("damage", ["a NaN", "a short vector", "one embedding too few", "not JSON"])
def test_an_invalid_answer_stores_nothing_and_the_next_run_recovers_it_free(vendor, pacs_mini, tmp_path, damage):
    def rewrite(path, status, headers, body):
        if path != "/v1/embeddings" or status != 200 or b'"images":0' in body.replace(b" ", b""):
            return status, headers, body
        answer = json.loads(body)
        if damage == "a NaN":
            answer["data"][0]["embedding"] = [math.nan] * 32
        elif damage == "a short vector":
            answer["data"][0]["embedding"] = [1.0]
        elif damage == "one embedding too few":
            answer["data"] = answer["data"][1:]
        else:
            return status, headers, b"<html>Bad gateway, but 200</html>"
        return status, headers, json.dumps(answer).encode()

    proxy = RewritingProxy(vendor.url, rewrite)
    try:
        code, report = query(proxy, *pacs_args(pacs_mini, tmp_path / "c", "--budget", "16", "--batch-size", "8"))
    finally:
        proxy.close()
    assert code == 1 and "invalid answer" in report["stopped"], report
    with EmbeddingCache.open(tmp_path / "c") as cache:
        assert cache.counts()["image"] == 0, "nothing of an invalid answer is stored"
        assert len(cache.pending()) >= 1, "the paid request stays pending"

    code, report = query(vendor, *pacs_args(pacs_mini, tmp_path / "c", "--budget", "16", "--batch-size", "8"))
    assert code == 0 and report["replayed_requests"] >= 1, report
    assert assert_paid_once(tmp_path / "c", vendor.state.store.ledger()) == 16


def test_a_413_splits_the_batch_instead_of_stopping_the_run(make_settings, pacs_mini, tmp_path):
    with run_service(make_settings(api_keys=CAROL, max_request_bytes=200_000)) as vendor:
        code, report = query(vendor, *pacs_args(pacs_mini, tmp_path / "c", "--budget", "64", "--batch-size", "32"))
        assert code == 0, report
        ledger = vendor.state.store.ledger()
        assert max(r["images"] for r in ledger) < 32, "the vendor never took a whole batch"
        assert assert_paid_once(tmp_path / "c", ledger) == 64


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "999999"}, 30.0),  # bounded by the policy's cap
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after-ms": "1e400"}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # an HTTP date in the past
        ({"retry-after": "Wed, 21 Oct 2099 07:28:00 GMT"}, 30.0),  # far in the future: the cap
    ],
)
def test_retry_after_is_bounded_and_a_malformed_one_falls_back_to_backoff(headers, expected):
    class Response:
        def __init__(self, h):
            self.headers = h

    assert _retry_after(Response(headers), cap_s=30.0) == expected


def test_a_malformed_retry_after_does_not_crash_the_client():
    sleeps: list[float] = []
    vendor = Scripted([(429, {"retry-after": "nan"}, {}), (503, {"retry-after": "inf"}, {})])
    client = TeacherClient(vendor.url, "sk", retry=RetryPolicy(attempts=3, base_s=0.1), sleep=sleeps.append, seed=0)
    assert client.embed(request_body("m", ["a"]), "k", count=1, dim=2).cost == OK["usage"]["cost"]
    assert len(sleeps) == 2 and all(0 < s < 1 for s in sleeps), sleeps


@pytest.mark.parametrize("dim", [1, 3])
def test_an_answer_of_the_wrong_dimension_is_refused(dim):
    vendor = Scripted([])
    client = TeacherClient(vendor.url, "sk", retry=RetryPolicy(attempts=1))
    with pytest.raises(VendorAnswerInvalid, match="expected"):
        client.embed(request_body("m", ["a"]), "k", count=1, dim=dim)


def test_cache_info_sends_the_key_only_to_a_url_the_user_gave(vendor, pacs_mini, tmp_path):
    code, _ = query(vendor, *pacs_args(pacs_mini, tmp_path / "c", "--budget", "4"))
    trap = Scripted([])
    with EmbeddingCache.open(tmp_path / "c", write=True) as cache:  # a cache someone else wrote, or edited
        cache.bind_teacher(cache.teacher | {"url": trap.url})
    code, output = cli("cache", "info", str(tmp_path / "c"), "--json", key="sk-carol")
    assert code == 0 and trap.calls == [] and trap.seen_keys == [], "the key never goes to a URL read from a file"
    assert "pass --teacher-url" in json.loads(output)["vendor"]["error"]
    code, output = cli("cache", "info", str(tmp_path / "c"), "--json", "--teacher-url", vendor.url, key="sk-carol")
    assert json.loads(output)["vendor"]["images"] == 4
