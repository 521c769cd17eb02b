"""`vl2v data download`: fetch a benchmark dataset in DomainBed layout."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

from cache.data.datasets import REGISTRY
from cache.data.download import Limits, download_dataset

from .errors import reports_errors, say, stderr
from .help import CONTEXT, Command, Group
from .options import DEFAULT_DATA, DataDir, Json, choices

data_app = typer.Typer(
    help="Get the benchmark datasets.", no_args_is_help=True, rich_markup_mode=None, cls=Group, context_settings=CONTEXT
)


@data_app.command("download", cls=Command)
@reports_errors
def download(
    name: Annotated[str, typer.Argument(metavar="NAME", help=choices([n for n, s in REGISTRY.items() if s.archives]))],
    data_dir: DataDir = DEFAULT_DATA,
    mirror: Annotated[str | None, typer.Option(metavar="URL", help="base URL serving the same archive names")] = None,
    max_files: Annotated[int, typer.Option(help="refuse an archive holding more files")] = Limits().max_files,
    max_gb: Annotated[
        float, typer.Option(metavar="GIB", help="refuse an archive larger than this, downloaded or unpacked")
    ] = Limits().max_bytes / 2**30,
    json_out: Json = False,
) -> None:
    """Download a benchmark dataset in DomainBed layout.

    The public archives of NAME are checked and unpacked into DATA_DIR/<Folder>/<domain>/<class>/.
    HTTPS is tried first; an archive over the size or file-count limit is refused before anything is unpacked."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=stderr,
        disable=json_out or not stderr.is_terminal,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def show(file: str, done: int, total: int | None) -> None:
            if file not in tasks:
                tasks[file] = progress.add_task(file, total=total)
            progress.update(tasks[file], completed=done)

        limits = Limits(max_bytes=int(max_gb * 2**30), max_files=max_files)
        result = download_dataset(name, data_dir, mirror=mirror, on_progress=show, limits=limits)
    if json_out:
        typer.echo(json.dumps(asdict(result)))
        return
    counts = ", ".join(f"{d} {n}" for d, n in result.images_by_domain.items())
    typer.echo(f"{name}: {sum(result.images_by_domain.values())} images in {result.folder} ({counts})")
    for warning in result.warnings:
        say("warning:", warning, "yellow")
