"""`vl2v demo`: the whole pipeline on the embedded world, in one command, offline.

`student.demo` imports torch; it is imported when the command runs, so the rest of `vl2v` starts fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from student.config import DemoConfig

from .errors import reports_errors, say, stderr, stdout
from .options import Json, Workers
from .progress import TrainingProgress

_D = DemoConfig()


@reports_errors
def demo(
    out: Annotated[Path, typer.Option(metavar="DIR", help="folder for every artifact")] = _D.out,
    target: Annotated[str, typer.Option(metavar="DOMAIN", help="the held-out domain")] = _D.target,
    methods: Annotated[str, typer.Option(metavar="NAMES", help="comma-separated methods to distil")] = ",".join(
        _D.methods
    ),
    student: Annotated[str, typer.Option(metavar="NAME", help="timm student, trained from scratch")] = _D.student,
    steps: Annotated[int, typer.Option(help="training steps per stage")] = _D.steps,
    lr: Annotated[
        float, typer.Option(metavar="LR", help="learning rate of every method (students start from scratch)")
    ] = _D.lr,
    per_class: Annotated[int, typer.Option(help="images per domain and class")] = _D.per_class,
    budget: Annotated[int | None, typer.Option(help="images to buy  [default: all of them]")] = _D.budget,
    seed: Annotated[int, typer.Option(help="seed of the world's images and of the training")] = _D.seed,
    workers: Workers = _D.workers,
    json_out: Json = False,
) -> None:
    """The whole pipeline on an embedded world, offline.

    Plays vendor and client end to end: generates the world, serves the demo teacher, buys its embeddings,
    distils students and compares them with the teacher on a held-out domain. No data, keys or internet needed."""
    from student.demo import run_demo

    config = DemoConfig(
        out=out,
        target=target,
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        student=student,
        steps=steps,
        per_class=per_class,
        budget=budget,
        seed=seed,
        workers=workers,
    )

    def tell(line: str) -> None:
        if not json_out:
            say("demo:", line)

    with TrainingProgress("", enabled=not json_out, console=stderr) as progress:
        result = run_demo(config, on_event=tell, on_progress=progress.update)
    if json_out:
        typer.echo(json.dumps(result))
        return
    table = Table(title=f"vl2v demo — target domain '{result['target']}' ({result['seconds']:.0f} s)")
    for column in ("model", "ID accuracy (source val)", f"OOD accuracy ({result['target']})"):
        table.add_column(column)
    teacher = result["teacher_zeroshot"]
    sources = [d for d in teacher if d != result["target"]]
    table.add_row(
        "teacher, zero-shot (demo CLIP)",
        f"{100 * sum(teacher[d] for d in sources) / len(sources):.1f}",
        f"{100 * teacher[result['target']]:.1f}",
    )
    for method, r in result["methods"].items():
        table.add_row(f"{method} ({result['student']})", f"{100 * r['id_acc']:.1f}", f"{100 * r['ood_acc']:.1f}")
    console = stdout
    console.print(table)
    console.print(
        f"paid {result['images_paid']} images + {result['texts_paid']} prompts for "
        f"{result['cost']:.4f} {result['currency']}; chart {result['chart']}; everything in {result['out']}"
    )
