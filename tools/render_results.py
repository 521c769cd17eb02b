"""Render the result tables of the README and docs/ from the results files that measured them.

    python tools/render_results.py           # rewrite every table in place
    python tools/render_results.py --check   # exit 1, naming the file, when a table differs from its results file

A table lives between `<!-- results FILE -->` and `<!-- end results -->`, FILE being a results file written by
`tools/measure_demo.py`; nothing between the markers is written by hand. A views study's file also gives its
figure, FILE with `.png` for `.json`, drawn here from the same numbers; and the demo's files give
cli/demo_measured.json, the seeds `vl2v demo` shows beside a user's own run.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

from cache.data.world import describe_bias
from cli.demo_pipeline import distill_config
from student.config import DemoConfig
from student.environment import describe
from student.methods import get_method

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/demo.md")
# `FILE`, `FILE vs OTHER` (the same seeds measured twice) or `A + B + ...` (several results pooled: the demo's paths,
# or a demo file and the searches run on its worlds).
BLOCK = re.compile(
    r"(?P<open><!-- results (?P<files>\S+(?: (?:vs|\+) \S+)*) -->\n)(?P<body>.*?)(?P<close><!-- end results -->)", re.S
)
TIME_TARGET_S = {"default": 180, "quick": 90}  # what a user is promised on 2 cores: 3 minutes, and 90 s for --quick
# What `vl2v demo` shows beside a user's run (cli/demo_measured.py): the seeds measured on each path of the demo as
# it ships, and how far other CPU kernels moved the same seeds, rendered here from the files that measured them.
MEASURED = "cli/demo_measured.json"
MEASURED_FROM = {
    "docs/results/demo-sketch.json": ("docs/results/demo-sketch-avx2.json", "docs/results/demo-sketch-1thread.json"),
    "docs/results/demo-painting.json": ("docs/results/demo-painting-1thread.json",),
    "docs/results/demo-quick-sketch.json": (
        "docs/results/demo-quick-sketch-avx2.json", "docs/results/demo-quick-sketch-1thread.json"
    ),
    "docs/results/demo-quick-painting.json": ("docs/results/demo-quick-painting-1thread.json",),
}  # fmt: skip
WORLD = ("context_bias", "unlabelled", "views", "steps")  # what makes one seed's demo the same run twice
NAMES = {"erm": "ERM", "kd": "KD", "rise": "RISE", "scmd": "SCMD", "adip": "VL2V-ADiP", "sd": "VL2V-SD"}


def standard_error(values: list[float]) -> float:
    """The standard error of the mean; infinite for one value, which says nothing about its spread."""
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("inf")


def mean_se(values: list[float]) -> str:
    """In points: "72.4 ± 2.5" (standard error of the mean), or the value alone for one seed."""
    mean = 100 * statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {100 * standard_error(values):.1f}"


def span(values: list[float]) -> str:
    """In points, the lowest and the highest: "72.3 to 84.5"."""
    return f"{100 * min(values):.1f} to {100 * max(values):.1f}"


def demo_table(record: dict) -> str:
    """Teacher and methods (ID, OOD, paired OOD difference to ERM), then every seed's OOD accuracy."""
    seeds = record["seeds"]
    target = record["target"]
    runs = list(seeds.values())
    methods = list(runs[0]["methods"])
    ood = {m: [r["methods"][m]["ood_acc"] for r in runs] for m in methods}
    teacher = [r["teacher_zeroshot"][target] for r in runs]
    lines = [
        f"| model | ID (source val) | OOD ({target}) | one seed's OOD | OOD − ERM, paired | above ERM | gap closed |",
        "|---|---|---|---|---|---|---|",
        f"| teacher, zero-shot (demo CLIP) | – | {mean_se(teacher)} | {span(teacher)} | | | |",
    ]
    for m in methods:
        ids = [r["methods"][m]["id_acc"] for r in runs]
        if m == "erm" or "erm" not in ood:
            lines.append(f"| {NAMES.get(m, m)} | {mean_se(ids)} | {mean_se(ood[m])} | {span(ood[m])} | | | |")
            continue
        differences = [a - b for a, b in zip(ood[m], ood["erm"], strict=True)]
        above = sum(d > 0 for d in differences)
        # The share of the ERM-to-teacher gap the method closes, on the means over seeds.
        gap = statistics.fmean(differences) / (statistics.fmean(teacher) - statistics.fmean(ood["erm"]))
        lines.append(
            f"| {NAMES.get(m, m)} | {mean_se(ids)} | {mean_se(ood[m])} | {span(ood[m])} | {mean_se(differences)} | "
            f"{above} of {len(differences)} seeds | {100 * gap:.0f}% |"
        )
    lines += ["", "| seed | teacher | " + " | ".join(NAMES.get(m, m) for m in methods) + " | seconds |"]
    lines.append("|---" * (len(methods) + 3) + "|")
    for seed, r in seeds.items():
        cells = [f"{100 * r['methods'][m]['ood_acc']:.1f}" for m in methods]
        lines.append(
            f"| {seed} | {100 * r['teacher_zeroshot'][target]:.1f} | " + " | ".join(cells) + f" | {r['wall_s']:.0f} |"
        )
    seconds = [r["wall_s"] for r in runs]
    limit = TIME_TARGET_S["quick" if record.get("quick") else "default"]
    lines += [
        "",
        f"One run took {min(seconds):.0f} to {max(seconds):.0f} s, the seeds one after another, alone: "
        f"{sum(s <= limit for s in seconds)} of {len(seconds)} within the {limit} s target.",
    ]
    return "\n".join([*lines, "", provenance(record)]) + "\n"


def pooled_table(records: list[dict]) -> str:
    """Several demo results pooled: each method's paired OOD difference to ERM over every (path, seed) run, how
    many runs it is above ERM on, the share of the ERM-to-teacher gap it closes over every run (its mean difference
    over the mean gap), and its mean difference on each path."""
    paths = [f"{'quick' if r['quick'] else 'default'}, {r['target']}" for r in records]
    methods = [m for m in next(iter(records[0]["seeds"].values()))["methods"] if m != "erm"]
    lines = [
        "| method | OOD − ERM, paired, every run | above ERM | beyond two s.e. | gap closed, every run | "
        + " | ".join(paths)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(paths),
    ]
    gaps = [
        run["teacher_zeroshot"][r["target"]] - run["methods"]["erm"]["ood_acc"]
        for r in records
        for run in r["seeds"].values()
    ]
    for m in methods:
        per_path = [
            [run["methods"][m]["ood_acc"] - run["methods"]["erm"]["ood_acc"] for run in r["seeds"].values()]
            for r in records
        ]
        every = [d for differences in per_path for d in differences]
        cells = [f"{100 * statistics.fmean(differences):+.1f}" for differences in per_path]
        mean, se = statistics.fmean(every), standard_error(every)
        beyond = "above" if mean > 2 * se else "below" if mean < -2 * se else "no"
        closed = f"{mean / statistics.fmean(gaps):.0%}"
        lines.append(
            f"| {NAMES.get(m, m)} | {mean_se(every)} | {sum(d > 0 for d in every)} of {len(every)} runs | {beyond} | "
            + f"{closed} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def runs_by_world(point: dict) -> Iterator[tuple[tuple[str, str], dict]]:
    """A search point's runs, each with its (world, held-out source domain, "" when none held out)."""
    for name, world in point["worlds"].items():
        for held, run in world.get("holdouts", {"": world}).items():
            yield (name, held), run


def runs_of(point: dict) -> list[dict]:
    """A search point's runs: one a world, or (leave-one-domain-out) one a world and held-out source domain."""
    return [run for _, run in runs_by_world(point)]


def validation_acc(run: dict) -> float:
    """A search run's validation accuracy: the held-out source domain's if one was held out, else the source
    domains' validation splits'."""
    return run.get("holdout_acc", run["id_acc"])


def within_worlds(points: list[dict], value: Callable[[dict], float]) -> list[float]:
    """Each search run's `value` less its mean over the points on the same world (and held-out source): what a
    choice compares, without an easier world, high on every score, reading as agreement between two scores."""
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for point in points:
        for where, run in runs_by_world(point):
            cells[where].append(value(run))
    return [v - statistics.fmean(values) for values in cells.values() for v in values]


def shipped(record: dict) -> int | None:
    """The index of the search's point that the demo ships today (its settings as the trainer reads them, so "1e-3"
    and "0.001" are one point), or None when the demo ships none of them."""
    method = record["method"]
    config = distill_config(DemoConfig(target=record["target"], methods=(method,)), method)
    hparams = get_method(method).Hparams

    def as_trained(point: dict[str, str]) -> tuple:
        changes = dict(point)
        views = int(changes.pop("views", config.views))
        return hparams.with_overrides(config.overrides | changes), views

    demo = as_trained({})
    return next((i for i, p in enumerate(record["search"]) if as_trained(p["set"]) == demo), None)


def named(point: dict) -> str:
    """A search point's settings as a reader says them: `lr 1e-3, weight_decay 0`."""
    return ", ".join(f"{k} {v}" for k, v in point["set"].items())


def ships(record: dict) -> str:
    """A sentence saying what the demo ships where that is not the search's choice; nothing where it is."""
    demo = shipped(record)
    if demo == record["chosen"]:
        return ""
    if demo is None:
        return " The demo ships none of these points."
    return f" The demo ships {named(record['search'][demo])}, not the search's choice (the text below says why)."


def search_table(record: dict) -> str:
    """Every point of a search with its validation accuracy and source-validation loss over the worlds (and, for
    leave-one-domain-out, the source domains held out in turn), the chosen one bold, and what the demo ships."""
    points = record["search"]
    names = list(points[0]["set"])
    worlds = list(points[0]["worlds"])
    held = list(next(iter(points[0]["worlds"].values())).get("holdouts", {}))
    score = (
        f"held-out source (%), {len(worlds)} worlds x {len(held)} domains"
        if held
        else f"source val (%), {len(worlds)} worlds"
    )
    lines = [
        "| " + " | ".join(f"`{n}`" for n in names) + f" | {score} | source val loss |",
        "|---" * (len(names) + 2) + "|",
    ]
    for i, point in enumerate(points):
        runs = runs_of(point)
        cells = [*point["set"].values(), f"{100 * statistics.fmean(map(validation_acc, runs)):.2f}"]
        cells.append(f"{statistics.fmean(r['source_val_loss'] for r in runs):.3f}")
        lines.append("| " + " | ".join(f"**{c}**" if i == record["chosen"] else c for c in cells) + " |")
    best = named(points[record["chosen"]])
    every = [run for point in points for run in runs_of(point)]
    validation, target = [validation_acc(r) for r in every], [r["ood_acc"] for r in every]
    agreement = within_worlds(points, validation_acc), within_worlds(points, lambda r: r["ood_acc"])
    varied = all(len(set(deviations)) > 1 for deviations in agreement)
    together = f" (correlation within worlds {statistics.correlation(*agreement):+.2f})" if varied else ""
    lines += [
        "",
        f"{NAMES.get(record['method'], record['method'])}: chosen {best}. Over the search's {len(every)} runs the "
        f"validation accuracy ranged {span(validation)} and the held-out {record['target']}'s, recorded and never "
        f"used in the choice, {span(target)}{together}.{ships(record)}",
        "",
        provenance(record),
    ]
    return "\n".join(lines) + "\n"


def oracle_table(demo: dict, searches: list[dict]) -> str:
    """What the held-out domain would have chosen, had it been read (DomainBed's oracle selection, which the demo
    never uses): per method, over every point of its training-domain searches on the same worlds, the shipped point's
    and the best point's held-out accuracy, each against ERM's shipped point and the teacher. The best of many noisy
    means is an optimistic bound, so a bar that the oracle misses is not missed for want of a better setting."""
    worlds = {tuple(s["search"][0]["worlds"]) for s in searches}
    if len(worlds) != 1 or any(s.get("select", "training") != "training" for s in searches):
        sys.exit("an oracle table pools training-domain searches on the same worlds")
    (names,) = worlds
    teacher = 100 * statistics.fmean(demo["seeds"][w]["teacher_zeroshot"][demo["target"]] for w in names)

    def held_out(point: dict) -> float:
        return 100 * statistics.fmean(run["ood_acc"] for run in runs_of(point))

    by_method: dict[str, list[tuple[dict, int | None]]] = defaultdict(list)
    for search in searches:
        by_method[search["method"]].append((search, shipped(search)))
    # The shipped point's accuracy from the first search that holds it (the searches re-train it on the same worlds).
    demo_acc = {
        m: next((held_out(s["search"][i]) for s, i in found if i is not None), None) for m, found in by_method.items()
    }
    if None in demo_acc.values() or "erm" not in demo_acc:
        sys.exit("an oracle table needs ERM's search, and the point the demo ships in a search of every method")
    erm = demo_acc["erm"]
    lines = [
        f"| method | points searched | shipped | best by held-out {demo['target']} (never used) | its setting "
        "| best − ERM's shipped | gap closed: shipped / best |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, found in by_method.items():
        points = [p for search, _ in found for p in search["search"]]
        best = max(points, key=held_out)
        ships_acc, best_acc = demo_acc[method], held_out(best)
        closed = [(v - erm) / (teacher - erm) for v in (ships_acc, best_acc)]
        gap = "" if method == "erm" else f"{closed[0]:.0%} / {closed[1]:.0%}"
        lines.append(
            f"| {NAMES.get(method, method)} | {len(points)} | {ships_acc:.1f} | {best_acc:.1f} | {named(best)} | "
            f"{best_acc - erm:+.1f} | {gap} |"
        )
    lines += [
        "",
        f"Held-out {demo['target']} accuracy, the mean over worlds {', '.join(names)} (training seed = world seed); "
        f"the teacher's zero-shot accuracy there: {teacher:.1f}.",
        "",
        "\n\n".join(provenance(record) for record in [demo, *searches]),
    ]
    return "\n".join(lines) + "\n"


def load_table(alone: dict, loaded: dict) -> str:
    """The same seeds' wall time alone and beside another job, and whether every accuracy stayed the same."""
    seeds = [s for s in loaded["seeds"] if s in alone["seeds"]]
    lines = ["| seed | seconds alone | seconds under load | slower by |", "|---|---|---|---|"]
    ratios = []
    for seed in seeds:
        a, b = alone["seeds"][seed]["wall_s"], loaded["seeds"][seed]["wall_s"]
        ratios.append(b / a)
        lines.append(f"| {seed} | {a:.0f} | {b:.0f} | {b / a:.1f}x |")

    def accuracies(run: dict) -> dict:
        return {m: (r.get("id_acc"), r["ood_acc"]) for m, r in run["methods"].items()}

    same = all(accuracies(alone["seeds"][s]) == accuracies(loaded["seeds"][s]) for s in seeds)
    lines += [
        "",
        f"Under load: beside {loaded['load']['job']}, on the same cores. The demo took {min(ratios):.1f} to "
        f"{max(ratios):.1f} times as long; {'every' if same else 'not every'} accuracy was the same as alone.",
        "",
        provenance(alone),
        "",
        provenance(loaded),
    ]
    return "\n".join(lines) + "\n"


def seed_split_table(record: dict, demo: dict | None) -> str:
    """Every training seed's OOD accuracy on each world, then the spread (standard deviation) across training seeds
    on one world, beside the spread across demo seeds (a new world and a new training seed each) in `demo` if
    given."""
    worlds = record["worlds"]
    methods = list(next(iter(next(iter(worlds.values()))["train_seeds"].values())))
    others = [m for m in methods if m != "erm"]
    names = [NAMES.get(m, m) for m in methods] + [f"{NAMES.get(m, m)} − ERM" for m in others]
    lines = [
        "| world | training seed | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * (len(methods) + len(others)),
    ]  # fmt: skip

    def columns(run: dict) -> list[float]:
        ood = {m: 100 * run[m]["ood_acc"] for m in methods}
        return [ood[m] for m in methods] + [ood[m] - ood["erm"] for m in others]

    within: list[list[list[float]]] = []  # per world, per column: the training seeds' values
    for world, split in worlds.items():
        rows = [columns(run) for run in split["train_seeds"].values()]
        within.append([list(column) for column in zip(*rows, strict=True)])
        for seed, row in zip(split["train_seeds"], rows, strict=True):
            lines.append(f"| {world} | {seed} | " + " | ".join(f"{v:.1f}" for v in row) + " |")
    # The pooled within-world standard deviation: each world's squared deviations from its own mean.
    pooled = []
    for c in range(len(methods) + len(others)):
        squares = sum(sum((v - statistics.fmean(w[c])) ** 2 for v in w[c]) for w in within)
        pooled.append(math.sqrt(squares / sum(len(w[c]) - 1 for w in within)))
    every = [[v for w in within for v in w[c]] for c in range(len(methods) + len(others))]  # per column, every run
    cells = [mean_se([v / 100 for v in column]) for column in every]
    for c in range(len(methods), len(cells)):
        cells[c] += f" ({sum(v > 0 for v in every[c])} of {len(every[c])} above)"
    lines.append(f"| every run | ({len(every[0])}) | " + " | ".join(cells) + " |")
    runs = [run for split in worlds.values() for run in split["train_seeds"].values()]
    if all("id_acc" in run[m] for run in runs for m in methods):  # what the selection rule sees of each method
        validation = [f"{100 * statistics.fmean(run[m]['id_acc'] for run in runs):.1f}" for m in methods]
        lines.append(f"| every run, source val | ({len(runs)}) | " + " | ".join(validation + [""] * len(others)) + " |")
    images = f", {record['per_class']} images per class and source domain" if "per_class" in record else ""
    images += f", {record['steps']} steps per stage" if "steps" in record else ""
    images += f", {describe_bias(record['context_bias'])}" if "context_bias" in record else ""
    images += f", {record['unlabelled']} unlabelled images in each source domain" if record.get("unlabelled") else ""
    lines += [
        "",
        "| standard deviation of the OOD accuracy (points) | " + " | ".join(names) + " |",
        "|---|" + "---|" * (len(methods) + len(others)),
        f"| across training seeds, one world (pooled over {len(worlds)}{images}) | "
        + " | ".join(f"{v:.1f}" for v in pooled) + " |",
    ]  # fmt: skip
    if demo is not None:
        across = [columns(run["methods"]) for run in demo["seeds"].values()]
        spread = [statistics.stdev(column) for column in zip(*across, strict=True)]
        lines.append(
            f"| across demo seeds ({len(across)}: a new world and a new training seed each) | "
            + " | ".join(f"{v:.1f}" for v in spread) + " |"
        )  # fmt: skip
    # The bar: above ERM on every one of 12 runs (three seeds of four paths). With a paired difference
    # spread normally by the training alone, that holds with probability 0.9 once its mean is z standard deviations.
    z = statistics.NormalDist().inv_cdf(0.9 ** (1 / 12))
    needed = "; ".join(f"{names[c]}: {z * pooled[c]:.1f}" for c in range(len(methods), len(names)))
    teacher = 100 * statistics.fmean(split["teacher_zeroshot"] for split in worlds.values())
    mean = {m: statistics.fmean(every[c]) for c, m in enumerate(methods)}
    closed = ", ".join(f"{NAMES.get(m, m)} {(mean[m] - mean['erm']) / (teacher - mean['erm']):.0%}" for m in others)
    lines += [
        "",
        f"The teacher's zero-shot accuracy on the held-out domain, over the worlds: {teacher:.1f}; the share of the "
        f"ERM-to-teacher gap the every-run means close: {closed}.",
        "",
        f"At these spreads, a method above ERM on all of 12 runs with probability 0.9 needs a mean gain of {z:.1f} "
        f"standard deviations of its paired difference across training seeds, in points: {needed}.",
    ]
    sources = [provenance(record)] + ([provenance(demo)] if demo is not None else [])
    return "\n".join([*lines, "", "\n\n".join(sources)]) + "\n"


def provenance(record: dict) -> str:
    return (
        f"`{record['command']}` ({record['measured']}, commit {record['commit'][:7]}"
        f"{', with uncommitted changes' if record['uncommitted_changes'] else ''}; {describe(record['machine'])})."
    )


def spread_table(record: dict, other: dict) -> str:
    """The same seeds measured twice (another machine, or other kernels): every OOD accuracy of both, how far
    apart, and whether each method's paired difference to ERM kept its sign."""
    seeds = [s for s in record["seeds"] if s in other["seeds"]]
    methods = list(record["seeds"][seeds[0]]["methods"])
    label = _kernels(other)
    lines = [
        "| seed | " + " | ".join(NAMES.get(m, m) for m in methods) + " |",
        "|---" * (len(methods) + 1) + "|",
    ]
    for seed in seeds:
        a, b = record["seeds"][seed]["methods"], other["seeds"][seed]["methods"]
        cells = [f"{100 * a[m]['ood_acc']:.1f} / {100 * b[m]['ood_acc']:.1f}" for m in methods]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    apart, flips = moves(record, other)
    compared = len(seeds) * (len(methods) - 1)
    lines += [
        "",
        f"OOD accuracy as measured / with {label}. The same seed moved by {statistics.fmean(apart):.1f} points on "
        f"average and {max(apart):.1f} at most; a method's place above or below ERM changed in {flips} of "
        f"{compared} (seed, method) pairs.",
        "",
        provenance(record),
        "",
        provenance(other),
    ]
    return "\n".join(lines) + "\n"


def moves(record: dict, other: dict) -> tuple[list[float], int]:
    """The same seeds measured twice: how far apart each (seed, method)'s OOD accuracy is, in points, and in how many
    pairs a method's place above or below ERM changed."""
    apart = []
    flips = 0
    for seed in (s for s in record["seeds"] if s in other["seeds"]):
        worlds = [{key: run["seeds"][seed].get(key, 0) for key in WORLD} for run in (record, other)]
        # A file from before unlabelled images existed says nothing of them: 0.
        if worlds[0] != worlds[1]:
            raise SystemExit(
                f"seed {seed} was measured on two worlds ({worlds[0]} and {worlds[1]}): measure both again"
            )
        a, b = record["seeds"][seed]["methods"], other["seeds"][seed]["methods"]
        for m in a:
            apart.append(abs(100 * a[m]["ood_acc"] - 100 * b[m]["ood_acc"]))
            if m != "erm" and "erm" in a:
                flips += (a[m]["ood_acc"] > a["erm"]["ood_acc"]) != (b[m]["ood_acc"] > b["erm"]["ood_acc"])
    return apart, flips


def _kernels(record: dict) -> str:
    kernels = record["machine"].get("kernels")
    if kernels:
        return ", ".join(f"{k}={v}" for k, v in kernels.items())
    return f"{record['machine']['cpu']}, {record['machine']['torch_threads']} threads"


def views_table(record: dict) -> str:
    """Per K: images paid and each method's OOD accuracy (mean ± s.e. over seeds, then every seed)."""
    methods = list(next(iter(next(iter(record["views"].values()))["seeds"].values()))["methods"])
    names = [NAMES.get(m, m) for m in methods]
    studies = list(record["views"].items())
    first = studies[0][0]
    lines = [
        "| views K | images paid | "
        + " | ".join(f"{n} OOD | {n} − K={first}, paired" for n in names)
        + " | every seed |",
        "|---|---|" + "---|---|" * len(methods) + "---|",
    ]
    base = {m: {s: r["methods"][m]["ood_acc"] for s, r in studies[0][1]["seeds"].items()} for m in methods}
    for k, study in studies:
        runs = list(study["seeds"].values())
        ood = {m: [r["methods"][m]["ood_acc"] for r in runs] for m in methods}
        every = "; ".join(NAMES.get(m, m) + " " + " / ".join(f"{100 * v:.1f}" for v in ood[m]) for m in methods)
        cells = []
        for m in methods:
            paired = [r["methods"][m]["ood_acc"] - base[m][s] for s, r in study["seeds"].items() if s in base[m]]
            above = sum(d > 0 for d in paired)
            cells += [mean_se(ood[m]), "" if k == first else f"{mean_se(paired)} ({above} of {len(paired)} above)"]
        lines.append(f"| {k} | {runs[0]['images_paid']} | {' | '.join(cells)} | {every} |")
    return "\n".join([*lines, "", provenance(record)]) + "\n"


def views_chart(record: dict, path: Path) -> None:
    """OOD accuracy against images paid (log scale), one line per method, bars of one standard error."""
    studies = {int(k): list(v["seeds"].values()) for k, v in record["views"].items()}
    methods = list(next(iter(studies.values()))[0]["methods"])
    series = {
        NAMES.get(m, m): [(runs[0]["images_paid"], [r["methods"][m]["ood_acc"] for r in runs]) for _, runs in
                          sorted(studies.items())]
        for m in methods
    }  # fmt: skip
    ticks = {runs[0]["images_paid"]: f"K={k}\n{runs[0]['images_paid']}" for k, runs in studies.items()}
    title = f"Demo world{', quick' if record['quick'] else ''}: OOD accuracy ({record['target']}) against images paid"
    line_chart(series, ticks, title, path)


def line_chart(series: dict[str, list[tuple[float, list[float]]]], ticks: dict, title: str, path: Path) -> None:
    """Lines of accuracy (mean over seeds, a bar of one standard error) against a log-scaled x, one per series."""
    from PIL import Image, ImageDraw, ImageFont

    width, height, left, bottom, top, right = 760, 420, 70, 60, 40, 200
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    values = [v for points in series.values() for _, vs in points for v in vs]
    xs = [x for points in series.values() for x, _ in points]
    low, high = min(values) - 0.02, min(1.0, max(values) + 0.02)
    span = math.log(max(xs)) - math.log(min(xs)) or 1.0

    def x_of(value: float) -> float:
        return left + (width - left - right) * (math.log(value) - math.log(min(xs))) / span

    def y_of(value: float) -> float:
        return top + (height - top - bottom) * (1 - (value - low) / (high - low))

    draw.text((left, 10), title, fill="black", font=font)
    for value, label in ticks.items():
        draw.line([(x_of(value), top), (x_of(value), height - bottom)], fill=(230, 230, 230))
        draw.text((x_of(value) - 20, height - bottom + 8), label, fill=(80, 80, 80), font=font)
    step = 2 if high - low < 0.2 else 5
    for tick in range(step * (int(low * 100) // step + 1), int(high * 100) + 1, step):
        draw.text((10, y_of(tick / 100) - 7), f"{tick}%", fill=(80, 80, 80), font=font)
    colours = [(255, 127, 14), (148, 103, 189), (44, 160, 44), (214, 39, 40), (31, 119, 180), (140, 86, 75),
               (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]  # fmt: skip
    for row, ((name, points), colour) in enumerate(zip(series.items(), colours, strict=False)):
        drawn = []
        for value, runs in points:
            mean = statistics.fmean(runs)
            drawn.append((x_of(value), y_of(mean)))
            if len(runs) > 1:
                se = standard_error(runs)
                draw.line([(x_of(value), y_of(mean - se)), (x_of(value), y_of(mean + se))], fill=colour, width=2)
        draw.line(drawn, fill=colour, width=3)
        legend = (width - right + 20, top + 18 * row)  # a legend beside the plot: lines may end at one point
        draw.line([legend[0], legend[1] + 7, legend[0] + 18, legend[1] + 7], fill=colour, width=3)
        draw.text((legend[0] + 24, legend[1]), name, fill=colour, font=font)
    image.save(path)


def budget_table(record: dict) -> str:
    """Per budget: each strategy's OOD accuracy per method (mean ± s.e. over seeds), images paid; the equal-spend
    comparison; and the issue's two goals, tested on these numbers."""
    seeds = list(record["study"].values())
    budgets = list(seeds[0]["budgets"])
    full = seeds[0]["budgets"][budgets[-1]]
    methods = list(next(iter(full.values()))["methods"])

    def ood(budget: str, strategy: str, method: str) -> list[float]:
        return [seed["budgets"][budget][strategy]["methods"][method]["ood_acc"] for seed in seeds]

    lines = [
        "| budget | images paid | cost (USD) | strategy | "
        + " | ".join(f"{NAMES.get(m, m)} OOD" for m in methods)
        + " |",
        "|---|---|---|---|" + "---|" * len(methods),
    ]
    for budget in budgets:
        for strategy in seeds[0]["budgets"][budget]:
            run = seeds[0]["budgets"][budget][strategy]
            cells = " | ".join(mean_se(ood(budget, strategy, m)) for m in methods)
            lines.append(f"| {budget}% | {run['images_paid']} | {run['cost']:.4f} | {strategy} | {cells} |")
    for name in seeds[0].get("equal_spend", {}):
        runs = [seed["equal_spend"][name] for seed in seeds]
        cells = " | ".join(mean_se([r["methods"][m]["ood_acc"] for r in runs]) for m in methods)
        first = runs[0]
        lines.append(f"| equal spend: {name} | {first['images_paid']} | {first['cost']:.4f} | stratified | {cells} |")
    lines.append("")
    top = budgets[-1]
    for m in methods:
        reference = statistics.fmean(ood(top, next(iter(full)), m))
        if "25" not in budgets:
            continue
        best = max((s for s in seeds[0]["budgets"]["25"] if s != "random"),
                   key=lambda s: statistics.fmean(ood("25", s, m)))  # fmt: skip
        share = statistics.fmean(ood("25", best, m)) / reference
        paired = [a - b for a, b in zip(ood("25", best, m), ood("25", "random", m), strict=True)]
        se = standard_error(paired)
        lines.append(
            f"- {NAMES.get(m, m)}: at 25% the best strategy, {best}, reaches {100 * share:.0f}% of the full budget's "
            f"OOD accuracy (goal: 95%, {'met' if share >= 0.95 else 'not met'}) and beats random by "
            f"{mean_se(paired)} points, paired by seed (goal: more than two standard errors, "
            f"{'met' if statistics.fmean(paired) > 2 * se else 'not met'})"
        )
    return "\n".join([*lines, "", provenance(record)]) + "\n"


def budget_chart(record: dict, path: Path) -> None:
    """OOD accuracy against images paid, one line per strategy and method (the full budget shared)."""
    seeds = list(record["study"].values())
    budgets = list(seeds[0]["budgets"])
    full = seeds[0]["budgets"][budgets[-1]]
    shared = next(iter(full))
    methods = list(full[shared]["methods"])
    series = {}
    for m in methods:
        for strategy in dict.fromkeys(s for b in budgets[:-1] for s in seeds[0]["budgets"][b]):
            points = [
                (seeds[0]["budgets"][b][strategy]["images_paid"],
                 [seed["budgets"][b][strategy]["methods"][m]["ood_acc"] for seed in seeds])
                for b in budgets[:-1] if strategy in seeds[0]["budgets"][b]
            ]  # fmt: skip
            points.append((full[shared]["images_paid"], [seed["budgets"][budgets[-1]][shared]["methods"][m]["ood_acc"]
                                                          for seed in seeds]))  # fmt: skip
            series[f"{NAMES.get(m, m)} {strategy}"] = points
    ticks = {seeds[0]["budgets"][b][next(iter(seeds[0]["budgets"][b]))]["images_paid"]: f"{b}%" for b in budgets}
    line_chart(series, ticks, f"Quick demo world: OOD accuracy ({record['target']}) against images paid", path)


def shortcut_table(record: dict) -> str:
    """Per student (and the teacher): accuracy on fresh source images over their own class's pattern, a random
    one and another class's, mean ± s.e. over seeds; the drop from own to another's; the held-out accuracy; and,
    paired by seed with ERM, the random-pattern, another's-pattern and held-out differences."""
    runs = list(record["shortcut"].values())
    models = list(runs[0]["accuracy"])
    lines = [
        "| model | own pattern | random pattern | another class's | own − another's | OOD (" + record["target"] + ") "
        "| random − ERM's, paired | another's − ERM's, paired | OOD − ERM's, paired |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        acc = {c: [r["accuracy"][m][c] for r in runs] for c in ("own", "random", "other")}
        drop = [a - b for a, b in zip(acc["own"], acc["other"], strict=True)]
        student = m in runs[0]["ood_acc"]
        ood = mean_se([r["ood_acc"][m] for r in runs]) if student else "–"
        paired = ["", "", ""]
        if student and m != "erm" and "erm" in runs[0]["ood_acc"]:
            background = [[r["accuracy"][m][c] - r["accuracy"]["erm"][c] for r in runs] for c in ("random", "other")]
            held_out = [r["ood_acc"][m] - r["ood_acc"]["erm"] for r in runs]
            paired = [f"{mean_se(d)} ({sum(v > 0 for v in d)} of {len(runs)} above)" for d in background]
            paired.append(mean_se(held_out))
        name = "teacher, zero-shot (demo CLIP)" if m == "teacher" else NAMES.get(m, m)
        lines.append(
            f"| {name} | {mean_se(acc['own'])} | {mean_se(acc['random'])} | {mean_se(acc['other'])} | "
            f"{mean_se(drop)} | {ood} | " + " | ".join(paired) + " |"
        )
    if "context_bias" in record:
        views = f", {record['views']} augmented views bought of each image" if record.get("views") else ""
        unlabelled = (
            f", {record['unlabelled']} unlabelled images in each source domain" if record.get("unlabelled") else ""
        )
        lines += ["", f"The world: {describe_bias(record['context_bias'])}{unlabelled}{views}; {len(runs)} seeds."]
    return "\n".join([*lines, "", provenance(record)]) + "\n"


def measured_demo() -> str:
    """cli/demo_measured.json: per path of the shipped demo (`default/sketch`, `quick/painting`, ...), every seed's
    OOD accuracy of the teacher and each method, where and when they were measured, and, where the same seeds were
    measured under other kernels too, how far those moved them."""
    paths = {}
    for name, others in MEASURED_FROM.items():
        record = json.loads((REPO / name).read_text())
        target = record["target"]
        entry = {
            "file": name,
            "command": record["command"],
            "measured": record["measured"],
            "commit": record["commit"][:7],
            "machine": describe(record["machine"]),
            "ood": {
                seed: {"teacher": run["teacher_zeroshot"][target]}
                | {method: score["ood_acc"] for method, score in run["methods"].items()}
                for seed, run in record["seeds"].items()
            },
        }
        if others:
            agains = [json.loads((REPO / other).read_text()) for other in others]
            apart = [points for again in agains for points in moves(record, again)[0]]
            entry["other_kernels"] = {
                "kernels": "; ".join(_kernels(again) for again in agains),
                "seeds": len({s for again in agains for s in again["seeds"] if s in record["seeds"]}),
                "mean_points": round(statistics.fmean(apart), 1),
                "max_points": round(max(apart), 1),
            }
        paths[f"{'quick' if record['quick'] else 'default'}/{target}"] = entry
    note = "Written by tools/render_results.py from docs/results/; never edited by hand (--check compares)."
    return json.dumps({"note": note, "paths": paths}, indent=1) + "\n"


def block_files(match: re.Match) -> list[str]:
    """The results files a block renders, in order."""
    return re.split(r" (?:vs|\+) ", match["files"])


def render(text: str, draw: bool = False) -> str:
    """`text` with every results block rendered from its file; with `draw`, the files' figures written too."""

    def table(match: re.Match) -> str:
        return match["open"] + body(match) + match["close"]

    def body(match: re.Match) -> str:
        paths = [REPO / name for name in block_files(match)]
        missing = [str(path.relative_to(REPO)) for path in paths if not path.is_file()]
        if missing:
            sys.exit(f"{', '.join(missing)}: a results block names a file that does not exist; run its command")
        records = [json.loads(path.read_text()) for path in paths]
        record, path = records[0], paths[0]
        if " + " in match["files"] and "search" in records[1]:
            return oracle_table(record, records[1:])
        if " + " in match["files"]:
            return pooled_table(records)
        if " vs " in match["files"]:
            if "load" in records[1]:
                return load_table(record, records[1])
            return (seed_split_table if "worlds" in record else spread_table)(record, records[1])
        if "worlds" in record:
            return seed_split_table(record, None)
        if "shortcut" in record:
            return shortcut_table(record)
        if "search" in record:
            return search_table(record)
        if "study" in record:
            if draw:
                budget_chart(record, path.with_suffix(".png"))
            return budget_table(record)
        if "views" not in record:
            return demo_table(record)
        if draw:
            views_chart(record, path.with_suffix(".png"))
        return views_table(record)

    return BLOCK.sub(table, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is stale")
    args = parser.parse_args()
    # Each file the results render into, and how: a document's blocks in place, the demo's measured seeds whole.
    outputs: dict[str, Callable[[str], str]] = dict.fromkeys(DOCUMENTS, lambda text: render(text, draw=not args.check))
    outputs[MEASURED] = lambda _: measured_demo()
    stale = []
    for name, rendering in outputs.items():
        path = REPO / name
        text = path.read_text() if path.is_file() else ""
        rendered = rendering(text)
        if rendered != text:
            stale.append(name)
            if not args.check:
                path.write_text(rendered)
    if args.check and stale:
        sys.exit(
            f"{', '.join(stale)}: a rendered result differs from its results file. Results are rendered, never "
            "edited: re-measure (tools/measure_demo.py) and run python tools/render_results.py in the same change"
        )


if __name__ == "__main__":
    main()
