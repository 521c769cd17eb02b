"""The query job: buy teacher embeddings for what the budget allows, and never pay twice for the same image.

Order of work: (1) requests a crashed run sent but never committed are re-sent with their idempotency keys (the
vendor replays them for free); (2) every prompt any method needs is bought once; (3) images are taken in the
selection's priority order, read, hashed and checked on worker threads while earlier requests are in flight;
what the cache lacks is sent in batches, each recorded as pending before it is sent and committed with its
ledger row when it returns.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from teacher_service.schema import image_data_url

from .client import Embedded, QuotaExhausted, TeacherClient, VendorAuthError, VendorError, VendorUnreachable
from .datasets import Dataset, DatasetError, ImageFile, open_dataset
from .prompts import all_prompts
from .selection import priority_order
from .store import CacheMissing, EmbeddingCache, LedgerRow

log = logging.getLogger("vl2v.query")

# Errors that end a run cleanly, and how the report words them.
_STOPS = {
    VendorAuthError: "the vendor refused the API key",
    QuotaExhausted: "the vendor balance is exhausted; partial result saved",
    VendorUnreachable: "the vendor is unreachable; partial result saved",
}


@dataclass(frozen=True)
class QueryConfig:
    """What `vl2v query` was asked to do."""

    dataset: str
    data_dir: Path
    cache_dir: Path
    budget: int | None = None  # paid images recorded in the cache's ledger, cumulative; None: no cap
    select: str = "stratified"
    seed: int = 0
    exclude_domains: tuple[str, ...] = ()
    batch_size: int = 32
    concurrency: int = 4
    read_workers: int = 4
    wait_for_writer: bool = False

    def __post_init__(self) -> None:
        if self.budget is not None and self.budget < 0:
            raise ValueError(f"--budget must be >= 0, got {self.budget}")
        if not 1 <= self.batch_size <= 1024:
            raise ValueError(f"--batch-size must be in [1, 1024], got {self.batch_size}")
        if self.concurrency < 1:
            raise ValueError(f"--concurrency must be >= 1, got {self.concurrency}")


@dataclass
class QueryReport:
    """Counts of one run (and the cache's totals after it); what the progress bar and the summary show."""

    dataset: str
    teacher: str
    budget: int | None
    selected: int = 0  # files in the selection order (excluded domains removed)
    to_buy: int = 0  # images this run plans to buy (within the budget)
    paid_images: int = 0  # images paid in this run (replays of an earlier run's requests included)
    paid_texts: int = 0
    already_cached: int = 0  # selected files whose embedding was cached before this run
    duplicates: int = 0  # files identical to one already bought or queued
    skipped: int = 0  # files skipped in this run (undecodable here, or rejected by the vendor)
    cost: float = 0.0  # spent in this run
    replayed_requests: int = 0
    budget_used: int = 0  # paid images in the cache's ledger, all runs
    total_cost: float = 0.0  # cost in the cache's ledger, all runs
    unbought: int = 0  # selected files left unbought because the budget ran out
    currency: str = ""
    stopped: str | None = None  # why the run ended early, if it did
    started: float = field(default_factory=time.monotonic)
    dry_run: bool = False
    by_domain: dict[str, int] = field(default_factory=dict)  # images bought (or to buy, dry run) per domain
    texts_to_buy: int = 0

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "started"}
        out["seconds"] = round(time.monotonic() - self.started, 3)
        return out


class QueryStopped(Exception):
    """The run ended early but cleanly: everything paid so far is committed. `report` says how far it got."""

    def __init__(self, message: str, report: QueryReport, cause: Exception | None = None) -> None:
        super().__init__(message)
        self.report = report
        self.cause = cause


@dataclass(frozen=True)
class _Item:
    key: str
    path: str
    domain: str
    data: bytes = b""
    mime: str = ""
    problem: str | None = None


def run_query(
    config: QueryConfig,
    client: TeacherClient,
    *,
    dry_run: bool = False,
    on_progress: Callable[[QueryReport], None] = lambda report: None,
    stop: threading.Event | None = None,
) -> QueryReport:
    """Run the query job; see the module docstring.

    Args:
        stop: set it (from a signal handler, say) to stop cleanly: nothing new is sent, what is in flight is
            committed, and `QueryStopped` is raised with no cause.

    Raises:
        QueryStopped: the vendor refused the key (401), the balance ran out (402), the vendor stayed unreachable,
            or the user interrupted; everything paid before that is committed.
        DatasetError, CacheError, VendorError: nothing was bought.
    """
    dataset = open_dataset(config.dataset, config.data_dir)
    unknown = sorted(set(config.exclude_domains) - set(dataset.domains))
    if unknown:
        raise DatasetError(f"--exclude-domain {unknown} not among the domains {list(dataset.domains)}")
    card = client.model()
    teacher = {"url": client.url, **card}
    report = QueryReport(
        dataset=dataset.name,
        teacher=card["id"],
        budget=config.budget,
        dry_run=dry_run,
        currency=card["pricing"]["currency"],
    )
    if dry_run:
        return _plan(config, dataset, card, report)
    with EmbeddingCache.open(config.cache_dir, write=True, wait=config.wait_for_writer) as cache:
        cache.bind_teacher(teacher)
        cache.bind_dataset(dataset.describe())
        return _Job(config, dataset, card, cache, client, report, on_progress, stop or threading.Event()).run()


def _plan(config: QueryConfig, dataset: Dataset, card: dict, report: QueryReport) -> QueryReport:
    """What a run would buy and cost, reading the cache (if any) without writing to it."""
    try:
        cache = EmbeddingCache.open(config.cache_dir)
    except CacheMissing:
        cache = None
    try:
        have_texts = set(cache.texts()) if cache else set()
        prompts = [p for p in all_prompts(dataset.class_prompts, dataset.anchors) if p not in have_texts]
        report.budget_used = sum(r.images for r in cache.ledger()) if cache else 0
        report.texts_to_buy = len(prompts)

        def skip(item: _Item, reason: str) -> None:
            report.skipped += 1

        for item in _select(config, dataset, cache, report, on_skip=skip, on_found=lambda item: None):
            report.by_domain[item.domain] = report.by_domain.get(item.domain, 0) + 1
        tokens = sum(len(p.split()) + 2 for p in prompts)  # an estimate: the vendor's tokenizer decides
        pricing = card["pricing"]
        report.cost = report.to_buy * pricing["per_image"] + tokens * pricing["per_1k_tokens"] / 1000
    finally:
        if cache is not None:
            cache.close()
    return report


def _select(
    config: QueryConfig,
    dataset: Dataset,
    cache: EmbeddingCache | None,
    report: QueryReport,
    *,
    on_skip: Callable[[_Item, str], None],
    on_found: Callable[[_Item], None],
) -> Iterator[_Item]:
    """The images to buy, in priority order, until the budget is spent; counts everything else in `report`."""
    order = priority_order(dataset.files, config.select, config.seed, frozenset(config.exclude_domains))
    report.selected = len(order)
    left = _budget_left(config.budget, report.budget_used)
    queued: set[str] = set()
    for examined, item in enumerate(_inspect_all(order, dataset.root, cache, config.read_workers), start=1):
        if item.problem == "cached":
            report.already_cached += 1
            on_found(item)
        elif item.problem is not None:
            on_skip(item, item.problem)
        elif item.key in queued:
            report.duplicates += 1
            on_found(item)
        elif len(queued) >= left:
            report.unbought = len(order) - examined + 1
            return
        else:
            queued.add(item.key)
            report.to_buy = len(queued)
            yield item


def _budget_left(budget: int | None, paid: int) -> float:
    return float("inf") if budget is None else max(0, budget - paid)


def _inspect_all(order: list[ImageFile], root: Path, cache: EmbeddingCache | None, workers: int) -> Iterator[_Item]:
    """Read, hash and (for images not cached) decode-check files on `workers` threads, in order, ahead of use."""
    known_skips = set(cache.skipped()) if cache else set()
    files = iter(order)
    with ThreadPoolExecutor(workers, thread_name_prefix="vl2v-read") as pool:
        window = [pool.submit(_inspect, f, root, cache, known_skips) for f in itertools.islice(files, 8 * workers)]
        while window:
            item = window.pop(0).result()
            for f in itertools.islice(files, 1):
                window.append(pool.submit(_inspect, f, root, cache, known_skips))
            yield item


def _inspect(f: ImageFile, root: Path, cache: EmbeddingCache | None, known_skips: set[str]) -> _Item:
    try:
        data = (root / f.path).read_bytes()
    except OSError as e:
        return _Item("", f.path, f.domain, problem=f"unreadable: {e.strerror or e}")
    key = hashlib.sha256(data).hexdigest()
    if cache is not None and cache.has_image(key):
        return _Item(key, f.path, f.domain, problem="cached")
    if key in known_skips:
        return _Item(key, f.path, f.domain, problem="skipped before")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mime = Image.MIME.get(image.format or "", "")
    except Exception as e:  # any decoder failure: this file cannot be sent
        return _Item(key, f.path, f.domain, problem=f"undecodable here: {type(e).__name__}: {e}")
    if not mime.startswith("image/"):
        return _Item(key, f.path, f.domain, problem=f"unsupported image format {mime or 'unknown'}")
    return _Item(key, f.path, f.domain, data=data, mime=mime)


# What a batch came back as: the answer (None if nothing was sent), the items it covers, the rejected ones.
_Sent = tuple[Embedded | None, list[_Item], list[tuple[_Item, str]]]


class _Job:
    """One writing run over an open cache; the main thread is the only one that writes."""

    def __init__(
        self,
        config: QueryConfig,
        dataset: Dataset,
        card: dict,
        cache: EmbeddingCache,
        client: TeacherClient,
        report: QueryReport,
        on_progress: Callable[[QueryReport], None],
        stop: threading.Event,
    ) -> None:
        self.config, self.dataset, self.card, self.cache, self.client = config, dataset, card, cache, client
        self.report, self.on_progress = report, on_progress
        self.model = card["id"]
        self.pool = ThreadPoolExecutor(config.concurrency, thread_name_prefix="vl2v-send")
        self.in_flight: dict[Future, tuple[str, list[_Item]]] = {}
        self.stop_requested = stop
        self.stop_reason: str | None = None
        self.stop_error: Exception | None = None

    def run(self) -> QueryReport:
        try:
            self._replay_pending()
            self._buy_texts()
            self._buy_images()
        except KeyboardInterrupt:
            self._drain()
            self._refresh_totals()
            raise QueryStopped("interrupted; everything paid so far is saved", self.report) from None
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self._refresh_totals()
        if self._stopping():
            raise QueryStopped(self.stop_reason, self.report, self.stop_error)
        return self.report

    # -- phases -------------------------------------------------------------------------------------------

    def _replay_pending(self) -> None:
        """Re-send, under their original keys, requests a crashed run sent but never committed."""
        pending = self.cache.pending()
        if pending:
            log.info("re-sending %d request(s) left pending by an interrupted run", len(pending))
        for key, request in pending.items():
            if self._stopping():
                break
            if request["kind"] == "texts":
                self._commit_texts(request["prompts"], self._send(request["prompts"], key))
                continue
            items = [
                _inspect(ImageFile(p["path"], p["domain"], -1), self.dataset.root, None, set())
                for p in request["items"]
            ]
            if any(i.problem or i.key != p["key"] for i, p in zip(items, request["items"], strict=True)):
                log.warning("files of pending request %s changed on disk; dropping it", key[:12])
                self.cache.drop_pending(key)
                continue
            self._submit(items, key)
        self._drain()

    def _buy_texts(self) -> None:
        have = set(self.cache.texts())
        prompts = [p for p in all_prompts(self.dataset.class_prompts, self.dataset.anchors) if p not in have]
        self.report.texts_to_buy = len(prompts)
        for start in range(0, len(prompts), self.config.batch_size):
            batch = prompts[start : start + self.config.batch_size]
            key = self._idempotency_key("texts", batch)
            self.cache.add_pending(key, {"kind": "texts", "prompts": batch})
            self._commit_texts(batch, self._send(batch, key))
            if self._stopping():
                return

    def _buy_images(self) -> None:
        self.report.budget_used = sum(r.images for r in self.cache.ledger())
        found: dict[str, list[str]] = {}
        batch: list[_Item] = []

        def skip(item: _Item, reason: str) -> None:
            self._skip(item, reason, "local")

        def remember(item: _Item) -> None:
            found.setdefault(item.key, []).append(item.path)

        for item in _select(self.config, self.dataset, self.cache, self.report, on_skip=skip, on_found=remember):
            if self._stopping():
                break
            batch.append(item)
            if len(batch) == self.config.batch_size:
                self._submit(batch, self._idempotency_key("images", [i.key for i in batch]))
                batch = []
        if batch and not self._stopping():
            self._submit(batch, self._idempotency_key("images", [i.key for i in batch]))
        self._drain()
        if found:  # more paths for images already cached or bought in this run: free
            self.cache.add_paths({k: v for k, v in found.items() if self.cache.has_image(k)})

    # -- sending and committing -------------------------------------------------------------------------------

    def _idempotency_key(self, kind: str, contents: list[str]) -> str:
        digest = hashlib.sha256(f"vl2v:{kind}:{self.card['fingerprint']}:".encode())
        digest.update("\n".join(contents).encode())
        return f"vl2v-{kind}-{digest.hexdigest()[:40]}"

    def _send(self, inputs: list, key: str) -> Embedded | None:
        """One request with the client's retries; an error that ends the run is recorded, not raised."""
        try:
            return self.client.embed(self.model, inputs, key)
        except VendorError as e:
            self._refused(e, key)
        return None

    def _refused(self, error: VendorError, key: str) -> None:
        """A definite refusal charged nothing, so its pending record goes; an unreachable vendor might have."""
        if not isinstance(error, VendorUnreachable):
            self.cache.drop_pending(key)
        self._stop(error)

    def _stopping(self) -> bool:
        """True once the run must send nothing more: an error ended it, or the caller asked it to stop."""
        if self.stop_requested.is_set() and self.stop_reason is None:
            self.stop_reason = self.report.stopped = "interrupted; everything paid so far is saved"
        return self.stop_reason is not None

    def _stop(self, error: VendorError) -> None:
        if self.stop_reason is None:
            self.stop_reason = f"{_STOPS.get(type(error), 'the vendor refused a request')} ({error})"
            self.stop_error = error
            self.report.stopped = self.stop_reason

    def _submit(self, items: list[_Item], key: str) -> None:
        """Record the batch as pending, send it on a worker, and keep at most `concurrency` in flight."""
        self.cache.add_pending(
            key, {"kind": "images", "items": [{"key": i.key, "path": i.path, "domain": i.domain} for i in items]}
        )
        self.in_flight[self.pool.submit(self._send_images, items, key)] = (key, items)
        while len(self.in_flight) >= self.config.concurrency:
            self._collect(next(iter(self.in_flight)))

    def _send_images(self, items: list[_Item], key: str) -> _Sent:
        """Send; when the vendor blames one item, drop it and resend the rest (a new, content-derived key)."""
        rejected: list[tuple[_Item, str]] = []
        while items:
            try:
                inputs = [{"type": "image", "image": image_data_url(i.data, i.mime)} for i in items]
                return self.client.embed(self.model, inputs, key), items, rejected
            except VendorError as e:
                if e.item is None or e.item >= len(items) or e.status not in (400, 413):
                    raise
                rejected.append((items[e.item], f"rejected by the vendor: {e}"))
                items = items[: e.item] + items[e.item + 1 :]
                key = self._idempotency_key("images", [i.key for i in items])
        return None, items, rejected

    def _collect(self, future: Future) -> None:
        key, _ = self.in_flight[future]
        try:
            answer, items, rejected = future.result()  # an interrupt here leaves it in flight, for _drain
        except VendorError as e:
            del self.in_flight[future]
            self._refused(e, key)
            return
        del self.in_flight[future]
        for item, reason in rejected:
            self._skip(item, reason, "vendor")
        if answer is None:
            if not items:
                self.cache.drop_pending(key)  # every item was rejected: nothing was charged
            return
        row = self._ledger_row(answer, key)
        self.cache.commit_images({i.key: (v, [i.path]) for i, v in zip(items, answer.vectors, strict=True)}, row)
        if row.idempotency_key != key:
            self.cache.drop_pending(key)
        self._count(answer, domains=[i.domain for i in items])

    def _commit_texts(self, prompts: list[str], answer: Embedded | None) -> None:
        if answer is None:
            return
        self.cache.commit_texts(
            dict(zip(prompts, answer.vectors, strict=True)),
            self._ledger_row(answer, self._idempotency_key("texts", prompts)),
        )
        self._count(answer, domains=[])

    def _ledger_row(self, answer: Embedded, key: str) -> LedgerRow:
        return LedgerRow(
            request_id=answer.request_id,
            idempotency_key=key,
            images=answer.images,
            texts=answer.texts,
            tokens=answer.tokens,
            cost=answer.cost,
            time=time.time(),
            replayed=answer.replayed,
        )

    def _count(self, answer: Embedded, domains: list[str]) -> None:
        self.report.paid_images += answer.images
        self.report.paid_texts += answer.texts
        self.report.cost += answer.cost
        self.report.replayed_requests += answer.replayed
        for d in domains:
            self.report.by_domain[d] = self.report.by_domain.get(d, 0) + 1
        self.on_progress(self.report)

    def _skip(self, item: _Item, reason: str, stage: str) -> None:
        self.report.skipped += 1
        if item.key:
            self.cache.mark_skipped(item.key, reason, stage, [item.path])
        log.warning("skipped %s: %s", item.path, reason)
        self.on_progress(self.report)

    def _drain(self) -> None:
        while self.in_flight:
            self._collect(next(iter(self.in_flight)))

    def _refresh_totals(self) -> None:
        ledger = self.cache.ledger()
        self.report.budget_used = sum(r.images for r in ledger)
        self.report.total_cost = sum(r.cost for r in ledger)
