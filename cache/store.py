"""The embedding cache: one LMDB environment with named databases (docs/cache.md).

    meta          schema version, teacher fingerprint, dataset, dtype
    items         image key (sha256 of the file bytes) -> {"paths": [...]}: relative paths share one key
    image         image key -> float32 embedding bytes + CRC-32 of (key, bytes)
    text          prompt -> float32 embedding bytes + CRC-32 of (prompt, bytes)
    ledger        idempotency key -> one answered request {request_id, images, texts, tokens, cost, time, ...}
    skipped       image key -> {"reason", "stage", "paths"}
    pending       idempotency key -> a request sent but not yet committed: what it covers, for which account
    pending_body  idempotency key -> the exact bytes of that request's body, re-sent as they are on the next run
    views         "<image key>:<n>" -> float32 embedding of augmented view n + CRC-32 (`cache.views`)
    view_params   "<image key>:<n>" -> that view's parameters (JSON), so it can be replayed exactly

One writer at a time, enforced with a lock file; readers never block it (LMDB MVCC). An embedding, its item and
its ledger row are committed in one transaction. LMDB keeps no checksums of its own, so each embedding carries
one: `vl2v cache verify` finds a flipped bit that a norm check would miss (schema v2). The ledger is keyed by the
client's own idempotency key, never by anything the vendor sends, and a pending request keeps its body, so a crash
is recovered however the files changed since (schema v3). Augmented views are paid images of their own, kept with
their parameters (schema v4).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import numpy as np

SCHEMA_VERSION = 4
OLDEST_READABLE = 2  # older caches must be upgraded (`vl2v cache upgrade`) before anything reads them
DTYPE = "float32"
NORM_TOLERANCE = 1e-3  # how far from 1 the norm of a stored embedding may be
_DBS = ("meta", "items", "image", "text", "ledger", "skipped", "pending", "pending_body", "views", "view_params")
_LOCK = "writer.lock"
# Fields of the teacher that change an embedding: a cache never mixes two values of any of them.
TEACHER_IDENTITY = ("fingerprint", "embedding_dim", "preprocess", "precision")
PROBE_AGREEMENT = 0.999  # cosine between a cache's recorded probe embeddings and today's, per probe input

log = logging.getLogger("vl2v.cache")
T = TypeVar("T")


class CacheError(Exception):
    """The cache cannot be used as asked; the message says why and what to do."""


class CacheMissing(CacheError):
    pass


class CacheBusy(CacheError):
    """Another process is writing to this cache."""


class CacheMismatch(CacheError):
    """The cache holds embeddings of another teacher, dataset or schema version."""


@dataclass(frozen=True)
class LedgerRow:
    """One request the cache accounts for.

    `kind` says what it cost this cache: "paid" (charged, now or by an earlier run of this cache whose answer was
    lost), "free" (the vendor replayed an answer this cache never paid for), or "unrecovered" (possibly charged, but
    its answer could not be had: counted against the budget at its estimated cost, and reported), or "probe" (the
    fixed probe a vendor without a fingerprint is identified by: its cost counts, its image and text are not the
    dataset's and count against no image budget).
    """

    request_id: str
    idempotency_key: str
    images: int
    texts: int
    tokens: int
    cost: float
    time: float
    replayed: bool = False
    kind: str = "paid"


KINDS = ("paid", "free", "unrecovered", "probe")


@dataclass(frozen=True)
class LedgerTotals:
    """The ledger summed once, the way budgets, reports and `verify` read it."""

    requests: int = 0
    paid_images: int = 0  # charged to this cache: paid and unrecovered rows (the budget counts these)
    paid_texts: int = 0
    paid_tokens: int = 0
    cost: float = 0.0  # what this cache spent, unrecovered requests at their estimated price included
    free_images: int = 0  # received as free replays
    free_texts: int = 0
    unrecovered_requests: int = 0
    unrecovered_images: int = 0
    unrecovered_texts: int = 0
    unrecovered_cost: float = 0.0
    replayed_requests: int = 0
    probe_requests: int = 0  # a vendor without a fingerprint, identified by a probe bought at each run's start
    probe_cost: float = 0.0  # in `cost`

    @property
    def held_images(self) -> int:
        """Images whose embeddings the ledger says the cache holds (paid and free, not unrecovered)."""
        return self.paid_images - self.unrecovered_images + self.free_images

    @property
    def held_texts(self) -> int:
        return self.paid_texts - self.unrecovered_texts + self.free_texts


def ledger_totals(rows: list[LedgerRow]) -> LedgerTotals:
    paid = [r for r in rows if r.kind in ("paid", "unrecovered")]
    free = [r for r in rows if r.kind == "free"]
    lost = [r for r in rows if r.kind == "unrecovered"]
    probes = [r for r in rows if r.kind == "probe"]
    return LedgerTotals(
        requests=len(rows),
        paid_images=sum(r.images for r in paid),
        paid_texts=sum(r.texts for r in paid),
        paid_tokens=sum(r.tokens for r in paid),
        cost=round(sum(r.cost for r in paid + probes), 9),
        probe_requests=len(probes),
        probe_cost=round(sum(r.cost for r in probes), 9),
        free_images=sum(r.images for r in free),
        free_texts=sum(r.texts for r in free),
        unrecovered_requests=len(lost),
        unrecovered_images=sum(r.images for r in lost),
        unrecovered_texts=sum(r.texts for r in lost),
        unrecovered_cost=round(sum(r.cost for r in lost), 9),
        replayed_requests=sum(r.replayed for r in rows),
    )


def probe_agreement(recorded: dict, current: dict) -> float:
    """The smallest cosine between a cache's recorded probe embeddings and today's (1: the same teacher)."""
    cosines = []
    for key in ("image", "text"):
        a, b = np.asarray(recorded[key], dtype=np.float64), np.asarray(current[key], dtype=np.float64)
        if a.shape != b.shape:
            return -1.0
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    return min(cosines)


def _dumps(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


_OWN_FILES = {"data.mdb", "lock.mdb", _LOCK}


def _check_own_folder(path: Path) -> None:
    """A cache is created only in a new or empty folder: never spread over a source tree or someone's files."""
    if not path.is_dir() or (path / "data.mdb").is_file():
        return
    others = sorted(p.name for p in path.iterdir() if p.name not in _OWN_FILES)
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        ours = path.resolve() == Path(__file__).resolve().parent
        hint = " (it is vl2v's own source package: run from another folder)" if ours else ""
        raise CacheError(f"{path} holds other files ({shown}) and no cache{hint}; pass --cache a new or empty folder")


class EmbeddingCache:
    """An open cache directory. Use `EmbeddingCache.open(path)` to read, `open(path, write=True)` to write."""

    def __init__(self, path: Path, env: lmdb.Environment, lock_fd: int | None) -> None:
        self.path = path
        self._env = env
        self._lock_fd = lock_fd
        self._db: dict[str, Any] = {name: self._open_db(name) for name in _DBS}  # lmdb._Database, or None

    def _open_db(self, name: str) -> Any:
        """A named database; None when a reader finds an older cache without it (it reads as empty)."""
        try:
            return self._env.open_db(name.encode(), create=self._lock_fd is not None)
        except lmdb.NotFoundError:
            return None

    @classmethod
    def open(
        cls, path: Path | str, *, write: bool = False, wait: bool = False, map_size: int = 1 << 30
    ) -> EmbeddingCache:
        """Open (and with `write`, create) the cache at `path`.

        Args:
            write: take the single-writer lock; a second writer raises `CacheBusy` unless `wait`.
            wait: block until the current writer finishes instead of failing.
            map_size: initial LMDB map reservation (sparse); it doubles on demand.
        """
        path = Path(path).expanduser()
        if not write:
            if not (path / "data.mdb").is_file():
                raise CacheMissing(f"no cache at {path} (run `vl2v query --cache {path}` first)")
            env = lmdb.open(str(path), readonly=True, lock=True, max_dbs=len(_DBS), max_readers=256)
            cache = cls(path, env, None)
            cache._check_schema()
            return cache
        _check_own_folder(path)
        path.mkdir(parents=True, exist_ok=True)
        lock_fd = _take_writer_lock(path / _LOCK, wait)
        try:
            env = lmdb.open(str(path), map_size=map_size, max_dbs=len(_DBS), max_readers=256)
            cache = cls(path, env, lock_fd)
            cache._init_meta()
        except BaseException:
            os.close(lock_fd)
            raise
        return cache

    def close(self) -> None:
        self._env.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta ------------------------------------------------------------------------------------------------

    def _init_meta(self) -> None:
        found = self._get("meta", b"schema_version")
        if found is None:
            self._write(
                lambda txn: (
                    txn.put(b"schema_version", str(SCHEMA_VERSION).encode(), db=self._db["meta"]),
                    txn.put(b"dtype", DTYPE.encode(), db=self._db["meta"]),
                )
            )
        else:
            if int(found) == 1:
                self._upgrade_from_v1()
            if int(self._get("meta", b"schema_version") or 0) == 2:
                self._upgrade_from_v2()
            if int(self._get("meta", b"schema_version") or 0) == 3:  # v4 only adds the (empty) view databases
                self._write(lambda txn: txn.put(b"schema_version", b"4", db=self._db["meta"]))
        self._check_schema()

    def _check_schema(self) -> None:
        found = self._get("meta", b"schema_version")
        if found is None:
            return
        version = int(found)
        if version < OLDEST_READABLE:
            raise CacheMismatch(
                f"{self.path} was written by an older vl2v (cache schema v{version}, no checksums); upgrade it in "
                f"place, keeping every embedding: vl2v cache upgrade {self.path}"
            )
        if version > SCHEMA_VERSION:
            raise CacheMismatch(
                f"{self.path} has cache schema v{version}, newer than this vl2v (v{SCHEMA_VERSION}): upgrade vl2v"
            )

    @property
    def schema_version(self) -> int:
        return int(self._get("meta", b"schema_version") or SCHEMA_VERSION)

    def _upgrade_from_v1(self) -> None:
        """v1 stored bare float32 bytes; v2 appends each embedding's checksum. One transaction: all or nothing."""

        def write(txn: lmdb.Transaction) -> int:
            count = 0
            for db in ("image", "text"):
                for key, value in [(bytes(k), bytes(v)) for k, v in txn.cursor(db=self._db[db])]:
                    txn.put(key, value + _checksum(key, value), db=self._db[db])
                    count += 1
            txn.put(b"schema_version", b"2", db=self._db["meta"])
            return count

        log.info("upgraded %s to cache schema v2: checksums added to %d embeddings", self.path, self._write(write))

    def _upgrade_from_v2(self) -> None:
        """v2 keyed the ledger by the vendor's request id; v3 keys it by the cache's own idempotency key."""

        def write(txn: lmdb.Transaction) -> int:
            rows = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=self._db["ledger"])]
            for key, _ in rows:
                txn.delete(key, db=self._db["ledger"])
            for _, value in rows:
                txn.put(json.loads(value)["idempotency_key"].encode(), value, db=self._db["ledger"])
            txn.put(b"schema_version", b"3", db=self._db["meta"])
            return len(rows)

        log.info("upgraded %s to cache schema v3: %d ledger rows re-keyed", self.path, self._write(write))

    def meta(self) -> dict:
        with self._env.begin(db=self._db["meta"]) as txn:
            raw = {k.decode(): v.decode() for k, v in txn.cursor()}
        return {k: json.loads(v) if k in ("teacher", "dataset", "selection") else v for k, v in raw.items()}

    @property
    def teacher(self) -> dict | None:
        return self.meta().get("teacher")

    @property
    def dataset(self) -> dict | None:
        return self.meta().get("dataset")

    def bound_dataset(self) -> dict:
        """The dataset recorded by the first query; a `CacheError` saying what to do when there is none yet."""
        recorded = self.dataset
        if recorded is None:
            raise CacheError(f"{self.path} holds no dataset yet; run `vl2v query --cache {self.path}` first")
        return recorded

    def bind_teacher(self, teacher: dict) -> None:
        """Record the teacher, or check that it is the one already recorded (`CacheMismatch` if not)."""
        recorded = self.teacher
        if recorded is not None:
            changed = [k for k in TEACHER_IDENTITY if recorded.get(k) != teacher.get(k)]
            if changed:
                raise CacheMismatch(
                    f"{self.path} holds embeddings of teacher {recorded.get('id')!r} "
                    f"(fingerprint {str(recorded.get('fingerprint'))[:12]}); the vendor now serves "
                    f"{teacher.get('id')!r} (fingerprint {str(teacher.get('fingerprint'))[:12]}), differing in "
                    f"{changed}. Use another --cache for another teacher."
                )
            if "probe" in recorded and "probe" in teacher:
                agreement = probe_agreement(recorded["probe"], teacher["probe"])
                if agreement < PROBE_AGREEMENT:
                    raise CacheMismatch(
                        f"{self.path} holds embeddings of {recorded.get('vendor')} model {recorded.get('id')!r}, "
                        f"which now answers the probe differently (cosine {agreement:.4f} < {PROBE_AGREEMENT}): its "
                        "weights changed under the same name. Use another --cache for the new teacher."
                    )
                teacher = teacher | {"probe": recorded["probe"]}  # the first probe stays the reference
        self._write(lambda txn: txn.put(b"teacher", _dumps(teacher), db=self._db["meta"]))

    def bind_dataset(self, dataset: dict) -> None:
        """Record the dataset, or check it is the same one (its root may move; its name and classes may not)."""
        recorded = self.dataset
        if recorded is not None:
            for key in ("name", "classes"):
                if recorded.get(key) != dataset.get(key):
                    raise CacheMismatch(
                        f"{self.path} caches dataset {recorded.get('name')!r}; this run reads "
                        f"{dataset.get('name')!r} with different {key}. Use another --cache."
                    )
            dataset = dataset | {"domains": sorted(set(recorded["domains"]) | set(dataset["domains"]))}
        self._write(lambda txn: txn.put(b"dataset", _dumps(dataset), db=self._db["meta"]))

    # -- reads -----------------------------------------------------------------------------------------------

    def _get(self, db: str, key: bytes) -> bytes | None:
        if self._db[db] is None:
            return None
        with self._env.begin(db=self._db[db]) as txn:
            value = txn.get(key)
        return bytes(value) if value is not None else None

    def _scan(self, db: str) -> list[tuple[bytes, bytes]]:
        # Materialised, so no read transaction outlives the call (a later map resize needs none open).
        if self._db[db] is None:
            return []
        with self._env.begin(db=self._db[db]) as txn:
            return [(bytes(k), bytes(v)) for k, v in txn.cursor()]

    def has_image(self, key: str) -> bool:
        return self._get("image", key.encode()) is not None

    def image(self, key: str) -> np.ndarray | None:
        raw = self._get("image", key.encode())
        return _vector(raw) if raw is not None else None

    def images(self) -> Iterator[tuple[str, np.ndarray]]:
        for k, v in self._scan("image"):
            yield k.decode(), _vector(v)

    def image_matrix(self) -> tuple[list[str], np.ndarray]:
        """Every image embedding in one (N, D) array, read in one pass; keys in LMDB order."""
        with self._env.begin(db=self._db["image"]) as txn:
            n = txn.stat(self._db["image"])["entries"]
            dim = int((self.teacher or {}).get("embedding_dim", 0))
            keys, matrix = [], np.empty((n, dim), np.float32)
            for i, (k, v) in enumerate(txn.cursor()):
                keys.append(bytes(k).decode())
                matrix[i] = _vector(v)
        return keys, matrix

    def has_view(self, key: str, index: int) -> bool:
        return self._get("views", view_name(key, index).encode()) is not None

    def view_matrix(self) -> tuple[list[tuple[str, int]], np.ndarray, list[str]]:
        """Every view embedding in one (V, D) array, read in one pass: the (image key, n) of each row, the array,
        and each view's parameters (JSON)."""
        if self._db["views"] is None:
            return [], np.empty((0, int((self.teacher or {}).get("embedding_dim", 0))), np.float32), []
        with self._env.begin() as txn:
            n = txn.stat(self._db["views"])["entries"]
            dim = int((self.teacher or {}).get("embedding_dim", 0))
            names, matrix, params = [], np.empty((n, dim), np.float32), []
            for i, (name, value) in enumerate(txn.cursor(db=self._db["views"])):
                key, _, index = bytes(name).decode().rpartition(":")
                names.append((key, int(index)))
                matrix[i] = _vector(value)
                recorded = txn.get(bytes(name), db=self._db["view_params"])
                if recorded is None:
                    raise CacheError(
                        f"{self.path}: view {bytes(name).decode()} has no parameters; run `vl2v cache verify`"
                    )
                params.append(bytes(recorded).decode())
        return names, matrix, params

    def items(self) -> Iterator[tuple[str, list[str]]]:
        for k, v in self._scan("items"):
            yield k.decode(), json.loads(v)["paths"]

    def texts(self) -> dict[str, np.ndarray]:
        return {k.decode(): _vector(v) for k, v in self._scan("text")}

    def checked(self, db: str) -> Iterator[tuple[str, np.ndarray, bool]]:
        """Every embedding of `db` ("image" or "text") with whether its bytes still match their checksum."""
        for k, v in self._scan(db):
            intact = len(v) >= _CRC.size and _checksum(k, v[: -_CRC.size]) == v[-_CRC.size :]
            yield k.decode(errors="replace"), _vector(v), intact

    def ledger(self) -> list[LedgerRow]:
        rows = [LedgerRow(**json.loads(v)) for _, v in self._scan("ledger")]
        return sorted(rows, key=lambda r: r.time)

    def totals(self) -> LedgerTotals:
        return ledger_totals(self.ledger())

    def skipped(self) -> dict[str, dict]:
        return {k.decode(): json.loads(v) for k, v in self._scan("skipped")}

    def pending(self) -> dict[str, dict]:
        return {k.decode(): json.loads(v) for k, v in self._scan("pending")}

    def pending_body(self, idempotency_key: str) -> bytes | None:
        """The exact body a pending request was sent with (None for one left by a cache before schema v3)."""
        return self._get("pending_body", idempotency_key.encode())

    def counts(self) -> dict[str, int]:
        with self._env.begin() as txn:
            return {
                name: txn.stat(self._db[name])["entries"] if self._db[name] is not None else 0
                for name in _DBS
                if name != "meta"
            }

    # -- writes (writer only) ----------------------------------------------------------------------------------

    def commit_images(
        self,
        embeddings: dict[str, tuple[np.ndarray, list[str]]],
        row: LedgerRow,
        views: dict[tuple[str, int], tuple[np.ndarray, str]] | None = None,
    ) -> None:
        """One answered request, in one transaction: clean-image embeddings {key: (vector, paths)} with their items,
        augmented views {(key, n): (vector, parameters as JSON)}, and the ledger row that paid for them all."""

        def write(txn: lmdb.Transaction) -> None:
            for key, (vector, paths) in embeddings.items():
                txn.put(key.encode(), _packed(key.encode(), vector), db=self._db["image"])
                self._merge_paths(txn, key, paths)
            for (key, index), (vector, params) in (views or {}).items():
                name = view_name(key, index).encode()
                txn.put(name, _packed(name, vector), db=self._db["views"])
                txn.put(name, params.encode(), db=self._db["view_params"])
            self._put_ledger(txn, row)

        self._write(write)

    def commit_texts(self, embeddings: dict[str, np.ndarray], row: LedgerRow) -> None:
        def write(txn: lmdb.Transaction) -> None:
            for prompt, vector in embeddings.items():
                txn.put(prompt.encode(), _packed(prompt.encode(), vector), db=self._db["text"])
            self._put_ledger(txn, row)

        self._write(write)

    def add_paths(self, found: dict[str, list[str]]) -> None:
        """Record more paths for images already cached (duplicates, renamed files): free, no ledger row."""

        def merge(txn: lmdb.Transaction) -> None:
            for key, paths in found.items():
                self._merge_paths(txn, key, paths)

        self._write(merge)

    def mark_skipped(self, key: str, reason: str, stage: str, paths: list[str]) -> None:
        entry = {"reason": reason, "stage": stage, "paths": paths}
        self._write(lambda txn: txn.put(key.encode(), _dumps(entry), db=self._db["skipped"]))

    def add_pending(self, idempotency_key: str, request: dict, body: bytes) -> None:
        """Record a request as sent, with its exact body, before it is sent."""
        key = idempotency_key.encode()

        def write(txn: lmdb.Transaction) -> None:
            txn.put(key, _dumps(request), db=self._db["pending"])
            txn.put(key, body, db=self._db["pending_body"])

        self._write(write)

    def drop_pending(self, idempotency_key: str) -> None:
        self._write(lambda txn: self._drop_pending(txn, idempotency_key.encode()))

    @property
    def selections(self) -> list[dict]:
        """Each buying run's choice, in order: strategy, seed, features' student, and the images in the order chosen."""
        raw = self._get("meta", b"selection")
        return json.loads(raw) if raw else []

    def record_selection(self, run: dict) -> None:
        """Append one run's choice (`selections`)."""

        def write(txn: lmdb.Transaction) -> None:
            current = txn.get(b"selection", db=self._db["meta"])
            txn.put(b"selection", _dumps([*(json.loads(current) if current else []), run]), db=self._db["meta"])

        self._write(write)

    def record_probe(self, row: LedgerRow) -> None:
        """The probe a run bought to identify its teacher: its cost enters the ledger before anything else."""
        self._write(lambda txn: self._put_ledger(txn, row))

    def record_unrecovered(self, rows: list[LedgerRow]) -> None:
        """Pending requests given up on: their possible charge enters the ledger, their pending records go."""

        def write(txn: lmdb.Transaction) -> None:
            for row in rows:
                self._put_ledger(txn, row)

        self._write(write)

    def _drop_pending(self, txn: lmdb.Transaction, key: bytes) -> None:
        txn.delete(key, db=self._db["pending"])
        txn.delete(key, db=self._db["pending_body"])

    def _merge_paths(self, txn: lmdb.Transaction, key: str, paths: list[str]) -> None:
        current = txn.get(key.encode(), db=self._db["items"])
        known = json.loads(current)["paths"] if current is not None else []
        merged = known + [p for p in paths if p not in known]
        if merged != known:
            txn.put(key.encode(), _dumps({"paths": merged}), db=self._db["items"])

    def _put_ledger(self, txn: lmdb.Transaction, row: LedgerRow) -> None:
        """The row under the cache's own idempotency key: whatever request ids the vendor (or a proxy) sends, one
        request is one row, and a second row for the same request is a bug, refused."""
        if row.kind not in KINDS:
            raise ValueError(f"ledger row kind {row.kind!r} is not one of {KINDS}")
        key = row.idempotency_key.encode()
        if not txn.put(key, _dumps(row.__dict__), db=self._db["ledger"], overwrite=False):
            raise CacheError(f"{self.path}: request {row.idempotency_key} is already in the ledger")
        self._drop_pending(txn, key)

    def _write(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run `fn` in a write transaction; on a full map, abort, double the map and run it again."""
        if self._lock_fd is None:
            raise CacheError(f"{self.path} is open read-only")
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                self._env.set_mapsize(self._env.info()["map_size"] * 2)


_CRC = struct.Struct("<I")


def view_name(key: str, index: int) -> str:
    """How augmented view `index` of image `key` is named in the `views` databases."""
    return f"{key}:{index}"


def _checksum(key: bytes, data: bytes) -> bytes:
    return _CRC.pack(zlib.crc32(data, zlib.crc32(key)))


def _packed(key: bytes, vector: np.ndarray) -> bytes:
    data = np.asarray(vector, "<f4").tobytes()
    return data + _checksum(key, data)


def _vector(value: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(value, dtype="<f4", count=(len(value) - _CRC.size) // 4)


def _take_writer_lock(path: Path, wait: bool) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            os.close(fd)
            raise
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        if not wait:
            os.close(fd)
            raise CacheBusy(f"{path.parent} is being written by {holder}; wait for it, or pass --wait") from None
        log.info("waiting for %s to finish writing %s", holder, path.parent)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:  # Ctrl-C while waiting
            os.close(fd)
            raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
    return fd
