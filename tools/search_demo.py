"""Search one of the demo's settings on source-domain validation only: a grid, several worlds, one results file.

    python tools/search_demo.py --method kd --grid kd_weight=0.2,0.5,1,2 --grid temperature=2,3 \
        --worlds 0 1 2 --out docs/results/search-kd.json

    python tools/search_demo.py --method erm --point lr=5e-5,weight_decay=0 --point lr=2.7e-4,weight_decay=1.1e-4 \
        --worlds 0 1 2 --out docs/results/search-erm-lr.json

For each world seed W, `vl2v demo --seed W --methods METHOD` buys world W; then every point of the grid (each
`--grid NAME=V1,V2,...` an `--set NAME=V` of `vl2v distill`, the demo's settings otherwise; `views=K` is its
`--views K`, and the world then buys as many views as any point replays), or each `--point` given whole (settings
sampled together, as a random search draws them), is trained on it with training seed W. DomainBed's two selections
that never look at the held-out domain:

- `--select training` (training-domain validation): a point's score is its accuracy on the source domains'
  validation splits, averaged over the worlds, its source-validation loss breaking ties.
- `--select leave-one-out` (leave-one-domain-out validation): each point is trained once per source domain with
  that domain held out of training too, and scored by the held-out source domain's accuracy, averaged over the
  source domains and the worlds (source-validation loss again breaking ties). Three times the training, but it
  measures a shift between domains, where the source validation splits of this world sit near 100%.

The held-out domain's accuracy is recorded in the file, as the runs measured it, and plays no part in the choice.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path

from demo_world import bought_world, train
from measure_demo import provenance
from render_results import runs_of, validation_acc

from cache.data.world import DOMAINS
from student.config import DemoConfig

SELECTIONS = ("training", "leave-one-out")


def parse_grid(specs: list[str]) -> list[dict[str, str]]:
    """`["a=1,2", "b=3"]` -> every combination: `[{"a": "1", "b": "3"}, {"a": "2", "b": "3"}]`."""
    axes = []
    for spec in specs:
        name, _, values = spec.partition("=")
        if not name or not values:
            raise SystemExit(f"--grid {spec!r}: expected NAME=V1,V2,...")
        axes.append([(name, v) for v in values.split(",")])
    return [dict(point) for point in itertools.product(*axes)]


def parse_point(spec: str) -> dict[str, str]:
    """`"lr=5e-5,weight_decay=0"` -> `{"lr": "5e-5", "weight_decay": "0"}`: one point, its settings together."""
    point = dict(pair.partition("=")[::2] for pair in spec.split(","))
    if not all(point) or not all(point.values()):
        raise SystemExit(f"--point {spec!r}: expected NAME=V,NAME=V,...")
    return point


def chosen(points: list[dict]) -> int:
    """The index of the point with the best mean validation accuracy, the lower source-validation loss breaking
    ties."""

    def score(point: dict) -> tuple[float, float]:
        runs = runs_of(point)
        return statistics.fmean(map(validation_acc, runs)), -statistics.fmean(r["source_val_loss"] for r in runs)

    return max(range(len(points)), key=lambda i: score(points[i]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", required=True)
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--grid", action="append", metavar="NAME=V1,V2,...", help="an axis of a grid")
    given.add_argument("--point", action="append", metavar="NAME=V,NAME=V", help="one point, settings together")
    parser.add_argument("--worlds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target", default="sketch")
    parser.add_argument("--select", choices=SELECTIONS, default="training", help="DomainBed's model selection")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    holdouts = [d for d in DOMAINS if d != args.target] if args.select == "leave-one-out" else []
    grid = parse_grid(args.grid) if args.grid else [parse_point(spec) for spec in args.point]
    if len({tuple(point) for point in grid}) > 1:
        raise SystemExit("every --point must set the same settings, in the same order")
    # A point that replays bought views (`views=K`) needs them bought: the world buys as many as any point replays.
    demo = DemoConfig(target=args.target, methods=(args.method,), views=max(int(p.get("views", 0)) for p in grid))
    points = [{"set": point, "worlds": {}} for point in grid]
    for seed in args.worlds:
        with bought_world(seed, demo) as world:
            for point in points:
                if holdouts:
                    runs = {d: train(world, args.method, seed, point["set"], holdout=d) for d in holdouts}
                    point["worlds"][str(seed)] = {"holdouts": runs}
                else:
                    point["worlds"][str(seed)] = train(world, args.method, seed, point["set"])
                print(f"world {seed}, {json.dumps(point['set'])}: {json.dumps(point['worlds'][str(seed)])}", flush=True)
    record = provenance("tools/search_demo.py") | {
        "target": args.target,
        "method": args.method,
        "select": args.select,
        "unlabelled": demo.unlabelled_images,  # the worlds' unlabelled images per source domain
        "search": points,
        "chosen": chosen(points),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}: chose {json.dumps(points[record['chosen']]['set'])}")


if __name__ == "__main__":
    main()
