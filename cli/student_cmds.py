"""Commands that use what `vl2v distill` and `vl2v query` left behind: zeroshot, evaluate, predict, report.

Modules that import torch are imported inside the commands that need them, so the rest of `vl2v` starts fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cache.data.prompts import TEMPLATES
from cache.errors import InvalidOption
from cache.store import EmbeddingCache
from student.report import chart, markdown
from student.report import collect as collect_runs
from student.results import ZeroShot

from . import exit_codes
from .errors import reports_errors, say
from .options import DEFAULT_CACHE, CacheDir, Device, Json, Workers, choices


def teacher_zeroshot(cache: Path, templates: str = "photo") -> ZeroShot:
    """The teacher's zero-shot accuracy on what `cache` holds, with a warning on stderr when it is near chance
    (`zeroshot`, and `query` after buying). Imports torch: call it only when a command runs."""
    from student.zeroshot import zeroshot_accuracy

    with EmbeddingCache.open(cache) as store:
        result = zeroshot_accuracy(store, templates)
        dataset = store.bound_dataset()["name"]
    warning = result.warning(dataset)
    if warning:
        say("warning:", warning, "yellow")
    return result


@reports_errors
def zeroshot(
    cache: CacheDir = DEFAULT_CACHE,
    templates: Annotated[str, typer.Option(metavar="SET", help=f"prompt set, {choices(list(TEMPLATES))}")] = "photo",
    json_out: Json = False,
) -> None:
    """The teacher's own zero-shot accuracy per domain, free.

    Computed from the cached embeddings: no query is made."""
    result = teacher_zeroshot(cache, templates)
    if json_out:
        typer.echo(json.dumps(result.to_json()))
        return
    for domain, acc in result.accuracy.items():
        typer.echo(f"{domain:>16}  {100 * acc:5.1f}%  ({result.images[domain]} images)")
    typer.echo(f"{'mean':>16}  {100 * result.mean:5.1f}%  (chance {100 * result.chance:.1f}%)")


@reports_errors
def evaluate(
    run: Annotated[
        Path,
        typer.Argument(metavar="RUN", help="a distill run folder, one model.safetensors, or a `vl2v export` .onnx"),
    ],
    data_dir: Annotated[
        Path, typer.Option(metavar="DIR", help="dataset folder to evaluate on (any domains, same classes)")
    ],
    device: Device = "auto",
    workers: Workers = 2,
    json_out: Json = False,
) -> None:
    """Test saved students on any dataset folder.

    Every student in RUN is evaluated on every domain folder under --data-dir."""
    from student.evaluate import evaluate_model, find_models

    results = [evaluate_model(m, data_dir, device=device, workers=workers) for m in find_models(run)]
    if json_out:
        typer.echo(json.dumps({"results": [r.to_json() for r in results]}))
        return
    for r in results:
        typer.echo(r.model)
        for domain, acc in r.accuracy.items():
            typer.echo(f"  {domain:>16}  {100 * acc:5.1f}%")


@reports_errors
def predict(
    run: Annotated[
        Path,
        typer.Argument(
            metavar="RUN",
            help="a distill run folder (its first model), one model.safetensors, or a `vl2v export` .onnx",
        ),
    ],
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE", help="image files")],
    top_k: Annotated[int, typer.Option(metavar="K", help="classes to show per image")] = 3,
    device: Device = "auto",
    json_out: Json = False,
) -> None:
    """Print the top-k classes of each image."""
    from student.evaluate import find_models, predict_images

    model = find_models(run)[0]
    results = predict_images(model, images, top_k=top_k, device=device)
    if json_out:
        typer.echo(json.dumps({"model": str(model), "predictions": [r.to_json() for r in results]}))
    for r in results if not json_out else []:
        if r.error is not None:
            say("error:", f"{r.image}: {r.error}", "red")
        else:
            typer.echo(f"{r.image}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in r.top))
    if any(r.error is not None for r in results):
        raise typer.Exit(exit_codes.ERROR)


@reports_errors
def report(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN", help="distill run folders, or a sweep's folder")],
    out: Annotated[Path, typer.Option(metavar="FILE", help="Markdown file to write")] = Path("report.md"),
    chart_path: Annotated[Path, typer.Option("--chart", metavar="FILE", help="PNG to write")] = Path("report.png"),
    selection: Annotated[
        str | None,
        typer.Option(
            metavar="HOW",
            help="DomainBed model selection: iid (training-domain validation), loo (leave-one-domain-out) or "
            "oracle  [default: iid for a sweep; each run's final model otherwise]",
        ),
    ] = None,
    json_out: Json = False,
) -> None:
    """One table of several runs, as Markdown and a chart.

    Methods x target domains: OOD accuracy, mean ± standard error over trials. For a sweep (or with
    --selection), DomainBed's model selection picks each run's hyper-parameters and checkpoint, and the table
    is also written as LaTeX (.tex) and JSON (.json) beside --out."""
    from student.collect import collect, latex, read_records, table_png
    from student.collect import markdown as sweep_markdown

    is_sweep = any((run / "sweep.json").is_file() for run in runs)
    if selection is None and not is_sweep:
        collected = collect_runs(runs)
        text = markdown(collected)
        out.write_text(text)
        chart(collected, chart_path)
        typer.echo(json.dumps(collected) if json_out else text + f"\nwrote {out} and {chart_path}")
        return
    records = [r for run in runs for r in read_records(run)]
    if not records:
        raise InvalidOption(f"no results.jsonl under {', '.join(map(str, runs))}")
    collected = collect(records, selection or "iid")
    text = sweep_markdown(collected)
    out.write_text(text)
    out.with_suffix(".tex").write_text(latex(collected))
    out.with_suffix(".json").write_text(json.dumps(collected, indent=2))
    table_png(collected, chart_path)
    typer.echo(
        json.dumps(collected)
        if json_out
        else text + f"\nwrote {out}, {out.with_suffix('.tex')}, {out.with_suffix('.json')} and {chart_path}"
    )
