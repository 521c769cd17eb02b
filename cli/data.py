"""`vl2v data download`: fetch a benchmark dataset in DomainBed layout."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from cache.datasets import REGISTRY
from cache.download import Limits, download_dataset

from .errors import reports_errors, stderr
from .options import DEFAULT_DATA, DataDir, Json

data_app = typer.Typer(help="Get the benchmark datasets.", no_args_is_help=True)


@data_app.command("download")
@reports_errors
def download(
    name: Annotated[str, typer.Argument(help=f"one of {[n for n, s in REGISTRY.items() if s.archives]}")],
    data_dir: DataDir = DEFAULT_DATA,
    mirror: Annotated[str | None, typer.Option(help="base URL serving the same archive names")] = None,
    max_files: Annotated[int, typer.Option(help="refuse an archive holding more files")] = Limits().max_files,
    max_gb: Annotated[
        float, typer.Option(help="refuse an archive larger than this, downloaded or unpacked (GiB)")
    ] = Limits().max_bytes / 2**30,
    json_out: Json = False,
) -> None:
    """Download the public archives of NAME, check and unpack them into DATA_DIR/<Folder>/<domain>/<class>/.

    HTTPS is tried first; an archive over the size or file-count limit is refused before anything is unpacked."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=stderr,
        disable=json_out or not stderr.is_terminal,
    ) as progress:
        tasks: dict[str, int] = {}

        def show(file: str, done: int, total: int | None) -> None:
            if file not in tasks:
                tasks[file] = progress.add_task(file, total=total)
            progress.update(tasks[file], completed=done)

        limits = Limits(max_bytes=int(max_gb * 2**30), max_files=max_files)
        result = download_dataset(name, data_dir, mirror=mirror, on_progress=show, limits=limits)
    if json_out:
        typer.echo(json.dumps(result))
        return
    counts = ", ".join(f"{d} {n}" for d, n in result["images_by_domain"].items())
    typer.echo(f"{name}: {sum(result['images_by_domain'].values())} images in {result['folder']} ({counts})")
    for warning in result["warnings"]:
        stderr.print(f"[yellow]warning:[/yellow] {warning}")
