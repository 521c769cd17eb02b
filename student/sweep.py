"""`vl2v sweep`: DomainBed's protocol as one command, on the launchers the field runs on.

A sweep crosses datasets (caches), methods, target domains, trials and hyper-parameter samples (sample 0: each
method's defaults; the others drawn from its declared search space, `Hparams.SEARCH`). With leave-one-domain-out
selection wanted, every run is repeated holding out each other source domain too. Each run is one `vl2v distill`
of its own folder, `OUT/runs/<id>`, where `id` is a hash of everything that run computes: a sweep run again finds
its finished runs by their `summary.json` and skips them, and continues unfinished ones with `--resume`.

Launchers: `local` runs N at a time as processes (with GPUs, one each, through CUDA_VISIBLE_DEVICES); `slurm`
submits them through submitit, whose local executor runs the same code path without a cluster. Each run's output
goes to `OUT/logs/<id>.log`. No scheduling is done here beyond that: the launchers schedule.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cache.errors import InvalidOption
from cache.store import EmbeddingCache

from .config import TrainConfig, documented
from .methods import check_method_name, get_method
from .results import SUMMARY_FILE

log = logging.getLogger("vl2v.sweep")

LAUNCHERS = ("local", "slurm")
SWEEP_FILE = "sweep.json"


@dataclass(frozen=True)
class SweepConfig:
    """What `vl2v sweep` was asked to run."""

    caches: tuple[Path, ...]
    methods: tuple[str, ...]
    out: Path
    test_domains: tuple[str, ...] = ("all",)
    trials: int = 3
    hparam_samples: int = documented("hyper-parameter samples per method; sample 0 is the defaults", 1)
    leave_one_out: bool = documented(
        "also run each source domain held out, for leave-one-domain-out model selection", False
    )
    student: str = "resnet50"
    pretrained: bool = True
    student_weights: str | None = None
    image_size: int = 224
    views: int | None = None
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if not self.caches:
            raise InvalidOption("a sweep needs at least one --cache")
        for method in self.methods:
            check_method_name(method)
        if self.trials < 1 or self.hparam_samples < 1:
            raise InvalidOption("--trials and --hparam-samples must be >= 1")


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its id, what it computes, and the `vl2v distill` arguments that compute it."""

    id: str
    dataset: str
    method: str
    test_domain: str
    holdout: str | None
    trial: int
    hparams_seed: int
    overrides: dict[str, str]
    argv: tuple[str, ...]


def plan(config: SweepConfig) -> list[RunSpec]:
    """Every run of the sweep, in a stable order."""
    specs = []
    for cache in config.caches:
        with EmbeddingCache.open(cache) as store:
            dataset = store.dataset or {}
        name, domains = dataset.get("name", cache.name), list(dataset.get("domains", []))
        targets = domains if config.test_domains == ("all",) else list(config.test_domains)
        for target in targets:
            if target not in domains:
                raise InvalidOption(f"--test-domain {target!r} is not one of {domains} ({cache})")
        for method in config.methods:
            hparams = get_method(method).Hparams
            for sample in range(config.hparam_samples):
                overrides = hparams.sample(sample, f"{name}:{method}")
                for target in targets:
                    holdouts = [None] + ([d for d in domains if d != target] if config.leave_one_out else [])
                    for holdout in holdouts:
                        for trial in range(config.trials):
                            specs.append(_spec(config, cache, name, method, target, holdout, trial, sample, overrides))
    return specs


def _spec(
    config: SweepConfig,
    cache: Path,
    dataset: str,
    method: str,
    target: str,
    holdout: str | None,
    trial: int,
    sample: int,
    overrides: dict[str, str],
) -> RunSpec:
    train = config.train
    identity = {
        "cache": str(cache.resolve()),
        "method": method,
        "target": target,
        "holdout": holdout,
        "trial": trial,
        "hparams_seed": sample,
        "overrides": overrides,
        "student": [config.student, config.pretrained, config.student_weights, config.image_size, config.views],
        "train": [train.steps, train.batch_size, train.eval_every, train.seed],
    }
    run_id = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    argv = [
        "--cache", str(cache), "--method", method, "--test-domain", target, "--trial", str(trial), "--trials", "1",
        "--student", config.student, "--image-size", str(config.image_size),
        "--steps", str(train.steps), "--batch-size", str(train.batch_size), "--eval-every", str(train.eval_every),
        "--seed", str(train.seed), "--workers", str(train.workers), "--device", train.device,
        "--hparams-seed", str(sample), "--out", str(config.out / "runs" / run_id), "--json",
        "--pretrained" if config.pretrained else "--no-pretrained",
    ]  # fmt: skip
    argv += ["--student-weights", config.student_weights] if config.student_weights else []
    argv += ["--views", str(config.views)] if config.views is not None else []
    argv += ["--holdout", holdout] if holdout else []
    argv += [item for key, value in sorted(overrides.items()) for item in ("--set", f"{key}={value}")]
    return RunSpec(run_id, dataset, method, target, holdout, trial, sample, overrides, tuple(argv))


def status(config: SweepConfig, spec: RunSpec) -> str:
    """ "done" (its summary is written), "started" (a killed or running run: resumable), or "new"."""
    folder = config.out / "runs" / spec.id
    if (folder / SUMMARY_FILE).is_file():
        return "done"
    return "started" if (folder / "config.json").is_file() else "new"


def command(spec: RunSpec, started: bool) -> list[str]:
    """The process that computes a run: `vl2v distill`, resuming where a killed one stopped."""
    return [sys.executable, "-m", "cli", "distill", *spec.argv, *(["--resume"] if started else [])]


def save(config: SweepConfig, specs: list[RunSpec]) -> None:
    config.out.mkdir(parents=True, exist_ok=True)
    description = {
        "config": json.loads(json.dumps(dataclasses.asdict(config), default=str)),
        "runs": [dataclasses.asdict(s) for s in specs],
    }
    (config.out / SWEEP_FILE).write_text(json.dumps(description, indent=2))


def run_local(
    config: SweepConfig, specs: list[RunSpec], jobs: int, on_done: Callable[[RunSpec, int], None] = lambda s, c: None
) -> dict[str, int]:
    """Run every unfinished run, `jobs` at a time, as processes; with GPUs, slot i uses GPU i (mod their number).
    Returns each run's exit code (finished runs are skipped, with code 0)."""
    todo = [(s, status(config, s)) for s in specs]
    codes = {s.id: 0 for s, state in todo if state == "done"}
    pending = [(s, state) for s, state in todo if state != "done"]
    gpus = _gpus()
    (config.out / "logs").mkdir(parents=True, exist_ok=True)
    slots = list(range(max(1, jobs)))

    def one(job: tuple[int, tuple[RunSpec, str]]) -> tuple[str, int]:
        slot, (spec, state) = job
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
        with (config.out / "logs" / f"{spec.id}.log").open("a") as log_file:
            code = subprocess.run(
                command(spec, state == "started"), env=env, stdout=log_file, stderr=log_file
            ).returncode
        on_done(spec, code)
        return spec.id, code

    with ThreadPoolExecutor(len(slots)) as pool:
        codes |= dict(pool.map(one, [(i % len(slots), item) for i, item in enumerate(pending)]))
    return codes


def run_slurm(config: SweepConfig, specs: list[RunSpec], executor) -> dict[str, int]:
    """Submit every unfinished run as a job of a submitit executor (a Slurm one, or submitit's local executor) and
    wait for them; returns each run's exit code."""
    todo = [s for s in specs if status(config, s) != "done"]
    codes = {s.id: 0 for s in specs if s not in todo}
    if not todo:
        return codes
    arguments = [(command(s, status(config, s) == "started"), str(config.out / "logs" / f"{s.id}.log")) for s in todo]
    (config.out / "logs").mkdir(parents=True, exist_ok=True)
    jobs = executor.map_array(run_process, *zip(*arguments, strict=True))
    for spec, job in zip(todo, jobs, strict=True):
        codes[spec.id] = job.result()
    return codes


def run_process(argv: list[str], log_path: str) -> int:
    """A job's body: run one `vl2v distill` process, its output appended to its log."""
    with open(log_path, "a") as log_file:
        return subprocess.run(argv, stdout=log_file, stderr=log_file).returncode


def _gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [g for g in visible.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []
