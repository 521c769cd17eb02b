"""Split the demo's seed-to-seed spread into the world's share and the training's: one results file.

    python tools/seed_split.py --worlds 0 1 --train-seeds 0 1 2 3 --out docs/results/seed-split-sketch.json

A demo seed draws a world (its images, hence its cache) and seeds the training (the student's head, the batches
and their augmentation). For each world seed W this runs `vl2v demo --seed W` once, which buys the world and
trains every method with training seed W, and then trains the same methods again on that same cache with each
other training seed, the demo's settings otherwise unchanged. The spread across training seeds on one world is
what training alone moves; `tools/render_results.py` sets it beside the spread across worlds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure_demo import REPO, provenance

from cli.demo_pipeline import distill_config
from student.config import DemoConfig
from student.run import distill


def train_again(world: Path, demo: DemoConfig, method: str, seed: int) -> dict:
    """`method` trained on the demo's cache in `world` with training seed `seed`, the demo's settings otherwise."""
    config = distill_config(dataclasses.replace(demo, out=world), method)
    config = dataclasses.replace(
        config, out=world / "runs-again" / f"{method}-{seed}", train=dataclasses.replace(config.train, seed=seed)
    )
    began = time.monotonic()
    summary = distill(config)
    assert summary is not None, "one process: it reports"
    (result,) = summary.results
    return {"id_acc": result.id_acc, "ood_acc": result.ood_acc, "wall_s": round(time.monotonic() - began, 1)}


def split_world(world_seed: int, train_seeds: list[int], demo: DemoConfig, quick: bool) -> dict:
    """Every training seed's accuracies on the world `world_seed` draws."""
    with tempfile.TemporaryDirectory(prefix="vl2v-split-") as folder:
        command = [
            sys.executable, "-m", "cli", "demo", "--seed", str(world_seed), "--target", demo.target,
            "--methods", ",".join(demo.methods), "--out", folder, "--json", *(["--quick"] if quick else []),
        ]  # fmt: skip
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"world {world_seed}: vl2v demo failed:\n{done.stderr[-2000:]}")
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        world = dataclasses.replace(demo, seed=world_seed)
        runs = {}
        for seed in train_seeds:
            if seed == world_seed:
                runs[str(seed)] = {m: {k: r[k] for k in ("id_acc", "ood_acc")} for m, r in measured["methods"].items()}
            else:
                runs[str(seed)] = {m: train_again(Path(folder), world, m, seed) for m in demo.methods}
            print(f"world {world_seed}, training seed {seed}: {json.dumps(runs[str(seed)])}", flush=True)
    return {"teacher_zeroshot": measured["teacher_zeroshot"][demo.target], "train_seeds": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--methods", default="erm,kd,adip")
    parser.add_argument("--target", default="sketch")
    parser.add_argument("--quick", action="store_true", help="the quick demo (vl2v demo --quick)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    demo = DemoConfig(target=args.target, methods=tuple(args.methods.split(",")))
    demo = demo.quick() if args.quick else demo
    record = provenance("tools/seed_split.py") | {
        "target": args.target,
        "quick": args.quick,
        "worlds": {str(w): split_world(w, args.train_seeds, demo, args.quick) for w in args.worlds},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
