"""Student accuracy against the number of paid teacher queries, by how the budget chooses its images.

    python bench/budget_study.py --out docs/results/budget-study.json             # the study (about 40 min, 2 CPUs)
    python bench/budget_study.py --seeds 0 --budgets 25 --strategies random --methods kd --out /tmp/smoke.json

On the quick demo world (20 images per source domain and class, 480 source images, sketch held out with 80 per
class), per seed: the demo teacher is served locally (`vl2v serve --model demo`), the student's features of every
image are computed once (EfficientNet-Lite0, the offline ImageNet weights, 64 px), and for each budget (a share
of the source images; the held-out domain is never bought) and each strategy a fresh cache buys the budget and
each method distils from it with the quick demo's settings (60 steps a stage, every method averaged over its
second half). At 100% every strategy buys the same images, so that budget is run once. Also, at equal spend, the
25% budget with 3 augmented views per image (as many paid images as 100% without views) against 100% without.

Writes every run's ID and OOD accuracy, images paid and cost, with the command, commit and machine, for
`tools/render_results.py` to render as a table and a chart.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from measure_demo import provenance  # noqa: E402  (the provenance every results file records)

from cache.client import TeacherClient  # noqa: E402
from cache.data.datasets import open_dataset  # noqa: E402
from cache.data.world import write_benchmark  # noqa: E402
from cache.query import QueryConfig, run_query, run_rounds  # noqa: E402
from cli.demo_pipeline import distill_config  # noqa: E402
from student.config import DemoConfig, FeatureSpec  # noqa: E402
from student.features import image_features  # noqa: E402
from student.run import distill  # noqa: E402
from teacher_service.local import local_vendor  # noqa: E402

STRATEGIES = ("random", "stratified", "kcenter", "typiclust", "rounds")
SOURCE_IMAGES = 3 * 8 * 20  # the quick world's source domains


def cell(
    demo: DemoConfig, folder: Path, client: TeacherClient, features, *, strategy: str, images: int, views: int = 0
) -> dict:
    """One fresh cache bought by `strategy` up to `images` images (each with `views` views), every method
    distilled from it."""
    demo = dataclasses.replace(demo, out=folder, views=views)
    query = QueryConfig(
        dataset="demo", data_dir=folder.parent / "data", cache_dir=folder / "cache", budget=images * (1 + views),
        select="stratified" if strategy in ("rounds", "all") else strategy, seed=demo.seed,
        exclude_domains=(demo.target,), views=views, concurrency=1,
    )  # fmt: skip
    began = time.monotonic()
    if strategy == "rounds":
        report = run_rounds(query, client, 3, features=features, acquire="entropy")
    else:
        report = run_query(query, client, features=features)
    if report.free_images:
        raise SystemExit(f"{folder.name}: {report.free_images} images replayed free; every cell needs a fresh key")
    out = {"images_paid": report.paid_images, "cost": round(report.cost, 9), "methods": {}}
    for method in demo.methods:
        summary = distill(distill_config(demo, method))
        assert summary is not None
        (result,) = summary.results
        out["methods"][method] = {"id_acc": result.id_acc, "ood_acc": result.ood_acc}
    out["seconds"] = round(time.monotonic() - began, 1)
    return out


def study_seed(seed: int, args: argparse.Namespace, work: Path) -> dict:
    demo = dataclasses.replace(DemoConfig(methods=tuple(args.methods), seed=seed, target=args.target).quick())
    data = write_benchmark(
        work / "data", per_class=demo.per_class, seed=seed, target=demo.target, context_bias=demo.context_bias,
        target_per_class=demo.target_per_class,
    )  # fmt: skip
    spec = FeatureSpec(image_size=demo.image_size)
    features = image_features(open_dataset("demo", data.parent), work / "features.npz", spec)
    # One key per cell: the vendor replays a request another cell already paid for under the same key for free,
    # which would make a later cell look cheaper than a user starting from nothing would find it.
    keys = [f"sk-study-{i}-{secrets.token_hex(8)}" for i in range(64)]
    accounts = ",".join(f"cell{i}:{k}:100000" for i, k in enumerate(keys))
    settings = {"model": "demo", "log_level": "warning", "api_keys": accounts, "rate_limit_requests": 0}
    results: dict = {"budgets": {}, "equal_spend": {}}
    with local_vendor(settings, work / "vendor") as vendor:
        fresh = iter(keys)

        def client() -> TeacherClient:
            return TeacherClient(vendor.url, next(fresh))

        for pct in args.budgets:
            images = round(SOURCE_IMAGES * pct / 100)
            strategies = ["all"] if pct == 100 else args.strategies
            for strategy in strategies:
                folder = work / f"{strategy}-{pct}"
                results["budgets"].setdefault(str(pct), {})[strategy] = cell(
                    demo, folder, client(), features, strategy=strategy, images=images
                )
                print(f"seed {seed}, {pct}%, {strategy}: {results['budgets'][str(pct)][strategy]}", flush=True)
        if args.equal_spend:
            images = round(SOURCE_IMAGES * 0.25)
            results["equal_spend"]["25% x 4 (3 views)"] = cell(
                demo, work / "views", client(), features, strategy="stratified", images=images, views=3
            )
            print(f"seed {seed}, equal spend: {results['equal_spend']}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=int, nargs="+", default=[10, 25, 50, 100], help="percent of source images")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--methods", nargs="+", default=["kd", "adip"])
    parser.add_argument("--target", default="sketch")
    parser.add_argument("--no-equal-spend", dest="equal_spend", action="store_false")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    record = provenance("bench/budget_study.py") | {
        "target": args.target,
        "source_images": SOURCE_IMAGES,
        "study": {},
    }
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="vl2v-budget-") as tmp:
            record["study"][str(seed)] = study_seed(seed, args, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
