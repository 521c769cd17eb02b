"""`vl2v report`: runs aggregated into one table (methods x target domains, mean +- standard error) and a chart."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .results import DemoResult, DistillSummary

# What tells one trial of a run from another: pooled over, they are the trials of one cell.
TRIAL_SEEDS = {"train.seed", "first_trial", "trials", "test_domains"}


def collect(runs: list[Path]) -> dict:
    """{row: {target: [ood_acc per trial]}}, the ID accuracies, and what was set aside, from each run folder's
    summary.json and config.json.

    A trial counts once however often its run is named or copied: two trials with the same settings, target and
    trial seed are one trial (the first named is kept, the others listed under "duplicates"). Runs of one method
    whose settings differ in anything but the trial seed (student, steps, image size, views, hyper-parameters,
    teacher, cache) are rows of their own, labelled by what differs, never pooled into one cell.
    """
    from .run import read_described  # torch comes with it: not at import, so `vl2v --help` stays fast
    from .run import result_settings as settings_of

    trials: dict[tuple, str] = {}
    duplicates: list[str] = []
    kept: list[tuple[str, dict[str, object], str, float, float]] = []  # method, settings, target, ood, id
    domains: list[str] = []
    for run in runs:
        summary = DistillSummary.read(run)
        # A summary without its config.json (written by hand, or by another tool) is told apart by its student only.
        described: dict = (
            read_described(run) if (run / "config.json").exists() else {"config": {"student": summary.student}}
        )
        settings = {k: v for k, v in settings_of(described).items() if k not in TRIAL_SEEDS}
        signature = json.dumps(settings, sort_keys=True, default=str)
        seed = settings_of(described).get("train.seed")
        base_seed = seed if isinstance(seed, int) else 0
        for r in summary.runs:
            identity = (summary.method, signature, r.test_domain, r.trial, base_seed + r.trial)
            where = f"{run}: {r.test_domain} trial {r.trial}"
            if identity in trials:
                duplicates.append(f"{where} is the same trial as {trials[identity]}")
                continue
            trials[identity] = where
            kept.append((summary.method, settings, r.test_domain, r.ood_acc, r.id_acc))
            if r.test_domain not in domains:
                domains.append(r.test_domain)
    labels = _row_labels([(method, settings) for method, settings, *_ in kept])
    table: dict[str, dict[str, list[float]]] = {}
    ids: dict[str, list[float]] = {}
    for (_, _, target, ood, id_acc), label in zip(kept, labels, strict=True):
        table.setdefault(label, {}).setdefault(target, []).append(ood)
        ids.setdefault(label, []).append(id_acc)
    return {"table": table, "id": ids, "domains": domains, "duplicates": duplicates}


def _row_labels(rows: list[tuple[str, dict[str, object]]]) -> list[str]:
    """Each row's method, and where one method was run with several settings, the settings that tell them apart
    ("erm (train.steps=4)")."""
    variants: dict[str, list[dict[str, object]]] = {}
    for method, settings in rows:
        if settings not in variants.setdefault(method, []):
            variants[method].append(settings)
    labels = []
    for method, settings in rows:
        if len(variants[method]) == 1:
            labels.append(method)
            continue
        keys = sorted({k for v in variants[method] for k in v if any(v.get(k) != w.get(k) for w in variants[method])})
        labels.append(f"{method} ({', '.join(f'{k}={_short(settings.get(k))}' for k in keys[:3])})")
    return labels


def _short(value: object) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict | list) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
    text += "".join(f"[{i}] {note}; the means of the rows are not comparable.\n" for i, note in enumerate(notes, 1))
    if collected.get("duplicates"):
        text += "\nCounted once (a run named twice, or a copy of one):\n" + "".join(
            f"- {line}\n" for line in collected["duplicates"]
        )
    return text


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


NAMES = {"erm": "ERM", "kd": "KD", "rise": "RISE", "scmd": "SCMD", "adip": "VL2V-ADiP", "sd": "VL2V-SD"}


def demo_chart(result: DemoResult, path: Path) -> None:
    """The demo at a glance: for the teacher and each student, held-out (OOD) accuracy as a dark bar and
    source-validation (ID) accuracy as a light one, with chance and ERM's OOD marked."""
    rows = [
        (
            "teacher (zero-shot)",
            _mean_except(result.teacher_zeroshot, result.target),
            result.teacher_zeroshot[result.target],
            (90, 90, 90),
        )
    ]
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
    for i, (method, r) in enumerate(result.methods.items()):
        rows.append((NAMES.get(method, method), r.id_acc, r.ood_acc, palette[i % len(palette)]))
    font, small = ImageFont.load_default(size=15), ImageFont.load_default(size=12)
    left, right, top, row_h = 170, 180, 70, 44
    width, height = 860, top + row_h * len(rows) + 56
    plot = width - left - right
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text(
        (16, 14),
        f"Held-out domain '{result.target}': accuracy of the teacher and each student",
        fill="black",
        font=font,
    )
    draw.text(
        (16, 38),
        f"dark: OOD ({result.target}), light: ID (source validation); student {result.student}",
        fill=(80, 80, 80),
        font=small,
    )
    for tick in range(0, 101, 20):
        x = left + plot * tick / 100
        draw.line([(x, top - 6), (x, top + row_h * len(rows))], fill=(225, 225, 225))
        draw.text((x - 10, top + row_h * len(rows) + 6), f"{tick}%", fill=(80, 80, 80), font=small)
    for i, (name, id_acc, ood_acc, colour) in enumerate(rows):
        y = top + i * row_h
        light = tuple(int(c + (255 - c) * 0.65) for c in colour)
        draw.text((16, y + 12), name, fill="black", font=font)
        draw.rectangle([left, y + 6, left + plot * ood_acc, y + 24], fill=colour)
        draw.rectangle([left, y + 27, left + plot * id_acc, y + 35], fill=light)
        draw.text((left + plot + 8, y + 8), f"OOD {100 * ood_acc:.1f}%", fill="black", font=font)
        draw.text((left + plot + 8, y + 26), f"ID {100 * id_acc:.1f}%", fill=(80, 80, 80), font=small)
    bottom = top + row_h * len(rows)
    for value, label, colour in [(1 / 8, "chance", (150, 150, 150))] + (
        [(result.methods["erm"].ood_acc, "ERM", (31, 119, 180))] if "erm" in result.methods else []
    ):
        x = left + plot * value
        for y in range(top - 6, bottom, 6):
            draw.line([(x, y), (x, y + 3)], fill=colour)
        draw.text((x + 3, bottom + 20), label, fill=colour, font=small)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _mean_except(accuracy: dict[str, float], target: str) -> float:
    sources = [a for d, a in accuracy.items() if d != target]
    return sum(sources) / len(sources)
