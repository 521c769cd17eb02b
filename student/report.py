"""`vl2v report`: runs aggregated into one table (methods x target domains, mean +- standard error) and a chart."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont


def collect(runs: list[Path]) -> dict:
    """{method: {target: [ood_acc per trial]}} and the ID accuracies, from each run's summary.json."""
    table: dict[str, dict[str, list[float]]] = {}
    ids: dict[str, list[float]] = {}
    domains: list[str] = []
    for run in runs:
        path = run / "summary.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (is {run} a `vl2v distill --out` folder?)")
        summary = json.loads(path.read_text())
        method = summary["method"]
        for r in summary["runs"]:
            table.setdefault(method, {}).setdefault(r["test_domain"], []).append(r["ood_acc"])
            ids.setdefault(method, []).append(r["id_acc"])
            if r["test_domain"] not in domains:
                domains.append(r["test_domain"])
    return {"table": table, "id": ids, "domains": domains}


def _cell(values: list[float]) -> str:
    """mean ± standard error over trials; with one trial there is no error to show, and it says n=1."""
    if not values:
        return "–"
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.1f} (n=1)"
    return f"{mean:.1f} ± {100 * statistics.stdev(values) / len(values) ** 0.5:.1f} (n={len(values)})"


def markdown(collected: dict) -> str:
    """The table, with a note wherever a method's mean is over fewer target domains than the table shows."""
    domains, table = collected["domains"], collected["table"]
    lines = ["| method | " + " | ".join(domains) + " | mean OOD | ID (source val) |", "|---" * (len(domains) + 3) + "|"]
    notes = []
    for method, per_domain in table.items():
        covered = [d for d in domains if d in per_domain]
        means = [statistics.fmean(per_domain[d]) for d in covered]
        mean = f"{100 * statistics.fmean(means):.1f}" if means else "–"
        if covered and len(covered) < len(domains):
            notes.append(f"{method}'s mean OOD is over {', '.join(covered)} only")
            mean += f" [{len(notes)}]"
        cells = " | ".join(_cell(per_domain.get(d, [])) for d in domains)
        lines.append(f"| {method} | {cells} | {mean} | {_cell(collected['id'][method])} |")
    text = (
        "\n".join(lines) + "\n\nOOD: accuracy (%) on the whole target domain; mean ± standard error over trials (n).\n"
    )
    return text + "".join(
        f"[{i}] {note}; the means of the rows are not comparable.\n" for i, note in enumerate(notes, 1)
    )


def chart(collected: dict, path: Path) -> None:
    """Grouped bars: one group per target domain, one bar per method (PNG)."""
    domains, methods = collected["domains"], list(collected["table"])
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
    width, height, margin = 140 * max(1, len(domains)) + 160, 420, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    plot_h = height - 2 * margin
    draw.line([(margin, margin), (margin, height - margin), (width - 150, height - margin)], fill="black")
    for tick in range(0, 101, 25):
        y = height - margin - plot_h * tick / 100
        draw.text((5, y - 6), f"{tick}%", fill="black", font=font)
    group = (width - 150 - margin) / max(1, len(domains))
    bar = group * 0.8 / max(1, len(methods))
    for i, domain in enumerate(domains):
        x0 = margin + i * group + group * 0.1
        for j, method in enumerate(methods):
            values = collected["table"][method].get(domain)
            if values:
                top = height - margin - plot_h * statistics.fmean(values)
                draw.rectangle(
                    [x0 + j * bar, top, x0 + (j + 1) * bar - 2, height - margin], fill=colours[j % len(colours)]
                )
                label = f"{100 * statistics.fmean(values):.0f}"
                draw.text((x0 + j * bar + 2, top - 12), label, fill="black", font=font)
        draw.text((x0, height - margin + 8), domain[:18], fill="black", font=font)
    for j, method in enumerate(methods):
        draw.rectangle(
            [width - 140, margin + 18 * j, width - 128, margin + 18 * j + 12], fill=colours[j % len(colours)]
        )
        draw.text((width - 122, margin + 18 * j), method, fill="black", font=font)
    draw.text((margin, 15), "OOD accuracy by target domain", fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
