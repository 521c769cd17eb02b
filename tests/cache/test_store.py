"""The LMDB cache: one writer, readers that never block, a map that grows, and no mixing of teachers."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import cache.store
from cache.store import (
    SCHEMA_VERSION,
    CacheBusy,
    CacheError,
    CacheMismatch,
    CacheMissing,
    EmbeddingCache,
    LedgerRow,
)
from cli.app import app

TEACHER = {
    "id": "vl2v-tiny",
    "fingerprint": "f" * 64,
    "embedding_dim": 4,
    "preprocess": {"size": [32, 32]},
    "precision": "fp32",
    "url": "http://127.0.0.1:1",
}


def unit(seed: int, dim: int = 4) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def row(request_id: str, images: int = 0, texts: int = 0) -> LedgerRow:
    return LedgerRow(request_id, f"idem-{request_id}", images, texts, 0, 0.01 * images, time.time())


def test_embeddings_items_and_ledger_commit_together_and_read_back(tmp_path):
    with EmbeddingCache.open(tmp_path, write=True) as cache:
        cache.bind_teacher(TEACHER)
        cache.add_pending("idem-r1", {"kind": "images"}, b'{"model": "m"}')
        assert cache.pending_body("idem-r1") == b'{"model": "m"}'
        cache.commit_images(
            {"a" * 64: (unit(0), ["photo/dog/1.jpg"]), "b" * 64: (unit(1), ["photo/cat/2.jpg"])}, row("r1", images=2)
        )
        cache.commit_texts({"a photo of a dog": unit(2)}, row("r2", texts=1))
        cache.add_paths({"a" * 64: ["sketch/dog/1.png"]})
    with EmbeddingCache.open(tmp_path) as cache:
        np.testing.assert_array_equal(cache.image("a" * 64), unit(0))
        assert dict(cache.items())["a" * 64] == ["photo/dog/1.jpg", "sketch/dog/1.png"]
        assert [r.request_id for r in cache.ledger()] == ["r1", "r2"]
        assert cache.pending() == {}, "committing a request clears its pending record"
        assert cache.pending_body("idem-r1") is None, "and the body kept for its replay"
        keys, matrix = cache.image_matrix()
        assert matrix.shape == (2, 4) and keys == ["a" * 64, "b" * 64]


def test_a_missing_cache_says_how_to_make_one(tmp_path):
    with pytest.raises(CacheMissing, match="vl2v query"):
        EmbeddingCache.open(tmp_path / "none")


def test_a_cache_is_created_only_in_a_new_or_empty_folder_never_in_the_source_package(tmp_path):
    package = Path(cache.store.__file__).parent  # what `vl2v query` from the repo root would open as ./cache
    before = sorted(p.name for p in package.iterdir())
    with pytest.raises(CacheError, match="vl2v's own source package: run from another folder"):
        EmbeddingCache.open(package, write=True)
    assert sorted(p.name for p in package.iterdir()) == before
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"not mine to fill")
    with pytest.raises(CacheError, match=r"holds other files \(holiday.jpg\) and no cache; pass --cache a new"):
        EmbeddingCache.open(photos, write=True)
    assert [p.name for p in photos.iterdir()] == ["holiday.jpg"]
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "new"):
        EmbeddingCache.open(folder, write=True).close()
        EmbeddingCache.open(folder, write=True).close()  # and its own files never count as others


def _hold_writer(path, ready, release) -> None:
    with EmbeddingCache.open(path, write=True):
        ready.set()
        release.wait(30)


def test_a_second_writer_is_refused_or_waits_and_readers_never_block(tmp_path):
    with EmbeddingCache.open(tmp_path, write=True) as cache:
        cache.bind_teacher(TEACHER)
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_writer, args=(tmp_path, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(CacheBusy, match=r"being written by pid \d+.*--wait"):
            EmbeddingCache.open(tmp_path, write=True)
        with EmbeddingCache.open(tmp_path) as reader:  # a reader while the writer holds the cache
            assert reader.teacher["id"] == "vl2v-tiny"
        started = time.monotonic()
        context.Process(target=_release_later, args=(release,)).start()
        with EmbeddingCache.open(tmp_path, write=True, wait=True):
            assert time.monotonic() - started > 0.3
    finally:
        release.set()
        holder.join(30)


def _release_later(release) -> None:
    time.sleep(0.5)
    release.set()


def test_the_map_grows_when_full(tmp_path):
    with EmbeddingCache.open(tmp_path, write=True, map_size=64 * 1024) as cache:
        cache.bind_teacher(TEACHER | {"embedding_dim": 512})
        for batch in range(20):
            cache.commit_images(
                {f"{batch:04d}{i:060d}": (unit(i, 512), [f"d/c/{batch}_{i}.jpg"]) for i in range(20)},
                row(f"r{batch}", images=20),
            )
    with EmbeddingCache.open(tmp_path) as cache:
        assert cache.counts()["image"] == 400


def test_the_cache_refuses_another_teacher(tmp_path):
    with EmbeddingCache.open(tmp_path, write=True) as cache:
        cache.bind_teacher(TEACHER)
        cache.bind_teacher(TEACHER | {"url": "http://elsewhere:8000"})  # same weights behind another URL: fine
        for change in ({"fingerprint": "0" * 64}, {"embedding_dim": 8}, {"preprocess": {"size": [224, 224]}}):
            with pytest.raises(CacheMismatch, match="Use another --cache"):
                cache.bind_teacher(TEACHER | change)


def test_the_cache_refuses_another_dataset_but_allows_a_moved_root(tmp_path):
    pacs = {"name": "pacs", "root": "/data/PACS", "domains": ["photo"], "classes": ["dog"]}
    with EmbeddingCache.open(tmp_path, write=True) as cache:
        cache.bind_dataset(pacs)
        cache.bind_dataset(pacs | {"root": "/mnt/PACS", "domains": ["sketch"]})
        assert cache.dataset["root"] == "/mnt/PACS" and cache.dataset["domains"] == ["photo", "sketch"]
        with pytest.raises(CacheMismatch, match="caches dataset 'pacs'"):
            cache.bind_dataset(pacs | {"name": "vlcs"})


def test_a_schema_version_mismatch_is_a_clear_error(tmp_path):
    with EmbeddingCache.open(tmp_path, write=True) as cache:
        cache._write(lambda txn: txn.put(b"schema_version", b"99", db=cache._db["meta"]))
    with pytest.raises(CacheMismatch, match=f"schema v99, newer than this vl2v \\(v{SCHEMA_VERSION}\\): upgrade vl2v"):
        EmbeddingCache.open(tmp_path)


def test_a_cache_from_before_checksums_is_upgraded_in_place_keeping_every_embedding(tmp_path):
    with EmbeddingCache.open(tmp_path, write=True) as cache:
        cache.bind_teacher(TEACHER)
        cache.commit_images({"a" * 64: (unit(0), ["photo/dog/1.jpg"])}, row("r1", images=1))
        cache.commit_texts({"a photo of a dog": unit(1)}, row("r2", texts=1))
        v1 = {db: [(k, v[:-4]) for k, v in cache._scan(db)] for db in ("image", "text")}  # strip the checksums

        def downgrade(txn):
            for db, pairs in v1.items():
                for key, value in pairs:
                    txn.put(key, value, db=cache._db[db])
            txn.put(b"schema_version", b"1", db=cache._db["meta"])

        cache._write(downgrade)
    with pytest.raises(CacheMismatch, match=f"vl2v cache upgrade {tmp_path}"):
        EmbeddingCache.open(tmp_path)

    result = CliRunner().invoke(app, ["cache", "upgrade", str(tmp_path)])
    assert result.exit_code == 0 and f"schema v{SCHEMA_VERSION} (1 images, 1 texts)" in result.output
    with EmbeddingCache.open(tmp_path) as cache:
        assert all(intact for db in ("image", "text") for _, _, intact in cache.checked(db))
        np.testing.assert_array_equal(cache.image("a" * 64), unit(0))
        np.testing.assert_array_equal(cache.texts()["a photo of a dog"], unit(1))


def test_the_ledger_is_keyed_by_the_clients_idempotency_key_not_the_vendors_request_id(tmp_path):
    """A vendor (or proxy) that repeats, omits or rewrites x-request-id cannot merge two paid requests into one."""
    with EmbeddingCache.open(tmp_path, write=True) as cache:
        cache.bind_teacher(TEACHER)
        for i, request_id in enumerate(["same", "same", ""]):
            cache.commit_images(
                {f"{i}" * 64: (unit(i), [f"p/c/{i}.jpg"])}, LedgerRow(request_id, f"k{i}", 1, 0, 0, 0.1, i)
            )
        with pytest.raises(CacheError, match="k0 is already in the ledger"):
            cache.commit_images({"9" * 64: (unit(9), ["p/c/9.jpg"])}, LedgerRow("other", "k0", 1, 0, 0, 0.1, 9))
        totals = cache.totals()
    assert (totals.requests, totals.paid_images, totals.cost) == (3, 3, pytest.approx(0.3))


def test_a_v2_cache_is_read_as_is_and_upgraded_to_v3_by_its_next_writer(tmp_path):
    with EmbeddingCache.open(tmp_path, write=True) as cache:
        cache.bind_teacher(TEACHER)
        cache.commit_images({"a" * 64: (unit(0), ["photo/dog/1.jpg"])}, row("r1", images=1))
        rows = cache._scan("ledger")

        def downgrade(txn):  # v2 keyed the ledger by the vendor's request id
            for key, value in rows:
                txn.delete(key, db=cache._db["ledger"])
                txn.put(b"r1", value, db=cache._db["ledger"])
            txn.put(b"schema_version", b"2", db=cache._db["meta"])

        cache._write(downgrade)
    with EmbeddingCache.open(tmp_path) as cache:  # readers (distill) read a v2 cache without upgrading it
        assert cache.schema_version == 2 and cache.totals().paid_images == 1 and cache.pending_body("x") is None
    with EmbeddingCache.open(tmp_path, write=True) as cache:
        assert cache.schema_version == SCHEMA_VERSION
        assert [k for k, _ in cache._scan("ledger")] == [b"idem-r1"]
        np.testing.assert_array_equal(cache.image("a" * 64), unit(0))


def test_a_v3_cache_without_views_is_read_as_is_and_upgraded_to_v4_by_its_next_writer(tmp_path):
    with EmbeddingCache.open(tmp_path, write=True) as cache:
        cache.bind_teacher(TEACHER)
        cache.commit_images({"a" * 64: (unit(0), ["photo/dog/1.jpg"])}, row("r1", images=1))
        cache._write(lambda txn: txn.put(b"schema_version", b"3", db=cache._db["meta"]))
    with EmbeddingCache.open(tmp_path) as cache:
        assert cache.schema_version == 3 and cache.view_matrix()[1].shape == (0, 4) and not cache.has_view("a", 1)
    result = CliRunner().invoke(app, ["cache", "upgrade", str(tmp_path)])
    assert result.exit_code == 0 and f"schema v{SCHEMA_VERSION}" in result.output
    with EmbeddingCache.open(tmp_path, write=True) as cache:
        assert cache.schema_version == 4
        cache.commit_images({}, row("r2", images=1), views={("a" * 64, 1): (unit(1), '{"flip": true}')})
        names, matrix, params = cache.view_matrix()
    assert names == [("a" * 64, 1)] and params == ['{"flip": true}']
    np.testing.assert_array_equal(matrix[0], unit(1))
