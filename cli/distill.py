"""`vl2v distill`: train and evaluate a student offline, from the cache alone.

`student.run` imports torch; it is imported when the command runs, so the rest of `vl2v` starts fast.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cache.errors import InvalidOption
from student.config import DistillConfig, TrainConfig, default_of, help_of
from student.methods import method_names

from .errors import reports_errors, stderr, stdout
from .options import DEFAULT_CACHE, CacheDir, Device, Json, Seed, Workers, choices, flag
from .progress import TrainingProgress

_TRAIN = TrainConfig()
_D = functools.partial(default_of, DistillConfig)
_H = functools.partial(help_of, DistillConfig)
_T = functools.partial(help_of, TrainConfig)


def parse_sets(items: list[str] | None) -> dict[str, str]:
    pairs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidOption(f"--set {item!r}: expected key=value")
        pairs[key.strip()] = value.strip()
    return pairs


@reports_errors
def distill_command(
    cache: CacheDir = DEFAULT_CACHE,
    method: Annotated[str, typer.Option(metavar="NAME", help=choices(method_names()))] = "adip",
    student: Annotated[str, typer.Option(metavar="NAME", help=_H("student"))] = "resnet50",
    pretrained: Annotated[bool, typer.Option(help=_H("pretrained"))] = _D("pretrained"),
    student_weights: Annotated[str | None, typer.Option(metavar="WEIGHTS", help=_H("student_weights"))] = None,
    test_domain: Annotated[
        list[str] | None, typer.Option(metavar="DOMAIN", help=f"{_H('test_domains')} (repeatable)  [default: all]")
    ] = None,
    out: Annotated[Path | None, typer.Option(metavar="DIR", help=f"{_H('out')}  [default: runs/METHOD]")] = None,
    steps: Annotated[int, typer.Option(help=_T("steps"))] = _TRAIN.steps,
    batch_size: Annotated[int, typer.Option(help=_T("batch_size"))] = _TRAIN.batch_size,
    unlabelled_batch: Annotated[
        int | None, typer.Option(metavar="N", help=_T("unlabelled_batch"))
    ] = _TRAIN.unlabelled_batch,
    lr: Annotated[float | None, typer.Option(metavar="LR", help="learning rate  [default: the method's]")] = None,
    seed: Seed = _TRAIN.seed,
    trials: Annotated[int, typer.Option(help=_H("trials"))] = _D("trials"),
    trial: Annotated[int, typer.Option(metavar="K", help=_H("first_trial"))] = _D("first_trial"),
    eval_every: Annotated[int, typer.Option(help=_T("eval_every"))] = _TRAIN.eval_every,
    workers: Workers = _TRAIN.workers,
    device: Device = _TRAIN.device,
    image_size: Annotated[int, typer.Option(metavar="PIXELS", help=_H("image_size"))] = _D("image_size"),
    data_dir: Annotated[Path | None, typer.Option(metavar="DIR", help=_H("data_dir"))] = None,
    views: Annotated[int | None, typer.Option(metavar="K", help=_H("views"))] = None,
    holdout: Annotated[str | None, typer.Option(metavar="DOMAIN", help=_H("holdout"))] = None,
    hparams_seed: Annotated[int, typer.Option(metavar="N", help=_H("hparams_seed"))] = _D("hparams_seed"),
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="override a hyper-parameter of the method (repeatable)"),
    ] = None,
    resume: Annotated[bool, flag("resume", _H("resume"))] = False,
    overwrite: Annotated[bool, flag("overwrite", _H("overwrite"))] = False,
    json_out: Json = False,
) -> None:
    """Train and test a student from the cache alone (DomainBed protocol).

    Each domain splits 80% in / 20% out (seeded by trial and domain). The student trains on the cached `in`
    images of the source domains, is selected on their `out` images (ID accuracy), and is tested on the whole
    target domain (OOD accuracy). The target domain's images never enter a training batch. No teacher query.

    Under torchrun (torchrun --nproc-per-node N -m cli distill ...), the run is shared by N processes (PyTorch
    DDP: NCCL on GPUs, gloo on CPUs): each trains on its share of every step's batch, and rank 0 writes.
    """
    from student.run import distill

    overrides = parse_sets(set_) | ({"lr": str(lr)} if lr is not None else {})
    config = DistillConfig(
        cache_dir=cache,
        method=method,
        student=student,
        out=out or Path("runs") / method,
        test_domains=tuple(test_domain or ["all"]),
        pretrained=pretrained,
        student_weights=student_weights,
        trials=trials,
        first_trial=trial,
        image_size=image_size,
        data_dir=data_dir,
        overrides=overrides,
        resume=resume,
        overwrite=overwrite,
        views=views,
        holdout=holdout,
        hparams_seed=hparams_seed,
        train=TrainConfig(
            steps=steps,
            batch_size=batch_size,
            unlabelled_batch=unlabelled_batch,
            eval_every=eval_every,
            seed=seed,
            device=device,
            workers=workers,
        ),
    )
    leader = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 alone reports
    with TrainingProgress("", enabled=not json_out and leader, console=stderr) as progress:
        summary = distill(config, on_progress=progress.update)
    if summary is None:
        return
    if json_out:
        results = [{k: getattr(r, k) for k in ("test_domain", "id_acc", "ood_acc")} for r in summary.results]
        mean = {"id_acc": summary.mean_id_acc, "ood_acc": summary.mean_ood_acc}
        typer.echo(json.dumps({"run_dir": summary.run_dir, "method": summary.method, "results": results, "mean": mean}))
        return
    table = Table(title=f"{summary.method} ({summary.student}) — {summary.run_dir}")
    for column in ("target domain", "ID (source val)", "OOD (target)", "trials"):
        table.add_column(column)
    for r in summary.results:
        table.add_row(r.test_domain, f"{100 * r.id_acc:.1f}", f"{100 * r.ood_acc:.1f}", str(r.trials))
    table.add_row("mean", f"{100 * summary.mean_id_acc:.1f}", f"{100 * summary.mean_ood_acc:.1f}", "")
    stdout.print(table)
