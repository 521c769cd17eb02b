"""`vl2v cache info | verify | export`: look into a cache without spending anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cache.client import RetryPolicy, TeacherClient, VendorError
from cache.export import FORMATS, export_npz
from cache.inspect import cache_info, verify_cache
from cache.store import SCHEMA_VERSION, EmbeddingCache

from . import exit_codes
from .errors import reports_errors
from .options import DEFAULT_CACHE, ApiKeyFile, CacheArg, Json, api_key

cache_app = typer.Typer(help="Inspect, verify and export an embedding cache.", no_args_is_help=True)


@cache_app.command("info")
@reports_errors
def info(
    path: CacheArg = DEFAULT_CACHE,
    teacher_url: Annotated[
        str | None,
        typer.Option(
            envvar="VL2V_TEACHER_URL",
            help="vendor to reconcile with; your key is sent only to a URL you give here or in the environment",
        ),
    ] = None,
    api_key_file: ApiKeyFile = None,
    json_out: Json = False,
) -> None:
    """Counts per domain and class, spend, budget used, teacher, skipped items; beside the vendor's own usage
    when the vendor is reachable with your key."""
    with EmbeddingCache.open(path) as cache:
        summary = cache_info(cache)
    # The key goes only where the user pointed: never to the URL recorded in the cache, which anyone who wrote
    # the cache (or edited it) chose.
    summary["vendor"] = _vendor_usage(teacher_url, api_key_file, summary["teacher"].get("url"))
    if json_out:
        typer.echo(json.dumps(summary))
        return
    console = Console()
    table = Table(title=f"cache {summary['cache']}", show_header=False)
    teacher = summary["teacher"]
    for name, value in [
        ("dataset", f"{summary['dataset']} ({summary['data_root']})"),
        ("teacher", f"{teacher['id']} at {teacher['url']} (fingerprint {str(teacher['fingerprint'])[:12]})"),
        ("image embeddings", str(summary["images"])),
        ("  by domain", ", ".join(f"{d} {n}" for d, n in summary["images_by_domain"].items())),
        ("text embeddings", str(summary["texts"])),
        (
            "paid (cache ledger)",
            f"{summary['paid_images']} images, {summary['paid_texts']} texts, "
            f"{summary['cost']:.6f} {summary['currency']} in {summary['requests']} requests",
        ),
        ("skipped", f"{summary['skipped']} {summary['skipped_reasons'] or ''}"),
        ("pending requests", str(summary["pending_requests"])),
    ]:
        table.add_row(name, value)
    vendor = summary["vendor"]
    if "error" in vendor:
        table.add_row("vendor", f"not reconciled: {vendor['error']}")
    else:
        table.add_row(
            "vendor (this key)",
            f"{vendor['images']} images, {vendor['texts']} texts, spent "
            f"{vendor['spent']:.6f}, balance {vendor['balance']:.6f}",
        )
    console.print(table)


def _vendor_usage(url: str | None, key_file: Path | None, recorded: str | None) -> dict:
    if not url:
        hint = f" (the cache was bought from {recorded})" if recorded else ""
        return {"error": f"pass --teacher-url (or set VL2V_TEACHER_URL) to reconcile with the vendor{hint}"}
    key = api_key(key_file, required=False)
    if not key:
        return {"error": "no API key (VL2V_API_KEY or --api-key-file)"}
    client = TeacherClient(url, key, timeout=(2.0, 5.0), retry=RetryPolicy(attempts=1))
    try:
        return client.usage()
    except VendorError as e:
        return {"error": str(e)}


@cache_app.command("verify")
@reports_errors
def verify(path: CacheArg = DEFAULT_CACHE, json_out: Json = False) -> None:
    """Check that every item has a finite, unit-norm embedding of the recorded dim and that every paid image is
    present. Exits 0 only when the cache is whole; otherwise lists the problems and exits 1."""
    try:
        with EmbeddingCache.open(path) as cache:
            problems = verify_cache(cache)
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


@cache_app.command("upgrade")
@reports_errors
def upgrade(path: CacheArg = DEFAULT_CACHE) -> None:
    """Bring a cache written by an older vl2v to this version's format, in place, keeping every embedding."""
    with EmbeddingCache.open(path, write=True) as cache:
        counts = cache.counts()
    typer.echo(f"ok: {path} is cache schema v{SCHEMA_VERSION} ({counts['image']} images, {counts['text']} texts)")


@cache_app.command("export")
@reports_errors
def export(
    path: CacheArg = DEFAULT_CACHE,
    out: Annotated[Path, typer.Option(help="file to write")] = Path("cache.npz"),
    format: Annotated[str, typer.Option(help=f"one of {list(FORMATS)}")] = "npz",
    overwrite: Annotated[bool, typer.Option(help="replace --out if it exists")] = False,
    json_out: Json = False,
) -> None:
    """Write the cache as plain arrays (embeddings, paths, domains, labels, prompts, text embeddings)."""
    if format not in FORMATS:
        raise ValueError(f"--format {format!r} is not one of {list(FORMATS)}")
    with EmbeddingCache.open(path) as cache:
        written = export_npz(cache, out, overwrite=overwrite)
    typer.echo(
        json.dumps(written)
        if json_out
        else f"wrote {written['rows']} rows ({written['images']} images, {written['texts']} texts) to {written['out']}"
    )
