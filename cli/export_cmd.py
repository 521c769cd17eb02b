"""`vl2v export`: the student out of vl2v, as one ONNX graph or as a folder plain timm loads.

`student.deploy` imports torch, timm and ONNX; it is imported when the command runs, so the rest of `vl2v` starts
fast.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated

import typer

from student.config import ExportConfig, help_of

from . import exit_codes
from .errors import reports_errors, say
from .options import Json

_H = functools.partial(help_of, ExportConfig)


@reports_errors
def export_command(
    run: Annotated[
        Path, typer.Argument(metavar="RUN", help="a distill run folder holding one student, or its model.safetensors")
    ],
    format: Annotated[str, typer.Option(metavar="FORMAT", help=_H("format"))],
    out: Annotated[Path, typer.Option(metavar="PATH", help=_H("out"))],
    quantize: Annotated[str | None, typer.Option(metavar="TYPE", help=_H("quantize"))] = None,
    push_to_hub: Annotated[str | None, typer.Option(metavar="REPO", help=_H("push_to_hub"))] = None,
    data_dir: Annotated[Path | None, typer.Option(metavar="DIR", help=_H("data_dir"))] = None,
    json_out: Json = False,
) -> None:
    """Write the student for use outside vl2v, with a model card, and check it.

    onnx: one graph from uint8 RGB pixels (B, 3, H, W) at the run's size to logits over the classes, every head
    of the method folded in, batch size free; preprocessing and class names in its metadata. timm: a Hugging
    Face Hub folder that timm.create_model("local-dir:PATH", pretrained=True) loads without vl2v. Either is
    compared with the run's own student on the run's evaluation images (largest logit difference, top-1
    agreement); an export that misses the targets is kept and the command exits 1."""
    from student.deploy.export import LOGIT_TOLERANCE, export

    config = ExportConfig(run, format, out, quantize=quantize, push_to_hub=push_to_hub, data_dir=data_dir)
    report = export(config)
    if json_out:
        typer.echo(json.dumps(report.to_json()))
    else:
        check = report.check
        typer.echo(f"wrote {report.out} and its model card {report.card}")
        typer.echo(
            f"checked on {check.images} of the run's images: largest logit difference {check.largest_difference:.2g} "
            f"(target {LOGIT_TOLERANCE:g}), top-1 agreement {100 * check.top1_agreement:.2f}% (target 100%)"
        )
        if report.folded:
            typer.echo(f"classifier: {report.folded}")
        rows = [("run", check.accuracy["torch"]), (f"{report.format} fp32", check.accuracy["export"])]
        rows += [("onnx int8", report.int8.accuracy["export"])] if report.int8 else []
        typer.echo(f"{'':>9}  {'in domain':>9}  {'out of domain':>13}")
        for name, acc in rows:
            typer.echo(f"{name:>9}  {100 * acc['id']:8.1f}%  {100 * acc['ood']:12.1f}%")
        if report.pushed:
            typer.echo(f"pushed to the Hub: {report.pushed}")
    if not report.passed:
        say(
            "error:",
            f"{report.out} does not give the run's answers within the targets; it is kept for inspection",
            "red",
        )
        raise typer.Exit(exit_codes.ERROR)
