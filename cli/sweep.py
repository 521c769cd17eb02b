"""`vl2v sweep`: many distill runs, DomainBed's way, on a local pool of processes or on Slurm (submitit)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated

import typer

from cache.errors import InvalidOption
from student.config import DistillConfig, TrainConfig, default_of, help_of
from student.methods import method_names
from student.sweep import SweepConfig

from .errors import reports_errors, say, stdout
from .options import Device, Json, Seed, Workers, choices, flag

_TRAIN = TrainConfig()
_S = functools.partial(default_of, SweepConfig)
_H = functools.partial(help_of, DistillConfig)  # what a sweep shares with each of its runs
_T = functools.partial(help_of, TrainConfig)


@reports_errors
def sweep(
    cache: Annotated[list[Path], typer.Option("--cache", metavar="DIR", help="a cache to sweep over (repeatable)")],
    methods: Annotated[str, typer.Option(metavar="NAMES", help=f"comma-separated, {choices(method_names())}")],
    out: Annotated[Path, typer.Option(metavar="DIR", help="the sweep's folder (runs, logs, tables)")],
    test_domain: Annotated[
        list[str] | None,
        typer.Option(metavar="DOMAIN", help=f"{_H('test_domains')} (repeatable)  [default: all]"),
    ] = None,
    trials: Annotated[int, typer.Option(help=_H("trials"))] = _S("trials"),
    hparam_samples: Annotated[int, typer.Option(metavar="N", help=help_of(SweepConfig, "hparam_samples"))] = _S(
        "hparam_samples"
    ),
    leave_one_out: Annotated[bool, flag("leave-one-out", help_of(SweepConfig, "leave_one_out"))] = _S("leave_one_out"),
    student: Annotated[str, typer.Option(metavar="NAME", help=_H("student"))] = _S("student"),
    pretrained: Annotated[bool, typer.Option(help=_H("pretrained"))] = _S("pretrained"),
    student_weights: Annotated[str | None, typer.Option(metavar="WEIGHTS", help=_H("student_weights"))] = None,
    image_size: Annotated[int, typer.Option(metavar="PIXELS", help=_H("image_size"))] = _S("image_size"),
    steps: Annotated[int, typer.Option(help=_T("steps"))] = _TRAIN.steps,
    batch_size: Annotated[int, typer.Option(help=_T("batch_size"))] = _TRAIN.batch_size,
    eval_every: Annotated[int, typer.Option(help=_T("eval_every"))] = _TRAIN.eval_every,
    seed: Seed = _TRAIN.seed,
    workers: Workers = _TRAIN.workers,
    device: Device = _TRAIN.device,
    launcher: Annotated[str, typer.Option(metavar="NAME", help="local or slurm (through submitit)")] = "local",
    jobs: Annotated[int, typer.Option(metavar="N", help="local launcher: runs at a time")] = 1,
    slurm_partition: Annotated[str | None, typer.Option(metavar="NAME", help="slurm: the partition")] = None,
    slurm_hours: Annotated[float, typer.Option(metavar="H", help="slurm: time limit of each job")] = 24.0,
    slurm_gpus: Annotated[int, typer.Option(metavar="N", help="slurm: GPUs per job")] = 1,
    dry_run: Annotated[bool, flag("dry-run", "list the runs and what is done; run nothing")] = False,
    json_out: Json = False,
) -> None:
    """Run a DomainBed sweep: datasets x methods x targets x trials x hyper-parameter samples.

    Each run is a `vl2v distill` of its own folder under OUT/runs, named by a hash of what it computes. Running
    the same sweep again skips finished runs and resumes unfinished ones. Collect the results with
    `vl2v report OUT --selection iid|loo|oracle`."""
    from student.sweep import LAUNCHERS, plan, run_local, run_slurm, save, status

    if launcher not in LAUNCHERS:
        raise InvalidOption(f"--launcher {launcher!r} is not one of {list(LAUNCHERS)}")
    config = SweepConfig(
        caches=tuple(cache),
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        out=out,
        test_domains=tuple(test_domain or ["all"]),
        trials=trials,
        hparam_samples=hparam_samples,
        leave_one_out=leave_one_out,
        student=student,
        pretrained=pretrained,
        student_weights=student_weights,
        image_size=image_size,
        train=TrainConfig(
            steps=steps, batch_size=batch_size, eval_every=eval_every, seed=seed, device=device, workers=workers
        ),
    )
    specs = plan(config)
    states = {s.id: status(config, s) for s in specs}
    if dry_run:
        rows = [
            {"id": s.id, "dataset": s.dataset, "method": s.method, "target": s.test_domain, "holdout": s.holdout,
             "trial": s.trial, "hparams_seed": s.hparams_seed, "status": states[s.id]}
            for s in specs
        ]  # fmt: skip
        if json_out:
            typer.echo(json.dumps({"runs": rows}))
        else:
            for r in rows:
                held = f" (holding out {r['holdout']})" if r["holdout"] else ""
                stdout.print(
                    f"{r['id']}  {r['status']:7}  {r['dataset']} {r['method']} -> {r['target']}{held}, "
                    f"trial {r['trial']}, hparams {r['hparams_seed']}"
                )
            done = sum(v == "done" for v in states.values())
            stdout.print(f"{len(rows)} runs: {done} done, {len(rows) - done} to run")
        return
    save(config, specs)
    say("sweep:", f"{len(specs)} runs, {sum(v == 'done' for v in states.values())} already done; logs in {out}/logs")
    if launcher == "local":
        codes = run_local(config, specs, jobs, on_done=lambda s, code: say("sweep:", f"{s.id} exited {code}"))
    else:
        codes = run_slurm(config, specs, _slurm_executor(out, slurm_partition, slurm_hours, slurm_gpus))
    failed = sorted(run for run, code in codes.items() if code != 0)
    if json_out:
        typer.echo(json.dumps({"runs": len(codes), "failed": failed, "out": str(out)}))
    elif failed:
        say("sweep:", f"{len(failed)} run(s) failed; see {out}/logs/<id>.log: {', '.join(failed[:5])}", "red")
    else:
        stdout.print(f"all {len(codes)} runs done; collect them with: vl2v report {out}")
    if failed:
        raise typer.Exit(1)


def _slurm_executor(out: Path, partition: str | None, hours: float, gpus: int):
    import submitit

    executor = submitit.AutoExecutor(folder=str(out / "slurm"))
    executor.update_parameters(timeout_min=int(hours * 60), gpus_per_node=gpus, slurm_partition=partition)
    return executor
