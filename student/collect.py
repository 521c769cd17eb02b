"""Collecting a sweep: DomainBed's model selection per (dataset, method, target, trial), then one table per dataset
(methods x target domains, mean ± standard error over trials) as Markdown, LaTeX, a PNG and JSON."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .model_selection import TITLES, select
from .results import RunFolderError


def read_records(folder: Path) -> list[dict]:
    """Every record of every `results.jsonl` under `folder` (a sweep's, or any distill run folders')."""
    records = []
    for path in sorted(folder.rglob("results.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError as e:
                raise RunFolderError(f"{path}, line {number}, is not a DomainBed record ({e})") from None
    return records


def collect(records: list[dict], selection: str = "iid") -> dict:
    """{"selection", "datasets": {dataset: {"domains", "methods": {method: {target: cell}}, "average": ...}}}, a
    cell being {"mean", "stderr", "n", "values"} of the chosen test accuracies over trials (in %)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    domains: dict[str, list[str]] = {}
    for r in records:
        args = r["args"]
        groups[(args["dataset"], args["algorithm"], args["test_envs"][0], args["trial_seed"])].append(r)
        domains.setdefault(args["dataset"], args.get("domains") or [])
    chosen: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for (dataset, method, target, _), group in sorted(groups.items()):
        pick = select(group, selection)
        if pick is not None:
            name = domains[dataset][target] if target < len(domains[dataset]) else f"env{target}"
            chosen[dataset][method][name].append(100 * pick.test_acc)
    datasets = {}
    for dataset, methods in chosen.items():
        targets = [d for d in domains[dataset] if any(d in per for per in methods.values())]
        table = {m: {d: _cell(per[d]) for d in targets if d in per} for m, per in methods.items()}
        average = {
            m: statistics.fmean(c["mean"] for c in cells.values()) if len(cells) == len(targets) else None
            for m, cells in table.items()
        }
        datasets[dataset] = {"domains": targets, "methods": table, "average": average}
    return {"selection": selection, "title": TITLES[selection], "datasets": datasets}


def _cell(values: list[float]) -> dict:
    n = len(values)
    stderr = statistics.stdev(values) / n**0.5 if n > 1 else None
    return {"mean": statistics.fmean(values), "stderr": stderr, "n": n, "values": values}


def _text(cell: dict | None) -> str:
    if cell is None:
        return "–"
    if cell["stderr"] is None:
        return f"{cell['mean']:.1f} (n=1)"
    return f"{cell['mean']:.1f} ± {cell['stderr']:.1f}"


def markdown(collected: dict) -> str:
    parts = [f"Model selection: {collected['title']}. Accuracy (%) on each held-out domain, mean ± standard error "
             "over trials; Avg only where a method has every domain.\n"]  # fmt: skip
    for dataset, table in collected["datasets"].items():
        header = ["method", *table["domains"], "Avg"]
        lines = [f"### {dataset}", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        for method, cells in table["methods"].items():
            average = table["average"][method]
            row = [method, *(_text(cells.get(d)) for d in table["domains"]), f"{average:.1f}" if average else "–"]
            lines.append("| " + " | ".join(row) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def latex(collected: dict) -> str:
    parts = []
    for dataset, table in collected["datasets"].items():
        columns = "l" + "c" * (len(table["domains"]) + 1)
        escape = lambda text: text.replace("_", r"\_")  # noqa: E731
        lines = [
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{escape(dataset)}: accuracy (\%) on each held-out domain, mean $\pm$ standard error over "
            rf"trials; model selection: {collected['title']}.}}",
            rf"\begin{{tabular}}{{{columns}}}",
            r"\toprule",
            " & ".join(["Method", *map(escape, table["domains"]), "Avg"]) + r" \\",
            r"\midrule",
        ]
        for method, cells in table["methods"].items():
            average = table["average"][method]
            row = [escape(method), *(_text(cells.get(d)).replace("±", r"$\pm$") for d in table["domains"])]
            lines.append(" & ".join([*row, f"{average:.1f}" if average else "--"]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def table_png(collected: dict, path: Path) -> None:
    """The tables drawn as an image, one block per dataset."""
    font, bold = ImageFont.load_default(size=14), ImageFont.load_default(size=15)
    blocks = list(collected["datasets"].items())
    width = 160 + 150 * max((len(t["domains"]) + 1 for _, t in blocks), default=1)
    height = 40 + sum(60 + 26 * len(t["methods"]) for _, t in blocks)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((12, 10), f"Model selection: {collected['title']}", fill="black", font=bold)
    y = 40
    for dataset, table in blocks:
        draw.text((12, y), dataset, fill="black", font=bold)
        y += 24
        for j, name in enumerate([*table["domains"], "Avg"]):
            draw.text((160 + 150 * j, y), name, fill=(60, 60, 60), font=font)
        y += 22
        for method, cells in table["methods"].items():
            average = table["average"][method]
            draw.text((12, y), method, fill="black", font=font)
            for j, text in enumerate(
                [*(_text(cells.get(d)) for d in table["domains"]), f"{average:.1f}" if average else "–"]
            ):
                draw.text((160 + 150 * j, y), text, fill="black", font=font)
            y += 26
        y += 14
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
