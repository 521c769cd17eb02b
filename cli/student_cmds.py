"""Commands that use what `vl2v distill` and `vl2v query` left behind: zeroshot, evaluate, predict, report.

Modules that import torch are imported inside the commands that need them, so the rest of `vl2v` starts fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cache.prompts import TEMPLATES
from cache.store import EmbeddingCache
from student.report import chart, collect, markdown

from .errors import reports_errors
from .options import DEFAULT_CACHE, CacheDir, Json


@reports_errors
def zeroshot(
    cache: CacheDir = DEFAULT_CACHE,
    templates: Annotated[str, typer.Option(help=f"prompt set: one of {list(TEMPLATES)}")] = "photo",
    json_out: Json = False,
) -> None:
    """The teacher's own zero-shot accuracy per domain, from cached embeddings: no query, no cost."""
    from student.zeroshot import zeroshot_accuracy

    with EmbeddingCache.open(cache) as store:
        result = zeroshot_accuracy(store, templates)
    if json_out:
        typer.echo(json.dumps(result))
        return
    for domain, acc in result["accuracy"].items():
        typer.echo(f"{domain:>16}  {100 * acc:5.1f}%  ({result['images'][domain]} images)")
    typer.echo(f"{'mean':>16}  {100 * result['mean']:5.1f}%")


@reports_errors
def evaluate(
    run: Annotated[Path, typer.Argument(help="a distill run folder, or one model.safetensors")],
    data_dir: Annotated[Path, typer.Option(help="dataset folder to evaluate on (any domains, same classes)")],
    device: Annotated[str, typer.Option()] = "auto",
    workers: Annotated[int, typer.Option()] = 2,
    json_out: Json = False,
) -> None:
    """Re-evaluate saved students on every domain folder under DATA_DIR."""
    from student.evaluate import evaluate_model, find_models

    results = [evaluate_model(m, data_dir, device=device, workers=workers) for m in find_models(run)]
    if json_out:
        typer.echo(json.dumps({"results": results}))
        return
    for r in results:
        typer.echo(r["model"])
        for domain, acc in r["accuracy"].items():
            typer.echo(f"  {domain:>16}  {100 * acc:5.1f}%")


@reports_errors
def predict(
    run: Annotated[Path, typer.Argument(help="a distill run folder (its first model) or one model.safetensors")],
    images: Annotated[list[Path], typer.Argument(help="image files")],
    top_k: Annotated[int, typer.Option(help="classes to show per image")] = 3,
    device: Annotated[str, typer.Option()] = "auto",
    json_out: Json = False,
) -> None:
    """Print the top-k classes of each image."""
    from student.evaluate import find_models, predict_images

    model = find_models(run)[0]
    results = predict_images(model, images, top_k=top_k, device=device)
    if json_out:
        typer.echo(json.dumps({"model": str(model), "predictions": results}))
        return
    for r in results:
        typer.echo(f"{r['image']}: " + ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in r["top"]))


@reports_errors
def report(
    runs: Annotated[list[Path], typer.Argument(help="distill run folders")],
    out: Annotated[Path, typer.Option(help="Markdown file to write")] = Path("report.md"),
    chart_path: Annotated[Path, typer.Option("--chart", help="PNG chart to write")] = Path("report.png"),
) -> None:
    """One table of methods x target domains (OOD accuracy, mean ± standard error over trials), as Markdown and a
    PNG chart."""
    collected = collect(runs)
    text = markdown(collected)
    out.write_text(text)
    chart(collected, chart_path)
    typer.echo(text + f"\nwrote {out} and {chart_path}")
