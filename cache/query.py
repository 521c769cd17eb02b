"""The query job: buy teacher embeddings for what the budget allows, and never pay twice for the same image.

Order of work: (1) requests a crashed run sent but never committed are re-sent, as the very bytes that were sent
and under their idempotency keys, so the vendor replays them for free, whatever happened to the files since;
(2) every prompt any method needs is bought once; (3) images are taken in the selection's priority order, read,
hashed and checked on worker threads while earlier requests are in flight; what the cache lacks is sent in
batches, each recorded as pending (with its body) before it is sent and committed with its ledger row, keyed by
its idempotency key, when it returns.

What each answer cost this cache is recorded honestly: "paid" when the vendor charged it (now, or in a crashed run
whose answer is recovered now), "free" when the vendor replayed an answer this cache never paid for (another cache
bought the same images under the same API key), "unrecovered" when a request that may have been charged cannot be
re-sent (the user gave it up with `--abandon-pending`, or it predates kept bodies and its files changed): it counts
against the budget at its list price and is reported in numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from common.imaging import to_rgb
from common.schema import image_data_url

from .client import (
    Embedded,
    QuotaExhausted,
    TeacherClient,
    VendorAnswerInvalid,
    VendorAuthError,
    VendorError,
    VendorUnreachable,
    request_body,
)
from .data.datasets import Dataset, DatasetError, ImageFile, open_dataset
from .data.prompts import all_prompts, class_prompts
from .errors import InvalidOption
from .pricing import PriceModel, estimated_tokens, image_size
from .selection import needs_features, priority_order
from .store import CacheError, CacheMissing, EmbeddingCache, LedgerRow, LedgerTotals
from .strategies import Features
from .strategies.uncertainty import ACQUISITIONS, probe_scores
from .views import render_view, view_params

log = logging.getLogger("vl2v.query")

MAX_VIEWS = 255
# Errors that end a run cleanly, and how the report words them.
_STOPS = {
    VendorAuthError: "the vendor refused the API key",
    QuotaExhausted: "the vendor balance is exhausted; partial result saved",
    VendorUnreachable: "the vendor is unreachable; partial result saved",
    VendorAnswerInvalid: "the vendor sent an invalid answer; nothing of it was stored and its request stays pending",
}


class PendingForAnotherAccount(CacheError):
    """Requests a crashed run left pending were sent for another vendor account than this key's."""


@dataclass(frozen=True)
class QueryConfig:
    """What `vl2v query` was asked to do."""

    dataset: str
    data_dir: Path
    cache_dir: Path
    budget: int | None = None  # paid images recorded in the cache's ledger, cumulative; None: no cap
    max_spend: float | None = None  # money in the cache's ledger (the vendor's currency), cumulative; None: no cap
    select: str = "stratified"
    balanced: bool = False  # a feature-based strategy, each domain x class cell on its own, interleaved
    seed: int = 0
    exclude_domains: tuple[str, ...] = ()
    views: int = 0  # augmented views bought per image, besides the image itself (`cache.views`)
    batch_size: int = 32
    concurrency: int = 4
    read_workers: int = 4
    wait_for_writer: bool = False
    abandon_pending: bool = False  # give up requests a crashed run left pending, counting them as possibly paid

    def __post_init__(self) -> None:
        if self.budget is not None and self.budget < 0:
            raise InvalidOption(f"--budget must be >= 0, got {self.budget}")
        if self.max_spend is not None and not 0 <= self.max_spend < float("inf"):
            raise InvalidOption(f"--max-spend must be a finite amount >= 0, got {self.max_spend}")
        if not 1 <= self.batch_size <= 1024:
            raise InvalidOption(f"--batch-size must be in [1, 1024], got {self.batch_size}")
        if self.concurrency < 1:
            raise InvalidOption(f"--concurrency must be >= 1, got {self.concurrency}")
        if not 0 <= self.views <= MAX_VIEWS:
            raise InvalidOption(f"--views must be in [0, {MAX_VIEWS}], got {self.views}")


@dataclass
class QueryReport:
    """Counts of one run (and the cache's totals after it); what the progress bar and the summary show."""

    dataset: str
    teacher: str
    budget: int | None
    selected: int = 0  # files in the selection order (excluded domains removed)
    to_buy: int = 0  # images this run plans to buy (within the budget): files and augmented views
    paid_images: int = 0  # images charged to this cache in this run (recovered answers of a crashed run included)
    paid_texts: int = 0
    free_images: int = 0  # images the vendor replayed free: another cache already bought them with this key
    already_cached: int = 0  # selected files whose embedding was cached before this run
    duplicates: int = 0  # files identical to one already bought or queued
    skipped: int = 0  # files skipped in this run (undecodable here, or rejected by the vendor)
    cost: float = 0.0  # spent in this run (a dry run: its estimate, prompts on estimated tokens)
    images_cost: float = 0.0  # a dry run: what its images will cost, from each one's size (exact)
    replayed_requests: int = 0
    unrecovered_images: int = 0  # possibly paid in an earlier run, given up in this one (in `cost` at list price)
    budget_used_before: int = 0  # paid images in the cache's ledger when this run started
    budget_used: int = 0  # paid images in the cache's ledger, all runs
    total_cost: float = 0.0  # cost in the cache's ledger, all runs
    unbought: int = 0  # selected files left unbought because the budget ran out
    currency: str = ""
    stopped: str | None = None  # why the run ended early, if it did
    capped: str | None = None  # the money cap ended the buying (a normal end, as the image budget's)
    started: float = field(default_factory=time.monotonic)
    dry_run: bool = False
    by_domain: dict[str, int] = field(default_factory=dict)  # images bought (or to buy, dry run) per domain
    texts_to_buy: int = 0

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "started"}
        out["cost"], out["total_cost"] = round(self.cost, 9), round(self.total_cost, 9)
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
    """One image to buy: a file (view 0), or one augmented view of it (`cache.views`), and its wire form."""

    key: str
    path: str
    domain: str
    url: str = ""  # the data URL sent for it
    pixels: tuple[int, int] = (0, 0)  # the width and height of what is sent: what per-pixel and tile prices read
    problem: str | None = None
    view: int = 0
    params: str = ""  # an augmented view's parameters (JSON)

    @property
    def unit(self) -> str:
        """What an idempotency key is derived from: the file's sha256, and the view's number if it is one."""
        return self.key if self.view == 0 else f"{self.key}:{self.view}"

    def meta(self) -> dict:
        """What a pending record keeps of it (the pixels are in the kept body)."""
        kept = {"key": self.key, "path": self.path, "domain": self.domain}
        return kept | ({"view": self.view, "params": self.params} if self.view else {})


@dataclass(frozen=True)
class _Batch:
    """One request: the items it covers, their wire inputs (aligned), and the exact body to send first."""

    key: str
    items: list[_Item]
    inputs: list[dict]
    body: bytes
    resumed: bool = False  # left pending by an earlier run: any replay of it answers what that run paid
    sent_at: float | None = None  # when an earlier run sent it
    cost: float = 0.0  # what it will cost at the vendor's prices, while it is in flight


@dataclass(frozen=True)
class _Part:
    """A committed-to-be piece of a batch: what the vendor answered for these items under this key."""

    key: str
    items: list[_Item]
    answer: Embedded


def run_query(
    config: QueryConfig,
    client: TeacherClient,
    *,
    dry_run: bool = False,
    on_progress: Callable[[QueryReport], None] = lambda report: None,
    stop: threading.Event | None = None,
    features: Features | None = None,
    scores: dict[str, float] | None = None,
) -> QueryReport:
    """Run the query job; see the module docstring.

    Args:
        features: every file's student features, for the feature-based strategies (`student.features`).
        stop: set it (from a signal handler, say) to stop cleanly: nothing new is sent, what is in flight is
            committed, and `QueryStopped` is raised with no cause.

    Raises:
        QueryStopped: the vendor refused the key (401), the balance ran out (402), the vendor stayed unreachable
            or answered nonsense, or the user interrupted; everything paid before that is committed.
        DatasetError, CacheError, VendorError: nothing was bought.
    """
    dataset = open_dataset(config.dataset, config.data_dir)
    unknown = sorted(set(config.exclude_domains) - set(dataset.domains))
    if unknown:
        raise DatasetError(f"--exclude-domain {unknown} not among the domains {list(dataset.domains)}")
    offered = sum(f.domain not in config.exclude_domains for f in dataset.files) * (1 + config.views)
    if config.budget is not None and config.budget > offered:
        raise InvalidOption(
            f"--budget {config.budget} is more than the {offered} images the dataset offers"
            + (f" ({config.views} views each)" if config.views else "")
            + "; lower it, or leave it unset to buy all"
        )
    if needs_features(config.select) and features is None:
        raise InvalidOption(f"--select {config.select} needs the student's features of every image")
    card = client.model()
    price = client.price_of(card)
    report = QueryReport(
        dataset=dataset.name,
        teacher=card["id"],
        budget=config.budget,
        dry_run=dry_run,
        currency=price.currency,
    )
    if dry_run:
        return _plan(config, dataset, price, int(card["image_size"][0]), report, features)
    probe = client.probe()  # a vendor without a fingerprint: its identity, bought once per run
    if probe is not None:
        card = client.model() | {"probe": probe[0]}
    teacher = {"url": client.url, **card}
    with EmbeddingCache.open(config.cache_dir, write=True, wait=config.wait_for_writer) as cache:
        if probe is not None:
            bill = probe[1]
            cache.record_probe(
                LedgerRow(
                    bill.request_id, f"probe-{time.time_ns()}", 1, 1, bill.tokens, bill.cost, time.time(), kind="probe"
                )
            )
            report.cost += bill.cost
        cache.bind_teacher(teacher)
        cache.bind_dataset(dataset.describe())
        job = _Job(config, dataset, card, cache, client, report, on_progress, stop or threading.Event(), price)
        job.features, job.scores = features, scores
        return job.run()


def _plan(
    config: QueryConfig, dataset: Dataset, price: PriceModel, side: int, report: QueryReport, features: Features | None
) -> QueryReport:
    """What a run would buy and cost, reading the cache (if any) without writing to it."""
    try:
        cache = EmbeddingCache.open(config.cache_dir)
    except CacheMissing:
        cache = None
    try:
        have_texts = set(cache.texts()) if cache else set()
        prompts = [p for p in all_prompts(dataset.class_prompts, dataset.anchors) if p not in have_texts]
        report.budget_used = report.budget_used_before = cache.totals().paid_images if cache else 0
        report.texts_to_buy = len(prompts)
        skips = set(cache.skipped()) if cache else set()
        order = _order(config, dataset, features, cache, report.budget_used)
        found = _inspect_all(order, dataset.root, cache, skips, config.read_workers, _Views(config.views, None, side))
        selection = _select(found, _budget_left(config.budget, report.budget_used))
        images_cost = 0.0
        for units, status in _counted(selection, len(order), report, bought=set()):
            if status == BUY:
                report.by_domain[units[0].domain] = report.by_domain.get(units[0].domain, 0) + len(units)
                images_cost += sum(price.image_cost(*u.pixels) for u in units)
            report.skipped += status == SKIP
        report.images_cost = round(images_cost, 12)
        report.cost = round(images_cost + price.text_cost(_estimated_tokens(prompts)), 12)
    finally:
        if cache is not None:
            cache.close()
    return report


def _order(
    config: QueryConfig, dataset: Dataset, features: Features | None, cache: EmbeddingCache | None, paid: int,
    scores: dict[str, float] | None = None,
) -> list[ImageFile]:  # fmt: skip
    """The priority order this run buys by; the feature-based strategies start from what the cache holds."""
    left = _budget_left(config.budget, paid)
    return priority_order(
        dataset.files, config.select, config.seed, frozenset(config.exclude_domains), features=features,
        bought=frozenset(k for k, _ in cache.items()) if cache is not None else frozenset(),
        budget=None if left == float("inf") else int(left), balanced=config.balanced, scores=scores,
    )  # fmt: skip


def run_rounds(
    config: QueryConfig,
    client: TeacherClient,
    rounds: int,
    *,
    features: Features | None,
    acquire: str = "entropy",
    on_progress: Callable[[QueryReport], None] = lambda report: None,
    stop: threading.Event | None = None,
) -> QueryReport:
    """Buy the budget's new images in `rounds`: the first round a 1/rounds share by `config.select`, each later
    round the next share by a probe fit on what is bought (`cache.strategies.uncertainty`). The same guarantees
    as one run: every round is a `run_query` under the cumulative budget, so re-running buys nothing and a larger
    budget buys only new images. Returns the last round's report with every round's purchases summed in."""
    if rounds < 1:
        raise InvalidOption(f"--rounds must be >= 1, got {rounds}")
    if acquire not in ACQUISITIONS:
        raise InvalidOption(f"--acquire {acquire!r} is not one of {list(ACQUISITIONS)}")
    if rounds > 1 and config.budget is None:
        raise InvalidOption("--rounds needs a --budget to divide")
    if rounds > 1 and features is None:
        raise InvalidOption("--rounds fits its probe on the student's features: they are needed")
    before = _paid_so_far(config.cache_dir)
    total: QueryReport | None = None
    for r in range(1, rounds + 1):
        target = config.budget if config.budget is None else before + -(-(config.budget - before) * r // rounds)
        if r == 1:
            step, scores = dataclasses.replace(config, budget=target), None
        else:
            step = dataclasses.replace(config, budget=target, select="uncertainty")
            scores = _probe_scores(config, features, acquire)  # type: ignore[arg-type]
        report = run_query(step, client, on_progress=on_progress, stop=stop, features=features, scores=scores)
        total = report if total is None else _summed(total, report)
    assert total is not None
    return total


def _paid_so_far(cache_dir: Path) -> int:
    try:
        with EmbeddingCache.open(cache_dir) as cache:
            return cache.totals().paid_images
    except CacheMissing:
        return 0


def _probe_scores(config: QueryConfig, features: Features, acquire: str) -> dict[str, float]:
    """The probe's score of every unbought image, from the teacher's answers the cache holds."""
    dataset = open_dataset(config.dataset, config.data_dir)
    with EmbeddingCache.open(config.cache_dir) as cache:
        bought = dict(cache.images())
        texts, teacher = cache.texts(), cache.teacher or {}
    classes = []
    for name in dataset.class_prompts:  # the classes' prompt words, in label order
        prompts = np.stack([texts[p] for p in class_prompts("photo", name)])
        mean = prompts.mean(0)
        classes.append(mean / np.linalg.norm(mean))
    labels = {features.keys[f.path]: f.label for f in dataset.files if f.path in features.keys and f.label is not None}
    return probe_scores(features, bought, np.stack(classes), float(teacher.get("logit_scale", 100.0)), labels, acquire)


def _summed(total: QueryReport, report: QueryReport) -> QueryReport:
    for name in ("paid_images", "paid_texts", "free_images", "duplicates", "skipped", "cost", "replayed_requests",
                 "unrecovered_images"):  # fmt: skip
        setattr(report, name, getattr(total, name) + getattr(report, name))
    report.by_domain = {
        d: total.by_domain.get(d, 0) + report.by_domain.get(d, 0) for d in {*total.by_domain, *report.by_domain}
    }
    report.budget_used_before, report.started = total.budget_used_before, total.started
    return report


def _estimated_tokens(prompts: list[str]) -> int:
    return sum(estimated_tokens(p) for p in prompts)  # an estimate: the vendor's tokenizer decides


BUY, CACHED, DUPLICATE, SKIP = "buy", "cached", "duplicate", "skip"


UNBOUGHT = "unbought"


def _select(files: Iterator[list[_Item]], budget_left: float) -> Iterator[tuple[list[_Item], str]]:
    """Each file's units (in priority order) with what to do with them: BUY (the units the cache lacks, the file
    before its views, until `budget_left` images are queued), CACHED, DUPLICATE (of a file already seen), or SKIP
    (it cannot be sent); then, once the budget is spent, one `([], UNBOUGHT)` and nothing more."""
    seen: set[str] = set()
    queued = 0
    for units in files:
        first = units[0]
        if first.problem is not None and first.problem != "cached":
            yield units, SKIP
        elif first.key in seen:
            yield [first], DUPLICATE
        elif first.problem == "cached":
            seen.add(first.key)
            yield units, CACHED
        elif queued >= budget_left:
            yield [], UNBOUGHT
            return
        else:
            seen.add(first.key)
            units = units[: int(min(len(units), budget_left - queued))]
            queued += len(units)
            yield units, BUY


def _counted(
    selection: Iterator[tuple[list[_Item], str]], selected: int, report: QueryReport, bought: set[str]
) -> Iterator[tuple[list[_Item], str]]:
    """`selection`, passed on, with the plan counted in `report`: cached before this run (an image this run
    already bought, e.g. recovered from a crashed run, is paid, not cached), duplicates, to buy, and what the
    budget leaves unbought of the `selected` files."""
    report.selected = selected
    for examined, (units, status) in enumerate(selection):
        if status == UNBOUGHT:
            report.unbought = selected - examined
            return
        if status == CACHED and units[0].key not in bought:
            report.already_cached += 1
        elif status == DUPLICATE:
            report.duplicates += 1
        elif status == BUY:
            report.to_buy += len(units)
        yield units, status


def _budget_left(budget: int | None, paid: int) -> float:
    return float("inf") if budget is None else max(0, budget - paid)


@dataclass(frozen=True)
class _Views:
    """How many augmented views to buy per image, and the teacher's resolution to render them at (None: the
    views are counted, not rendered, as a dry run does)."""

    count: int
    size: int | None
    side: int = 0  # the side views are rendered at, also when they are only counted (for their price)


def _inspect_all(
    order: list[ImageFile], root: Path, cache: EmbeddingCache | None, known_skips: set[str], workers: int, views: _Views
) -> Iterator[list[_Item]]:
    """Read, hash, decode-check and (for what the cache lacks) encode files and render their views, on `workers`
    threads, in order, ahead of use: for each file, the units it still needs (or one item saying why none)."""
    files = iter(order)
    with ThreadPoolExecutor(workers, thread_name_prefix="vl2v-read") as pool:

        def submit(f: ImageFile) -> Future:
            return pool.submit(_inspect, f, root, cache, known_skips, views)

        window = [submit(f) for f in itertools.islice(files, 8 * workers)]
        while window:
            units = window.pop(0).result()
            window += [submit(f) for f in itertools.islice(files, 1)]
            yield units


def _inspect(
    f: ImageFile, root: Path, cache: EmbeddingCache | None, known_skips: set[str], views: _Views
) -> list[_Item]:
    try:
        data = (root / f.path).read_bytes()
    except OSError as e:
        return [_Item("", f.path, f.domain, problem=f"unreadable: {e.strerror or e}")]
    key = hashlib.sha256(data).hexdigest()
    clean = cache is None or not cache.has_image(key)
    wanted = [v for v in range(1, views.count + 1) if cache is None or not cache.has_view(key, v)]
    if not clean and not wanted:
        return [_Item(key, f.path, f.domain, problem="cached")]
    if key in known_skips:
        return [_Item(key, f.path, f.domain, problem="skipped before")]
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mime = Image.MIME.get(image.format or "", "")
            picture = to_rgb(image) if wanted and views.size else None
    except Exception as e:  # any decoder failure: this file cannot be sent
        return [_Item(key, f.path, f.domain, problem=f"undecodable here: {type(e).__name__}: {e}")]
    if not mime.startswith("image/"):
        return [_Item(key, f.path, f.domain, problem=f"unsupported image format {mime or 'unknown'}")]
    url = image_data_url(data, mime) if views.size else ""
    units = [_Item(key, f.path, f.domain, url=url, pixels=image.size)] if clean else []
    side = views.size or views.side
    for v in wanted:
        params = view_params(key, v)
        url = image_data_url(render_view(picture, params, views.size), "image/png") if picture and views.size else ""
        units.append(_Item(key, f.path, f.domain, url=url, pixels=(side, side), view=v, params=params.to_json()))
    return units


def _from_meta(meta: dict, url: str) -> _Item:
    return _Item(
        meta["key"], meta["path"], meta["domain"], url=url, pixels=image_size(url), view=meta.get("view", 0),
        params=meta.get("params", ""),
    )  # fmt: skip


def _image_input(url: str) -> dict:
    return {"type": "image", "image": url}


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
        price: PriceModel,
    ) -> None:
        self.config, self.dataset, self.card, self.cache, self.client = config, dataset, card, cache, client
        self.price = price
        self.in_flight_cost = 0.0  # what the requests in flight will cost, at the vendor's prices
        self.spent_before = cache.totals().cost - report.cost  # the ledger's money before this run
        self.capped = False  # the money cap stopped the buying
        self.features: Features | None = None  # the student's features, for the feature-based strategies
        self.scores: dict[str, float] | None = None  # the adaptive rounds' probe scores
        self.chosen: list[str] = []  # image keys in the order this run chose to buy them
        self.report, self.on_progress = report, on_progress
        self.bought: set[str] = set()  # image keys this run paid for (recovered ones included)
        self.model, self.dim = card["id"], int(card["embedding_dim"])
        self.pool = ThreadPoolExecutor(config.concurrency, thread_name_prefix="vl2v-send")
        self.in_flight: dict[Future, _Batch] = {}
        self.stop_requested = stop
        self.stop_reason: str | None = None
        self.stop_error: Exception | None = None
        self.account: str = client.usage().key  # the vendor account: recorded with every pending request

    def run(self) -> QueryReport:
        self.report.budget_used_before = self.report.budget_used = self.cache.totals().paid_images
        try:
            self._resolve_pending()
            self._buy_texts()
            self._buy_images()
        except KeyboardInterrupt:
            self._drain()
            self._refresh_totals()
            raise QueryStopped("interrupted; everything paid so far is saved", self.report) from None
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self._refresh_totals()
        if self._stopping() and self.stop_reason is not None:  # not the money cap: that is a normal end
            raise QueryStopped(self.stop_reason or "stopped", self.report, self.stop_error)
        return self.report

    # -- phase 1: what a crashed run left pending ------------------------------------------------------------

    def _resolve_pending(self) -> None:
        """Re-send, byte for byte and under their original keys, requests a crashed run sent but never committed;
        or, with `abandon_pending`, give them up and count them as possibly paid."""
        pending = self.cache.pending()
        if not pending:
            return
        if self.config.abandon_pending:
            self._give_up(pending, "given up with --abandon-pending")
            return
        others = sorted({r["account"] for r in pending.values() if r.get("account") not in (None, self.account)})
        if others:
            raise PendingForAnotherAccount(
                f"{self.cache.path} holds {len(pending)} request(s) sent with the key of vendor account "
                f"{', '.join(map(repr, others))}, not {self.account!r}. Run once more with that key to recover them "
                "free of charge, or pass --abandon-pending to give them up (counted as possibly paid)"
            )
        log.info("re-sending %d request(s) left pending by an interrupted run", len(pending))
        lost: dict[str, dict] = {}
        for key, request in pending.items():
            if self._stopping():
                break
            body = self.cache.pending_body(key)
            if request["kind"] == "texts":
                prompts = request["prompts"]
                answer = self._send(body or request_body(self.model, prompts), key, prompts)
                self._commit_texts(prompts, key, answer, resumed=True)
                if answer is not None and not answer.replayed and self._expired(request.get("sent_at")):
                    self._give_up({f"{key}:expired": request}, "sent longer ago than the vendor keeps answers")
                continue
            batch = self._resumed_batch(key, request, body)
            if batch is None:
                lost[key] = request
            else:
                self._submit(batch, record=False)
        self._drain()
        if lost:
            self._give_up(lost, "its files changed since it was sent, and a cache from before vl2v 0.2 kept no body")

    def _resumed_batch(self, key: str, request: dict, body: bytes | None) -> _Batch | None:
        meta = request["items"]
        if body is not None:
            inputs = json.loads(body)["input"]
            items = [_from_meta(m, i["image"]) for m, i in zip(meta, inputs, strict=True)]
            cost = self._images_cost(items)
            return _Batch(key, items, inputs, body, resumed=True, sent_at=request.get("sent_at"), cost=cost)
        # Before schema v3 no body was kept (nor were views bought): rebuild it from the files, if they are still
        # what was sent.
        size = _Views(0, int(self.card["image_size"][0]))
        items = [_inspect(ImageFile(m["path"], m["domain"], -1), self.dataset.root, None, set(), size)[0] for m in meta]
        if any(i.problem or i.key != m["key"] for i, m in zip(items, meta, strict=True)):
            return None
        inputs = [_image_input(i.url) for i in items]
        return _Batch(key, items, inputs, request_body(self.model, inputs), resumed=True, cost=self._images_cost(items))

    def _expired(self, sent_at: float | None) -> bool:
        """Whether a request sent at `sent_at` is older than the vendor keeps its answers for free replay."""
        ttl = self.card.get("idempotency_ttl_s")
        return sent_at is not None and ttl is not None and time.time() - sent_at > ttl

    def _give_up(self, requests: dict[str, dict], why: str) -> None:
        """Pending requests that cannot be recovered: each becomes an "unrecovered" ledger row at list price."""
        rows = []
        for key, request in requests.items():
            images, prompts = len(request.get("items", [])), request.get("prompts", [])
            tokens = _estimated_tokens(prompts)
            cost = images * self.price.max_image_cost() + self.price.text_cost(tokens)
            rows.append(
                LedgerRow("", key, images, len(prompts), tokens, round(cost, 9), time.time(), kind="unrecovered")
            )
        self.cache.record_unrecovered(rows)
        images, cost = sum(r.images for r in rows), sum(r.cost for r in rows)
        self.report.unrecovered_images += images
        self.report.paid_images += images
        self.report.cost += cost
        log.warning(
            "%d pending request(s) (%d images, %d texts) could not be recovered: %s. They may have been charged, so "
            "they count as paid: %.6f %s, and %d images against the budget",
            len(rows),
            images,
            sum(r.texts for r in rows),
            why,
            cost,
            self.price.currency,
            images,
        )

    # -- phase 2 and 3: buying ----------------------------------------------------------------------------------

    def _buy_texts(self) -> None:
        have = set(self.cache.texts())
        prompts = [p for p in all_prompts(self.dataset.class_prompts, self.dataset.anchors) if p not in have]
        self.report.texts_to_buy = len(prompts)
        for start in range(0, len(prompts), self.config.batch_size):
            if self._stopping():
                return
            batch = prompts[start : start + self.config.batch_size]
            if not self._affordable(self.price.text_cost(_estimated_tokens(batch))):
                return
            key, body = self._idempotency_key("texts", batch), request_body(self.model, batch)
            self.cache.add_pending(key, self._pending_record("texts", prompts=batch), body)
            self._commit_texts(batch, key, self._send(body, key, batch), resumed=False)

    def _buy_images(self) -> None:
        cache, config = self.cache, self.config
        paid = self.report.budget_used_before + self.report.paid_images
        order = _order(config, self.dataset, self.features, cache, paid, self.scores)
        views = _Views(config.views, int(self.card["image_size"][0]))
        files = _inspect_all(order, self.dataset.root, cache, set(cache.skipped()), config.read_workers, views)
        found: dict[str, list[str]] = {}
        batch: list[_Item] = []
        selection = _select(files, _budget_left(config.budget, paid))
        for units, status in _counted(selection, len(order), self.report, self.bought):
            if status == SKIP:
                self._skip(units[0], units[0].problem or "", "local")
            elif status == BUY:
                self.chosen.append(units[0].key)
                if len(batch) + len(units) > config.batch_size and batch:
                    self._submit(self._new_batch(batch))  # a file's views go in its own request, where they fit
                    batch = []
                batch += units
            else:
                found.setdefault(units[0].key, []).append(units[0].path)
            if self._stopping():
                break
            while len(batch) >= config.batch_size:
                self._submit(self._new_batch(batch[: config.batch_size]))
                batch = batch[config.batch_size :]
        if batch and not self._stopping():
            self._submit(self._new_batch(batch))
        self._drain()
        bought = [k for k in dict.fromkeys(self.chosen) if self.cache.has_image(k) and k in self.bought]
        if bought:
            self.cache.record_selection({
                "strategy": config.select, "seed": config.seed, "balanced": config.balanced,
                "features": self.features.student if self.features is not None else None,
                "budget": config.budget, "time": time.time(), "keys": bought,
            })  # fmt: skip
        if found:  # more paths for images already cached or bought in this run: free
            cache.add_paths({k: v for k, v in found.items() if cache.has_image(k)})

    def _new_batch(self, items: list[_Item]) -> _Batch:
        items = self._within_spend(items)
        inputs = [_image_input(i.url) for i in items]
        key = self._idempotency_key("images", [i.unit for i in items])
        return _Batch(key, items, inputs, request_body(self.model, inputs), cost=self._images_cost(items))

    def _images_cost(self, items: list[_Item]) -> float:
        """What `items` cost at the vendor's prices (per image, tiles, pixels: from each image's own size)."""
        return sum(self.price.image_cost(*i.pixels) for i in items)

    def _within_spend(self, items: list[_Item]) -> list[_Item]:
        """The first of `items` the money cap still pays for (all of them without a cap); the run stops after."""
        if self.config.max_spend is None:
            return items
        keep: list[_Item] = []
        more = 0.0
        for item in items:
            cost = self.price.image_cost(*item.pixels)
            if not self._affordable(more + cost, quiet=True):
                break
            keep.append(item)
            more += cost
        if len(keep) < len(items):
            self._affordable(float("inf"))  # stops the run, saying why
        return keep

    def _affordable(self, cost: float, quiet: bool = False) -> bool:
        """Whether the money cap (`--max-spend`, all runs) pays for `cost` more, counting what is in flight."""
        cap = self.config.max_spend
        if cap is None or self.spent_before + self.report.cost + self.in_flight_cost + cost <= cap + 1e-12:
            return True
        if not quiet:
            self.capped = True  # like the image budget: the run ends normally, what it bought is kept
            self.report.capped = f"the money cap of {cap:g} {self.price.currency} (--max-spend, all runs) is reached"
        return False

    # -- sending and committing -------------------------------------------------------------------------------

    def _idempotency_key(self, kind: str, contents: list[str]) -> str:
        digest = hashlib.sha256(f"vl2v:{kind}:{self.card['fingerprint']}:".encode())
        digest.update("\n".join(contents).encode())
        return f"vl2v-{kind}-{digest.hexdigest()[:40]}"

    def _pending_record(self, kind: str, **what: object) -> dict:
        return {"kind": kind, "account": self.account, "sent_at": time.time(), **what}

    def _send(self, body: bytes, key: str, prompts: list[str]) -> Embedded | None:
        """One text request with the client's retries; an error that ends the run is recorded, not raised."""
        try:
            return self.client.embed(body, key, count=len(prompts), dim=self.dim)
        except VendorError as e:
            self._refused(e, key)
        return None

    def _refused(self, error: VendorError, key: str) -> None:
        """A definite refusal charged nothing, so its pending record goes. An unreachable vendor might have
        charged, and an invalid answer was charged: their records stay, for the next run to re-send."""
        if not isinstance(error, VendorUnreachable | VendorAnswerInvalid):
            self.cache.drop_pending(key)
        self._stop(error)

    def _stopping(self) -> bool:
        """True once the run must send nothing more: an error ended it, or the caller asked it to stop."""
        if self.stop_requested.is_set() and self.stop_reason is None:
            self.stop_reason = self.report.stopped = "interrupted; everything paid so far is saved"
        return self.stop_reason is not None or self.capped

    def _stop(self, error: VendorError) -> None:
        if self.stop_reason is None:
            self.stop_reason = f"{_STOPS.get(type(error), 'the vendor refused a request')} ({error})"
            self.stop_error = error
            self.report.stopped = self.stop_reason

    def _submit(self, batch: _Batch, record: bool = True) -> None:
        """Record the batch as pending (with its body), send it on a worker, keep at most `concurrency` in flight."""
        if not batch.items:
            return  # the money cap left nothing of it
        if record:
            items = [i.meta() for i in batch.items]
            self.cache.add_pending(batch.key, self._pending_record("images", items=items), batch.body)
        self.in_flight_cost += batch.cost
        self.in_flight[self.pool.submit(self._send_images, batch)] = batch
        while len(self.in_flight) >= self.config.concurrency:
            self._collect(next(iter(self.in_flight)))

    def _send_images(self, batch: _Batch) -> tuple[list[_Part], list[tuple[_Item, str]], VendorError | None]:
        """Send `batch` (on a worker thread). When the vendor blames one item, drop it and send the rest; when it
        finds the body too large, send each half; when the balance pays for only some of it, send those and stop.
        Each new request's key derives from its content, so a run that crashes half-way and re-sends the original
        request takes the same steps and gets free replays.

        Returns:
            The answered parts, the items the vendor refused, and the error that must end the run once these are
            committed (the balance ran out), if any.
        """
        rejected: list[tuple[_Item, str]] = []
        parts: list[_Part] = []
        todo = [(batch.items, batch.inputs, batch.body, batch.key)]
        while todo:
            items, inputs, body, key = todo.pop(0)
            if not items:
                continue
            try:
                parts.append(self._send_part(items, inputs, body, key))
            except QuotaExhausted as e:
                affordable = self._affordable_images() if len(items) > 1 else 0
                if not 0 < affordable < len(items):
                    raise
                log.info(
                    "the balance pays for %d of these %d images: buying those, then stopping", affordable, len(items)
                )
                return (
                    [*parts, self._send_part(*self._retry_part(items[:affordable], inputs[:affordable]))],
                    rejected,
                    e,
                )
            except VendorError as e:
                blamed = e.item if e.item is not None and e.item < len(items) else None
                if blamed is not None and e.status in (400, 413):
                    rejected.append((items[blamed], f"rejected by the vendor: {e}"))
                    # A file the vendor refuses takes its views with it: no view is kept without its image.
                    gone = items[blamed].key if items[blamed].view == 0 else None
                    keep = [j for j in range(len(items)) if j != blamed and items[j].key != gone]
                    todo.insert(0, self._retry_part([items[j] for j in keep], [inputs[j] for j in keep]))
                elif e.status == 413 and len(items) > 1:
                    log.info("the vendor found a %d-image request too large; sending it in halves", len(items))
                    half = len(items) // 2
                    todo[:0] = [
                        self._retry_part(items[:half], inputs[:half]),
                        self._retry_part(items[half:], inputs[half:]),
                    ]
                else:
                    raise
        return parts, rejected, None

    def _send_part(self, items: list[_Item], inputs: list[dict], body: bytes, key: str) -> _Part:
        return _Part(key, items, self.client.embed(body, key, count=len(items), dim=self.dim))

    def _affordable_images(self) -> int:
        """How many images the balance still pays for, at the listed price (in nano-units: 4 x 0.0001 fits
        0.0004 exactly)."""
        price = round(self.card["pricing"]["per_image"] * 1e9)
        balance = round(self.client.usage().balance * 1e9)
        return balance // price if price > 0 else 0

    def _retry_part(self, items: list[_Item], inputs: list[dict]) -> tuple[list[_Item], list[dict], bytes, str]:
        return items, inputs, request_body(self.model, inputs), self._idempotency_key("images", [i.unit for i in items])

    def _collect(self, future: Future) -> None:
        batch = self.in_flight[future]
        self.in_flight_cost -= batch.cost
        try:
            parts, rejected, ended = future.result()  # an interrupt here leaves it in flight, for _drain
        except VendorError as e:
            del self.in_flight[future]
            self._refused(e, batch.key)
            return
        del self.in_flight[future]
        if ended is not None:
            self._stop(ended)
        for item, reason in rejected:
            self._skip(item, reason, "vendor")
        for part in parts:
            row = self._ledger_row(part.answer, part.key, batch.resumed)
            answered = list(zip(part.items, part.answer.vectors, strict=True))
            self.cache.commit_images(
                {i.key: (v, [i.path]) for i, v in answered if i.view == 0},
                row,
                views={(i.key, i.view): (v, i.params) for i, v in answered if i.view},
            )
            self._count(row, domains=[i.domain for i in part.items])
            self.bought.update(i.key for i in part.items)
        if batch.key not in {p.key for p in parts}:
            self.cache.drop_pending(batch.key)  # answered under other keys (or every item was rejected)
        if parts and self._expired(batch.sent_at) and not any(p.answer.replayed for p in parts):
            # The vendor no longer kept an answer for it: if the crashed run's request was charged, that charge
            # is lost (this one was charged again). Counted, not assumed away.
            lost = {"kind": "images", "items": [{"key": i.key} for i in batch.items]}
            self._give_up({f"{batch.key}:expired": lost}, "sent longer ago than the vendor keeps answers")

    def _commit_texts(self, prompts: list[str], key: str, answer: Embedded | None, resumed: bool) -> None:
        if answer is None:
            return
        row = self._ledger_row(answer, key, resumed)
        self.cache.commit_texts(dict(zip(prompts, answer.vectors, strict=True)), row)
        self._count(row, domains=[])

    def _ledger_row(self, answer: Embedded, key: str, resumed: bool) -> LedgerRow:
        """A replay answers a charge this cache made when the request was left by a crashed run or an earlier attempt
        may have reached the vendor; otherwise it answers someone else's charge, and was free to this cache."""
        free = answer.replayed and not resumed and not answer.maybe_sent_before
        return LedgerRow(
            request_id=answer.request_id,
            idempotency_key=key,
            images=answer.images,
            texts=answer.texts,
            tokens=answer.tokens,
            cost=0.0 if free else answer.cost,
            time=time.time(),
            replayed=answer.replayed,
            kind="free" if free else "paid",
        )

    def _count(self, row: LedgerRow, domains: list[str]) -> None:
        if row.kind == "free":
            self.report.free_images += row.images
        else:
            self.report.paid_images += row.images
            self.report.paid_texts += row.texts
        self.report.cost += row.cost
        self.report.replayed_requests += row.replayed
        self.report.budget_used = self.report.budget_used_before + self.report.paid_images
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
        totals: LedgerTotals = self.cache.totals()
        self.report.budget_used = totals.paid_images
        self.report.total_cost = totals.cost
