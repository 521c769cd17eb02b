"""`vl2v query`: buy teacher embeddings on a budget and keep every answer in the cache."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cache.client import RetryPolicy, TeacherClient
from cache.datasets import dataset_names
from cache.query import QueryConfig, QueryReport, QueryStopped, run_query
from cache.selection import STRATEGIES

from . import exit_codes
from .errors import exit_code_for, graceful_interrupt, reports_errors, stderr
from .options import (
    DEFAULT_CACHE,
    DEFAULT_DATA,
    DEFAULT_TEACHER,
    ApiKeyFile,
    CacheDir,
    DataDir,
    Json,
    TeacherUrl,
    api_key,
)
from .progress import QueryProgress


@reports_errors
def query(
    dataset: Annotated[str, typer.Option(help=f"one of {dataset_names()}")],
    data_dir: DataDir = DEFAULT_DATA,
    cache: CacheDir = DEFAULT_CACHE,
    teacher_url: TeacherUrl = DEFAULT_TEACHER,
    api_key_file: ApiKeyFile = None,
    budget: Annotated[
        int | None, typer.Option(help="cap on paid images in the cache's ledger, all runs together")
    ] = None,
    select: Annotated[
        str, typer.Option(help=f"{' or '.join(STRATEGIES)}: which images the budget buys")
    ] = "stratified",
    seed: Annotated[int, typer.Option(help="seed of the selection order")] = 0,
    exclude_domain: Annotated[list[str] | None, typer.Option(help="never send this domain (repeatable)")] = None,
    batch_size: Annotated[int, typer.Option(help="images per request")] = 32,
    concurrency: Annotated[int, typer.Option(help="requests in flight")] = 4,
    max_retries: Annotated[int, typer.Option(help="attempts per request on 429, 5xx and timeouts")] = 8,
    wait: Annotated[bool, typer.Option(help="wait for another writer of the cache instead of failing")] = False,
    abandon_pending: Annotated[
        bool,
        typer.Option(
            help="give up requests a crashed run left pending (counted as possibly paid) instead of re-sending them"
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option(help="print what would be bought and what it would cost; buy nothing")
    ] = False,
    json_out: Json = False,
) -> None:
    """Buy teacher embeddings for the images the budget allows; pay once per image, keep every answer.

    Text prompts for every method are bought once. Re-running never pays twice: cached images are skipped, and
    requests a crash left unanswered are replayed by the vendor for free.

    Exit codes: 3 balance exhausted, 4 vendor unreachable, 5 key refused (everything paid is saved in each
    case), 130 interrupted.
    """
    config = QueryConfig(
        dataset=dataset,
        data_dir=data_dir,
        cache_dir=cache,
        budget=budget,
        select=select,
        seed=seed,
        exclude_domains=tuple(exclude_domain or ()),
        batch_size=batch_size,
        concurrency=concurrency,
        wait_for_writer=wait,
        abandon_pending=abandon_pending,
    )
    client = TeacherClient(teacher_url, api_key(api_key_file), retry=RetryPolicy(attempts=max_retries))
    code = exit_codes.OK
    with QueryProgress(enabled=not json_out) as progress, graceful_interrupt() as stop:
        try:
            report = run_query(config, client, dry_run=dry_run, on_progress=progress.update, stop=stop)
        except QueryStopped as stop:
            report = stop.report
            code = exit_codes.INTERRUPTED if stop.cause is None else exit_code_for(stop.cause)
            stderr.print(f"[red]stopped:[/red] {stop}")
    if json_out:
        typer.echo(json.dumps(report.as_dict()))
    else:
        _print_summary(report)
    raise typer.Exit(code)


def _print_summary(report: QueryReport) -> None:
    console = Console()
    title = "dry run: nothing was bought" if report.dry_run else "query"
    table = Table(title=f"{title} — {report.dataset} with {report.teacher}", show_header=False)
    budget = "none" if report.budget is None else str(report.budget)
    rows = [
        (
            "images to buy" if report.dry_run else "images paid",
            str(report.to_buy if report.dry_run else report.paid_images),
        ),
        ("  by domain", ", ".join(f"{d} {n}" for d, n in sorted(report.by_domain.items())) or "-"),
        (
            "texts to buy" if report.dry_run else "texts paid",
            str(report.texts_to_buy if report.dry_run else report.paid_texts),
        ),
        ("already cached", str(report.already_cached)),
        ("duplicates (paid once)", str(report.duplicates)),
        ("free replays (bought before with this key)", str(report.free_images)),
        ("skipped", str(report.skipped)),
        ("left unbought (budget)", str(report.unbought)),
        ("estimated cost" if report.dry_run else "cost of this run", f"{report.cost:.6f} {report.currency}"),
        ("budget used (all runs)", f"{report.budget_used} / {budget} images"),
    ]
    if report.unrecovered_images:
        rows.append(("possibly paid, not recovered", f"{report.unrecovered_images} images (in the cost and budget)"))
    if not report.dry_run:
        rows += [
            ("total cost (all runs)", f"{report.total_cost:.6f} {report.currency}"),
            ("replayed requests", str(report.replayed_requests)),
        ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
