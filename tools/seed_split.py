"""Split the demo's seed-to-seed spread into the world's share and the training's: one results file.

    python tools/seed_split.py --worlds 0 1 --train-seeds 0 1 2 3 4 --out docs/results/seed-split-sketch.json

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
from pathlib import Path

from demo_world import bought_world, train
from measure_demo import provenance

from student.config import DemoConfig

SCORES = ("id_acc", "ood_acc")


def split_world(world_seed: int, train_seeds: list[int], demo: DemoConfig) -> dict:
    """Every training seed's accuracies on the world `world_seed` draws."""
    runs = {}
    with bought_world(world_seed, demo) as world:
        for seed in train_seeds:
            if seed == world_seed:  # the demo's own run
                runs[str(seed)] = {m: {k: r[k] for k in SCORES} for m, r in world.measured["methods"].items()}
            else:
                trained = {m: train(world, m, seed) for m in demo.methods}
                runs[str(seed)] = {m: {k: r[k] for k in SCORES} for m, r in trained.items()}
            print(f"world {world_seed}, training seed {seed}: {json.dumps(runs[str(seed)])}", flush=True)
        teacher = world.measured["teacher_zeroshot"][demo.target]
    return {"teacher_zeroshot": teacher, "train_seeds": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--methods", default="erm,kd,adip")
    parser.add_argument("--target", default="sketch")
    parser.add_argument("--quick", action="store_true", help="the quick demo (vl2v demo --quick)")
    parser.add_argument("--per-class", type=int, help="images per source domain and class (the demo's, if not given)")
    parser.add_argument("--steps", type=int, help="steps per stage, evaluated at its end (the demo's, if not given)")
    parser.add_argument(
        "--context-bias", type=float, help="share of source images on their class's pattern (the demo's, if not given)"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    demo = DemoConfig(target=args.target, methods=tuple(args.methods.split(",")))
    demo = demo.quick() if args.quick else demo
    demo = dataclasses.replace(demo, per_class=args.per_class) if args.per_class else demo
    demo = dataclasses.replace(demo, steps=args.steps, eval_every=args.steps) if args.steps else demo
    demo = dataclasses.replace(demo, context_bias=args.context_bias) if args.context_bias is not None else demo
    record = provenance("tools/seed_split.py") | {
        "target": args.target,
        "quick": args.quick,
        "per_class": demo.per_class,
        "steps": demo.steps,
        "context_bias": demo.context_bias,
        "unlabelled": demo.unlabelled_images,
        "worlds": {str(w): split_world(w, args.train_seeds, demo) for w in args.worlds},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
