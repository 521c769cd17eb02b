"""Money a crashed run left in flight: recovered byte for byte whatever happened to the files, or, when it cannot
be, counted as paid in numbers; never lost silently."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time

from cache.client import request_body
from cache.store import EmbeddingCache

from ..conftest import run_service, wait_until
from ..query_runs import assert_paid_once, paid_images, slow_encoder, spawn_query
from .test_query import cli, query

KEYS = "carol:sk-carol:1000,dana:sk-dana:1000"


def pending_of(cache_dir) -> dict:
    if not (cache_dir / "data.mdb").exists():
        return {}
    with EmbeddingCache.open(cache_dir) as cache:
        return cache.pending()


def settled(vendor, quiet_s: float = 1.0) -> bool:
    """No new ledger row for `quiet_s` seconds."""
    before = len(vendor.state.store.ledger())
    time.sleep(quiet_s)
    return len(vendor.state.store.ledger()) == before


def test_a_crashed_runs_paid_requests_are_recovered_free_although_their_files_changed_or_vanished(
    make_settings, pacs_mini, tmp_path
):
    data = tmp_path / "data"
    shutil.copytree(pacs_mini, data)
    cache = tmp_path / "c"
    gate = threading.Event()  # the vendor holds every image batch until the client is dead
    with run_service(make_settings(api_keys=KEYS), slow_encoder(0.0, gate)) as vendor:
        process = spawn_query(vendor.url, data, cache, "--budget", "40", "--batch-size", "4")
        wait_until(lambda: len(pending_of(cache)) >= 3, what="image requests in flight", timeout=120)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        in_flight = pending_of(cache)
        gate.set()  # the vendor finishes and charges the requests whose client is gone
        wait_until(lambda: settled(vendor), what="the vendor to finish the orphaned requests")
        charged = {r["idempotency_key"] for r in vendor.state.store.ledger()}
        orphans = [key for key in in_flight if key in charged]  # charged, their answers never stored
        assert orphans, "some requests were charged after their client died"

        touched = [item["path"] for request in in_flight.values() for item in request["items"]]
        for i, path in enumerate(touched):
            if i % 2:
                (data / path).unlink()  # moved away or deleted
            else:
                (data / path).write_bytes(b"overwritten since it was sent")

        process = spawn_query(vendor.url, data, cache, "--budget", "40", "--batch-size", "4")
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        report = json.loads(out.splitlines()[-1])
        ledger = vendor.state.store.ledger()
    assert report["replayed_requests"] >= len(orphans) and report["unrecovered_images"] == 0
    assert assert_paid_once(cache, ledger) == 40, "every charged image is in the cache, paid once"
    with EmbeddingCache.open(cache) as store:
        held = {p for _, paths in store.items() for p in paths}
        assert set(touched) <= held, "the recovered embeddings keep the paths they were bought under"


def test_images_recovered_from_a_crashed_run_count_as_paid_by_the_resume_not_also_as_already_cached(
    make_settings, pacs_mini, tmp_path
):
    cache = tmp_path / "c"
    gate = threading.Event()
    with run_service(make_settings(api_keys=KEYS), slow_encoder(0.0, gate)) as vendor:
        process = spawn_query(vendor.url, pacs_mini, cache, "--budget", "40", "--batch-size", "4")
        wait_until(lambda: len(pending_of(cache)) >= 3, what="image requests in flight", timeout=120)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        gate.set()
        wait_until(lambda: settled(vendor), what="the vendor to finish the orphaned requests")
        with EmbeddingCache.open(cache) as store:
            before = len(list(store.items()))  # committed by the crashed run
        process = spawn_query(vendor.url, pacs_mini, cache, "--budget", "40", "--batch-size", "4")
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        report = json.loads(out.splitlines()[-1])
        ledger = vendor.state.store.ledger()
    assert report["replayed_requests"] >= 1, "the crashed run's requests were answered again, free"
    assert (report["already_cached"], report["paid_images"]) == (before, 40 - before)
    assert assert_paid_once(cache, ledger) == 40


def test_pending_requests_of_another_account_are_refused_then_given_up_and_counted(make_settings, pacs_mini, tmp_path):
    cache = tmp_path / "c"
    with run_service(make_settings(api_keys=KEYS)) as vendor:
        code, _ = query(
            vendor, "--dataset", "pacs", "--data-dir", str(pacs_mini), "--cache", str(cache), "--budget", "8"
        )
        assert code == 0
        with EmbeddingCache.open(cache, write=True) as store:  # what a crash under carol's key leaves behind
            items = [{"key": f"{i:064x}", "path": f"photo/dog/x{i}.jpg", "domain": "photo"} for i in range(4)]
            record = {"kind": "images", "account": "carol", "sent_at": 0.0, "items": items}
            store.add_pending("vl2v-images-lost", record, request_body("vl2v-tiny", []))

        args = ("--dataset", "pacs", "--data-dir", str(pacs_mini), "--cache", str(cache), "--budget", "20")
        code, output = cli("query", "--teacher-url", vendor.url, *args, key="sk-dana")
        assert code == 1 and "vendor account 'carol', not 'dana'" in output and "--abandon-pending" in output
        assert paid_images(vendor.state.store.ledger(), "dana") == 0, "nothing bought before that is settled"

        code, report = query(vendor, *args, "--abandon-pending", key="sk-dana")
        assert code == 0, report
        assert report["unrecovered_images"] == 4
        assert paid_images(vendor.state.store.ledger(), "dana") == 20 - 8 - 4, "given-up images count in the budget"
    code, output = cli("cache", "info", str(cache), "--json")
    info = json.loads(output)
    assert (info["unrecovered_images"], info["paid_images"], info["images"]) == (4, 20, 16)
    assert info["unrecovered_cost"] == 4 * 0.0001 and info["pending_requests"] == 0
    assert cli("cache", "verify", str(cache))[0] == 0
