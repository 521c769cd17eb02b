"""A demo world bought once, and students trained on it with the demo's settings and any change to them.

`vl2v demo --seed W` draws world W, buys it and trains the demo's methods with training seed W. The tools that study
the demo's spread and its settings then train more students on that same cache, in this process:

    with bought_world(0, DemoConfig(methods=("kd",))) as world:
        scores = train(world, "kd", seed=1, changes={"temperature": "2"})
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from measure_demo import REPO

from cli.demo_pipeline import distill_config
from student.config import DemoConfig
from student.run import distill


@dataclasses.dataclass(frozen=True)
class World:
    demo: DemoConfig  # out: the folder `vl2v demo` wrote (its cache among it); seed: the world's
    measured: dict  # what `vl2v demo --json` printed


@contextlib.contextmanager
def bought_world(seed: int, demo: DemoConfig) -> Iterator[World]:
    """`vl2v demo --seed seed` with `demo`'s world, methods and schedule, in a temporary folder that lives as long as
    the block."""
    bias = "none" if demo.context_bias is None else str(demo.context_bias)
    with tempfile.TemporaryDirectory(prefix="vl2v-world-") as folder:
        command = [
            sys.executable, "-m", "cli", "demo", "--seed", str(seed), "--target", demo.target,
            "--methods", ",".join(demo.methods), "--out", folder, "--json",
            "--per-class", str(demo.per_class), "--target-per-class", str(demo.target_per_class),
            "--context-bias", bias, "--unlabelled", str(demo.unlabelled_images), "--views", str(demo.views),
            "--steps", str(demo.steps),
            "--eval-every", str(demo.eval_every), "--batch-size", str(demo.batch_size),
        ]  # fmt: skip
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"world {seed}: vl2v demo failed:\n{done.stderr[-2000:]}")
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        yield World(dataclasses.replace(demo, out=Path(folder), seed=seed), measured)


def train(
    world: World, method: str, seed: int, changes: dict[str, str] | None = None, holdout: str | None = None
) -> dict:
    """`method` trained on `world`'s cache with training seed `seed`, the demo's settings with `changes` made (each a
    `--set` of `vl2v distill`, but `views`: its `--views`, how many of the world's bought views to replay): its
    held-out and source-validation accuracy, its source-validation loss and its seconds. With `holdout`, a source
    domain is held out of training as well (leave-one-domain-out), and `holdout_acc` is its accuracy."""
    config = distill_config(world.demo, method)
    changed = [f"{k}={v}" for k, v in (changes or {}).items()]
    name = "-".join([method, str(seed), *changed, *([f"holdout={holdout}"] if holdout else [])])
    overrides = dict(changes or {})
    views = int(overrides.pop("views", config.views))
    config = dataclasses.replace(
        config,
        out=world.demo.out / "again" / name,
        overrides=config.overrides | overrides,
        views=views,
        train=dataclasses.replace(config.train, seed=seed),
        holdout=holdout,
    )
    began = time.monotonic()
    summary = distill(config)
    assert summary is not None, "one process: it reports"
    (result,) = summary.runs
    records = (Path(result.run_dir) / "results.jsonl").read_text().splitlines()
    final = next(r for r in map(json.loads, reversed(records)) if r.get("final"))
    scores = {"id_acc": result.id_acc, "ood_acc": result.ood_acc, "source_val_loss": final["source_val_loss"]}
    if holdout is not None:
        held = final["args"]["test_envs"][1]  # DomainBed's test_envs: the target, then the held-out source
        scores["holdout_acc"] = final[f"env{held}_in_acc"]
    return scores | {"wall_s": round(time.monotonic() - began, 1)}
