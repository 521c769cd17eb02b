"""`vl2v demo`: the whole pipeline on the embedded world, in one command, offline.

`cli.demo_pipeline` imports torch; it is imported when the command runs, so the rest of `vl2v` starts fast.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cache.errors import InvalidOption
from student.config import DemoConfig, DistillConfig, TrainConfig, help_of
from student.environment import describe
from student.results import DemoResult

from .demo_measured import MeasuredDemo, measured_for
from .errors import reports_errors, stderr, stdout
from .options import Json, Workers, flag
from .progress import TrainingProgress, duration, money

_D = DemoConfig()
_H = functools.partial(help_of, DemoConfig)
_DISTILL = functools.partial(help_of, DistillConfig)
_TRAIN = functools.partial(help_of, TrainConfig)


@reports_errors
def demo(
    out: Annotated[Path, typer.Option(metavar="DIR", help=_H("out"))] = _D.out,
    target: Annotated[str, typer.Option(metavar="DOMAIN", help=_H("target"))] = _D.target,
    methods: Annotated[str, typer.Option(metavar="NAMES", help=f"comma-separated {_H('methods')}")] = ",".join(
        _D.methods
    ),
    student: Annotated[str, typer.Option(metavar="NAME", help=_DISTILL("student"))] = _D.student,
    student_weights: Annotated[
        str, typer.Option(metavar="WEIGHTS", help=f"{_DISTILL('student_weights')}, or none (random initial weights)")
    ] = _D.student_weights or "none",
    image_size: Annotated[int, typer.Option(metavar="PIXELS", help=_DISTILL("image_size"))] = _D.image_size,
    steps: Annotated[int, typer.Option(help=_TRAIN("steps"))] = _D.steps,
    batch_size: Annotated[int, typer.Option(help=_TRAIN("batch_size"))] = _D.batch_size,
    eval_every: Annotated[int, typer.Option(help=_TRAIN("eval_every"))] = _D.eval_every,
    lr: Annotated[float | None, typer.Option(metavar="LR", help=_H("lr"))] = _D.lr,
    per_class: Annotated[int, typer.Option(help=_H("per_class"))] = _D.per_class,
    target_per_class: Annotated[int, typer.Option(help=_H("target_per_class"))] = _D.target_per_class,
    context_bias: Annotated[str, typer.Option(metavar="SHARE", help=_H("context_bias"))] = str(_D.context_bias),
    unlabelled: Annotated[int | None, typer.Option(metavar="N", help=_H("unlabelled"))] = _D.unlabelled,
    views: Annotated[int, typer.Option(metavar="K", help=_H("views"))] = _D.views,
    budget: Annotated[int | None, typer.Option(help=_H("budget"))] = _D.budget,
    seed: Annotated[int, typer.Option(help=_H("seed"))] = _D.seed,
    workers: Workers = _D.workers,
    quick: Annotated[bool, flag("quick", "the short version: half the images, 60 steps per stage")] = False,
    json_out: Json = False,
) -> None:
    """The whole pipeline on an embedded world, offline.

    Plays vendor and client end to end: generates the world, serves the demo teacher, buys its embeddings,
    distils ImageNet-pretrained students with each method and compares them with the teacher on a held-out
    domain. No data, keys or internet needed."""
    from cli.demo_pipeline import run_demo

    config = DemoConfig(
        out=out,
        target=target,
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        student=student,
        student_weights=None if student_weights.lower() == "none" else student_weights,
        image_size=image_size,
        steps=steps,
        batch_size=batch_size,
        eval_every=eval_every,
        lr=lr,
        per_class=per_class,
        target_per_class=target_per_class,
        context_bias=_share(context_bias),
        unlabelled=unlabelled,
        views=views,
        budget=budget,
        seed=seed,
        workers=workers,
    )
    config = config.quick() if quick else config

    with TrainingProgress("", enabled=not json_out, console=stderr) as progress:
        result = run_demo(config, on_event=lambda line: progress.note(f"demo: {line}"), on_progress=progress.update)
    if json_out:
        typer.echo(json.dumps(result.to_json()))
        return
    measured = measured_for(config)
    stdout.print(_table(result, measured))
    stdout.print(
        "gap closed: the share of the ERM-to-teacher OOD gap a method closes (0%: ERM, 100%: the teacher)",
    )
    if measured is not None:
        stdout.print(measured.describe(describe(result.machine)))
    stdout.print(
        f"paid {result.images_paid} images + {result.texts_paid} prompts for "
        f"{money(result.cost, result.currency)}; chart {result.chart}; everything in {result.out}"
    )


def _table(result: DemoResult, measured: MeasuredDemo | None) -> Table:
    """Teacher and methods, ID and OOD; beside the OOD, when this path was measured, what this seed gave there (if
    it was one of the measured seeds) and the range the measured seeds spanned."""
    target = result.target
    seed = measured.ood.get(result.seed) if measured else None
    extra = [f"seed {result.seed}, measured"] if seed else []
    extra += [f"{len(measured.ood)} seeds, measured"] if measured else []
    table = Table(title=f"vl2v demo: {result.student} from the demo CLIP, {target} held out ({result.seconds:.0f} s)")
    for column in ("model", "ID (source val)", f"OOD ({target})", *extra, "gap closed", "time"):
        table.add_column(column, justify="left" if column == "model" else "right")

    def beside(model: str) -> list[str]:
        cells = [f"{100 * seed[model]:.1f}" if model in seed else ""] if seed else []
        if measured and model in next(iter(measured.ood.values())):
            low, high = measured.span(model)
            return [*cells, f"{100 * low:.1f}–{100 * high:.1f}"]
        return cells + ([""] if measured else [])

    teacher = result.teacher_zeroshot
    sources = [d for d in teacher if d != target]
    table.add_row(
        "teacher, zero-shot",
        f"{100 * sum(teacher[d] for d in sources) / len(sources):.1f}",
        f"{100 * teacher[target]:.1f}",
        *beside("teacher"),
        "",
        "",
    )
    for method, r in result.methods.items():
        closed = result.gap_closed.get(method)
        table.add_row(
            method,
            f"{100 * r.id_acc:.1f}",
            f"{100 * r.ood_acc:.1f}",
            *beside(method),
            f"{100 * closed:.0f}%" if closed is not None else "",
            duration(r.seconds),
        )
    return table


def _share(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise InvalidOption(f"--context-bias must be a share in [0, 1] or none, got {text!r}") from None
