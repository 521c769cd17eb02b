"""Cost against accuracy of consistent teaching: KD and VL2V-ADiP on the demo world, clean-only and K views.

    python bench/views_study.py --views 0,1,4,16 --seeds 0,1,2 --out /tmp/views-study

Runs `vl2v demo --quick --methods kd,adip --views K --seed S` for every K and seed (the quick demo: 20 images per
domain and class, 40 steps per stage, EfficientNet-Lite0 from ImageNet, sketch held out), then prints a Markdown
table (OOD accuracy, mean ± standard error over seeds, and images paid) and writes `views.png` beside the runs.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

METHODS = ("kd", "adip")


def run(views: int, seed: int, out: Path) -> dict:
    folder = out / f"views{views}-seed{seed}"
    command = [sys.executable, "-m", "cli", "demo", "--quick", "--methods", ",".join(METHODS), "--views", str(views)]
    command += ["--seed", str(seed), "--out", str(folder), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def mean_se(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], float("nan")
    return statistics.mean(values), statistics.stdev(values) / len(values) ** 0.5


def chart(rows: dict[int, dict[str, list[float]]], paid: dict[int, int], path: Path) -> None:
    """OOD accuracy against images paid (log scale), one line per method, error bars of one standard error."""
    width, height, left, bottom, top, right = 720, 420, 70, 60, 40, 120
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    costs = sorted(paid.values())
    all_values = [v for r in rows.values() for vs in r.values() for v in vs]
    low, high = min(all_values) - 0.02, min(1.0, max(all_values) + 0.02)

    def x(cost: int) -> float:
        span = math.log(costs[-1]) - math.log(costs[0]) or 1.0
        return left + (width - left - right) * (math.log(cost) - math.log(costs[0])) / span

    def y(value: float) -> float:
        return top + (height - top - bottom) * (1 - (value - low) / (high - low))

    draw.text((left, 10), "Demo world, quick: OOD accuracy (sketch) against images paid", fill="black", font=font)
    for k, cost in paid.items():
        draw.line([(x(cost), top), (x(cost), height - bottom)], fill=(230, 230, 230))
        draw.text((x(cost) - 20, height - bottom + 8), f"K={k}\n{cost}", fill=(80, 80, 80), font=font)
    for tick in range(int(low * 100) + 1, int(high * 100) + 1):
        if tick % 2 == 0:
            draw.text((10, y(tick / 100) - 7), f"{tick}%", fill=(80, 80, 80), font=font)
    for method, colour in zip(METHODS, [(255, 127, 14), (148, 103, 189)], strict=True):
        points = []
        for k in sorted(rows):
            m, se = mean_se(rows[k][method])
            points.append((x(paid[k]), y(m)))
            if se == se:  # not NaN
                draw.line([(x(paid[k]), y(m - se)), (x(paid[k]), y(m + se))], fill=colour, width=2)
        draw.line(points, fill=colour, width=3)
        draw.text((points[-1][0] + 10, points[-1][1] - 7), method.upper(), fill=colour, font=font)
    image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", default="0,1,4,16")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=Path("views-study"))
    args = parser.parse_args()
    views = [int(v) for v in args.views.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: dict[int, dict[str, list[float]]] = {k: {m: [] for m in METHODS} for k in views}
    paid: dict[int, int] = {}
    for k in views:
        for seed in seeds:
            result = run(k, seed, args.out)
            paid[k] = result["images_paid"]
            for method in METHODS:
                rows[k][method].append(result["methods"][method]["ood_acc"])
            print(f"K={k} seed={seed}: " + ", ".join(f"{m} {rows[k][m][-1]:.3f}" for m in METHODS), file=sys.stderr)
    print("| views K | images paid | " + " | ".join(f"{m.upper()} OOD, mean ± s.e." for m in METHODS) + " | seeds |")
    print("|---|---|" + "---|" * len(METHODS) + "---|")
    for k in views:
        cells = []
        for m in METHODS:
            mean, se = mean_se(rows[k][m])
            cells.append(f"{100 * mean:.1f} ± {100 * se:.1f}")
        seeds_text = "; ".join(" / ".join(f"{100 * v:.1f}" for v in rows[k][m]) for m in METHODS)
        print(f"| {k} | {paid[k]} | " + " | ".join(cells) + f" | {seeds_text} |")
    args.out.mkdir(parents=True, exist_ok=True)
    chart(rows, paid, args.out / "views.png")
    (args.out / "views.json").write_text(json.dumps({"paid": paid, "ood": rows}, indent=2))


if __name__ == "__main__":
    main()
