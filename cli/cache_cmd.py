"""`vl2v cache info | verify | export`: look into a cache without spending anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from cache.client import RetryPolicy, TeacherClient, VendorError
from cache.errors import InvalidOption
from cache.export import FORMATS, export_npz
from cache.inspect import CacheInfo, cache_info, verify_cache
from cache.store import SCHEMA_VERSION, EmbeddingCache
from common.schema import UsageReport

from . import exit_codes
from .errors import reports_errors, say, stdout
from .help import CONTEXT, Command, Group
from .options import DEFAULT_CACHE, ApiKeyFile, CacheAlias, CacheDir, Json, api_key, choices, flag, one_cache
from .progress import counted, money

cache_app = typer.Typer(
    help="Inspect, verify and export an embedding cache.",
    no_args_is_help=True,
    rich_markup_mode=None,
    cls=Group,
    context_settings=CONTEXT,
)


@cache_app.command("info", cls=Command)
@reports_errors
def info(
    path: CacheAlias = None,
    cache: CacheDir = DEFAULT_CACHE,
    teacher_url: Annotated[
        str | None,
        typer.Option(
            envvar="VL2V_TEACHER_URL",
            metavar="URL",
            help="vendor to reconcile with; your key is sent only to a URL you give here or in the environment",
        ),
    ] = None,
    api_key_file: ApiKeyFile = None,
    json_out: Json = False,
) -> None:
    """What a cache holds and what it cost.

    Counts per domain and class, spend, budget used, teacher and skipped items; beside the vendor's own usage
    when you give its URL and your key."""
    with EmbeddingCache.open(one_cache(path, cache)) as store:
        summary = cache_info(store)
    # The key goes only where the user pointed: never to the URL recorded in the cache, which anyone who wrote
    # the cache (or edited it) chose.
    usage = _vendor_usage(teacher_url, api_key_file, summary.teacher.get("url"))
    if json_out:
        vendor = {"error": usage} if isinstance(usage, str) else usage.model_dump()
        typer.echo(json.dumps(summary.to_json() | {"vendor": vendor}))
        return
    table = Table(title=f"cache {summary.cache}", show_header=False)
    teacher, totals = summary.teacher, summary.totals
    for name, value in [
        ("dataset", f"{summary.dataset} ({summary.data_root})"),
        ("teacher", f"{teacher['id']} at {teacher['url']} (fingerprint {str(teacher['fingerprint'])[:12]})"),
        ("image embeddings", str(summary.images)),
        ("  by domain", ", ".join(f"{d} {n}" for d, n in summary.images_by_domain.items())),
        ("text embeddings", str(summary.texts)),
        (
            "paid (cache ledger)",
            f"{totals.paid_images} images, {totals.paid_texts} texts, "
            f"{money(totals.cost, summary.currency)} in {totals.requests} requests",
        ),
        ("free replays", f"{totals.free_images} images (bought before under this key)"),
        ("skipped", counted(summary.skipped, summary.skipped_reasons)),
        ("pending requests", str(summary.pending_requests)),
    ]:
        table.add_row(name, value)
    if totals.unrecovered_images:
        table.add_row(
            "possibly paid, not recovered",
            f"{totals.unrecovered_images} images, {money(totals.unrecovered_cost, summary.currency)} "
            "(in the paid figures above)",
        )
    if summary.selection:
        table.add_row("chosen by", "; ".join(_chosen(run) for run in summary.selection))
    if totals.probe_requests:
        table.add_row(
            "teacher probes",
            f"{totals.probe_requests}, {money(totals.probe_cost, summary.currency)} (in the paid figures above; "
            f"{summary.teacher.get('vendor')} publishes no fingerprint)",
        )
    if isinstance(usage, str):
        table.add_row("vendor", f"not reconciled: {usage}")
    else:
        table.add_row(
            "vendor (this key)",
            f"{usage.images} images, {usage.texts} texts, spent "
            f"{money(usage.spent, usage.currency)}, balance {money(usage.balance, usage.currency)}",
        )
    stdout.print(table)
    stdout.print(_domain_by_class(summary))
    for domain, name in summary.empty_cells():
        say("warning:", f"no image of class {name!r} in domain {domain!r} is cached", "yellow")


def _domain_by_class(summary: CacheInfo) -> Table:
    """Images per class (rows) and domain (columns); an empty cell is a class the student never sees there."""
    domains = list(summary.images_by_class)
    table = Table(title="images by domain and class")
    for column in ("class", *domains, "all"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name in summary.classes:
        counts = [summary.images_by_class[d].get(name, 0) for d in domains]
        table.add_row(name, *(Text(str(n), style="" if n else "bold red") for n in counts), str(sum(counts)))
    return table


def _chosen(run: dict) -> str:
    """One buying run's choice: "kcenter (seed 0, balanced, features tf_efficientnet_lite0-...-64): 120 images"."""
    how = [f"seed {run['seed']}"] + (["balanced"] if run.get("balanced") else [])
    how += [f"features {run['features']}"] if run.get("features") else []
    return f"{run['strategy']} ({', '.join(how)}): {len(run['keys'])} images"


def _vendor_usage(url: str | None, key_file: Path | None, recorded: str | None) -> UsageReport | str:
    """The vendor's account of this key, or why there is none."""
    if not url:
        hint = f" (the cache was bought from {recorded})" if recorded else ""
        return f"pass --teacher-url (or set VL2V_TEACHER_URL) to reconcile with the vendor{hint}"
    key = api_key(key_file, required=False)
    if not key:
        return "no API key (VL2V_API_KEY or --api-key-file)"
    client = TeacherClient(url, key, timeout=(2.0, 5.0), retry=RetryPolicy(attempts=1))
    try:
        return client.usage()
    except VendorError as e:
        return str(e)


@cache_app.command("verify", cls=Command)
@reports_errors
def verify(path: CacheAlias = None, cache: CacheDir = DEFAULT_CACHE, json_out: Json = False) -> None:
    """Check that a cache is whole; exit 1 listing every problem if not.

    Every embedding matches its checksum, is finite, unit-norm and of the recorded dim; every paid image is
    present; nothing is left pending."""
    path = one_cache(path, cache)
    try:
        with EmbeddingCache.open(path) as store:
            problems = verify_cache(store)
    except Exception as e:  # an unreadable or corrupted LMDB file is a verification failure too
        problems = [f"cannot read the cache: {type(e).__name__}: {e}"]
    if json_out:
        typer.echo(json.dumps({"cache": str(path), "ok": not problems, "problems": problems}))
    elif problems:
        for problem in problems:
            typer.echo(f"FAIL {problem}")
        typer.echo(f"{len(problems)} problem(s) in {path}")
    else:
        typer.echo(f"ok: {path} is whole")
    raise typer.Exit(exit_codes.ERROR if problems else exit_codes.OK)


@cache_app.command("upgrade", cls=Command)
@reports_errors
def upgrade(path: CacheAlias = None, cache: CacheDir = DEFAULT_CACHE) -> None:
    """Rewrite a cache of an older vl2v in this version's format, in place.

    Every embedding is kept, bit for bit."""
    path = one_cache(path, cache)
    with EmbeddingCache.open(path, write=True) as store:
        counts = store.counts()
    typer.echo(f"ok: {path} is cache schema v{SCHEMA_VERSION} ({counts['image']} images, {counts['text']} texts)")


@cache_app.command("export", cls=Command)
@reports_errors
def export(
    path: CacheAlias = None,
    cache: CacheDir = DEFAULT_CACHE,
    out: Annotated[Path, typer.Option(metavar="FILE", help="file to write")] = Path("cache.npz"),
    format: Annotated[str, typer.Option(help=choices(FORMATS))] = "npz",
    overwrite: Annotated[bool, flag("overwrite", "replace --out if it exists")] = False,
    json_out: Json = False,
) -> None:
    """Write a cache as plain arrays, for users who want no LMDB.

    Embeddings, paths, domains, labels, prompts and text embeddings, written atomically."""
    if format not in FORMATS:
        raise InvalidOption(f"--format {format!r} is not one of {list(FORMATS)}")
    with EmbeddingCache.open(one_cache(path, cache)) as store:
        written = export_npz(store, out, overwrite=overwrite)
    typer.echo(
        json.dumps(written)
        if json_out
        else f"wrote {written['rows']} rows ({written['images']} images, {written['texts']} texts) to {written['out']}"
    )
