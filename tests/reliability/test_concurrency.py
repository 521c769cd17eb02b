"""Many hands at once: eight clients on eight keys hammering the vendor, two `vl2v query` runs on one cache, and
`distill` reading a cache that `query` is still writing."""

from __future__ import annotations

import json
import random
import threading
from collections import defaultdict
from dataclasses import dataclass, field

import requests

from common.schema import COST_HEADER, IDEMPOTENCY_HEADER, REPLAYED_HEADER
from student.config import DistillConfig, TrainConfig
from student.run import distill
from teacher_service.billing import NANOS

from ..conftest import TINY, run_service, wait_until
from ..query_runs import assert_paid_once, paid_images, read_until, slow_encoder, spawn_query
from ..teacher_service.test_api_contract import image

CLIENTS = 8
REQUESTS_PER_CLIENT = 40
CAROL = "carol:sk-carol:1000"


@dataclass
class Tally:
    """What one client was told: charged answers, replays, refusals."""

    charged_nanos: int = 0
    charged_requests: int = 0
    images: int = 0
    texts: int = 0
    replays: int = 0
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))


def hammer(url: str, secret: str, jpegs: list[bytes], seed: int, tally: Tally) -> None:
    """Mixed requests: 1-4 images and 0-2 texts each; a third carry an idempotency key, half of those reused."""
    rng = random.Random(seed)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {secret}"
    sent: list[tuple[str, dict]] = []
    for i in range(REQUESTS_PER_CLIENT):
        if sent and rng.random() < 0.15:
            key, body = rng.choice(sent)  # a retry of an earlier request: must be free
        else:
            images = [image(rng.choice(jpegs)) for _ in range(rng.randint(1, 4))]
            texts = [f"a photo of a {rng.choice(['dog', 'horse', 'house'])} #{i}" for _ in range(rng.randint(0, 2))]
            key, body = f"{secret[-6:]}-{i}", {"model": TINY, "input": images + texts}
            if rng.random() < 0.33:
                sent.append((key, body))
            else:
                key = None
        headers = {IDEMPOTENCY_HEADER: key} if key else {}
        response = session.post(f"{url}/v1/embeddings", json=body, headers=headers, timeout=60)
        tally.statuses[response.status_code] += 1
        if response.status_code != 200:
            continue
        if response.headers.get(REPLAYED_HEADER) == "true":
            tally.replays += 1
            continue
        tally.charged_nanos += round(float(response.headers[COST_HEADER]) * NANOS)
        tally.charged_requests += 1
        tally.images += sum(1 for item in body["input"] if isinstance(item, dict))
        tally.texts += sum(1 for item in body["input"] if isinstance(item, str))


def test_eight_clients_on_eight_keys_every_balance_and_ledger_adds_up(make_settings, jpeg_bytes):
    # Balances from plenty down to a few requests' worth, so some clients run dry mid-way (402s race the debits).
    balances = [10.0, 10.0, 5.0, 1.0, 0.01, 0.002, 0.001, 0.0005]
    keys = ",".join(f"k{i}:sk-client-{i:06d}:{b}" for i, b in enumerate(balances))
    tallies = [Tally() for _ in range(CLIENTS)]
    settings = make_settings(api_keys=keys, rate_limit_requests=0, rate_limit_images=0, max_batch=16)
    with run_service(settings) as service:
        threads = [
            threading.Thread(target=hammer, args=(service.url, f"sk-client-{i:06d}", jpeg_bytes, i, tallies[i]))
            for i in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        store = service.state.store
        ledger = store.ledger()
        usage = {f"k{i}": store.usage(store.authenticate(f"sk-client-{i:06d}")) for i in range(CLIENTS)}

    assert all(not t.is_alive() for t in threads)
    assert sum(sum(t.statuses.values()) for t in tallies) == CLIENTS * REQUESTS_PER_CLIENT
    assert all(set(t.statuses) <= {200, 402} for t in tallies), [dict(t.statuses) for t in tallies]
    assert any(t.statuses[402] for t in tallies) and any(t.replays for t in tallies), "both races were run"
    for i, (tally, start) in enumerate(zip(tallies, balances, strict=True)):
        name = f"k{i}"
        rows = [r for r in ledger if r["key_name"] == name]
        spent = sum(r["cost"] for r in rows)
        assert usage[name].balance >= 0
        assert usage[name].balance + spent == round(start * NANOS), f"{name}: balance + spent = what it started with"
        assert usage[name].spent == spent == tally.charged_nanos, f"{name}: what the client was charged"
        assert len(rows) == tally.charged_requests == usage[name].requests
        assert sum(r["images"] for r in rows) == tally.images == usage[name].images
        assert sum(r["texts"] for r in rows) == tally.texts == usage[name].texts


def test_a_second_query_is_refused_or_waits_and_nothing_is_paid_twice(make_settings, pacs_mini, tmp_path):
    cache, gate = tmp_path / "c", threading.Event()
    with run_service(make_settings(api_keys=CAROL), slow_encoder(0.0, gate)) as vendor:
        # The first run buys its prompts, then its first image batch is held at the vendor until the gate opens.
        first = spawn_query(vendor.url, pacs_mini, cache, "--batch-size", "4", "--budget", "300")
        try:
            wait_until(lambda: len(vendor.state.store.ledger()) > 0, what="the prompts to be paid", timeout=120)
            refused = spawn_query(vendor.url, pacs_mini, cache, "--budget", "400")
            _, err = refused.communicate(timeout=120)
            assert refused.returncode == 1 and "is being written by pid" in err and "--wait" in err
            waiting = spawn_query(vendor.url, pacs_mini, cache, "--budget", "400", "--wait")
            said = read_until(waiting.stderr, "waiting for pid", timeout=120)
            assert f"waiting for pid {first.pid}" in said and first.poll() is None and waiting.poll() is None
        finally:
            gate.set()
        out_first, err_first = first.communicate(timeout=300)
        out_second, err_second = waiting.communicate(timeout=300)
        ledger = vendor.state.store.ledger()
    assert first.returncode == 0, err_first
    assert waiting.returncode == 0, said + err_second
    first_paid = json.loads(out_first.splitlines()[-1])["paid_images"]
    second_paid = json.loads(out_second.splitlines()[-1])["paid_images"]
    assert (first_paid, second_paid) == (300, 100), "the second run bought only what the first had not"
    assert assert_paid_once(cache, ledger) == 400


def test_distill_trains_on_a_cache_that_query_is_still_writing(make_settings, pacs_mini, tmp_path):
    cache, out = tmp_path / "c", tmp_path / "run"
    with run_service(make_settings(api_keys=CAROL), slow_encoder(0.05)) as vendor:
        query = spawn_query(vendor.url, pacs_mini, cache, "--batch-size", "4", "--concurrency", "2")
        try:
            wait_until(
                lambda: paid_images(vendor.state.store.ledger()) >= 200, what="200 images in the cache", timeout=120
            )
            summary = distill(
                DistillConfig(
                    cache_dir=cache,
                    method="kd",
                    student="test_resnet",
                    pretrained=False,
                    out=out,
                    test_domains=("sketch",),
                    image_size=32,
                    train=TrainConfig(steps=4, eval_every=2, batch_size=8, workers=0),
                )
            )
            assert query.poll() is None, "the query was still writing when distill finished"
        finally:
            _, err = query.communicate(timeout=300)
        ledger = vendor.state.store.ledger()
    assert query.returncode == 0, err
    trained_on = json.loads((out / "config.json").read_text())["cached_images"]
    # The vendor's ledger leads the cache by the answers still on their way: 2 requests of 4 images.
    assert 200 - 2 * 4 <= trained_on < 1120, "distill read a consistent snapshot while the cache grew"
    assert summary is not None and 0 <= summary.mean_ood_acc <= 1
    assert assert_paid_once(cache, ledger) == 1120
