"""Render the result tables of the README and docs/ from the results files that measured them.

    python tools/render_results.py           # rewrite every table in place
    python tools/render_results.py --check   # exit 1, naming the file, when a table differs from its results file

A table lives between `<!-- results FILE -->` and `<!-- end results -->`, FILE being a results file written by
`tools/measure_demo.py`; nothing between the markers is written by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/demo.md")
BLOCK = re.compile(r"(<!-- results (?P<file>\S+) -->\n)(?P<body>.*?)(<!-- end results -->)", re.S)
NAMES = {"erm": "ERM", "kd": "KD", "rise": "RISE", "scmd": "SCMD", "adip": "VL2V-ADiP", "sd": "VL2V-SD"}


def mean_se(values: list[float]) -> str:
    """In points: "72.4 ± 2.5" (standard error of the mean), or the value alone for one seed."""
    mean = 100 * statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {100 * statistics.stdev(values) / len(values) ** 0.5:.1f}"


def demo_table(record: dict) -> str:
    """Teacher and methods (ID, OOD, paired OOD difference to ERM), then every seed's OOD accuracy."""
    seeds = record["seeds"]
    target = record["target"]
    runs = list(seeds.values())
    methods = list(runs[0]["methods"])
    ood = {m: [r["methods"][m]["ood_acc"] for r in runs] for m in methods}
    teacher = [r["teacher_zeroshot"][target] for r in runs]
    lines = [
        f"| model | ID (source val) | OOD ({target}) | OOD − ERM, paired | above ERM | gap closed |",
        "|---|---|---|---|---|---|",
        f"| teacher, zero-shot (demo CLIP) | – | {mean_se(teacher)} | | | |",
    ]
    for m in methods:
        ids = [r["methods"][m]["id_acc"] for r in runs]
        if m == "erm" or "erm" not in ood:
            lines.append(f"| {NAMES.get(m, m)} | {mean_se(ids)} | {mean_se(ood[m])} | | | |")
            continue
        differences = [a - b for a, b in zip(ood[m], ood["erm"], strict=True)]
        above = sum(d > 0 for d in differences)
        # The share of the ERM-to-teacher gap the method closes, on the means over seeds.
        gap = statistics.fmean(differences) / (statistics.fmean(teacher) - statistics.fmean(ood["erm"]))
        lines.append(
            f"| {NAMES.get(m, m)} | {mean_se(ids)} | {mean_se(ood[m])} | {mean_se(differences)} | "
            f"{above} of {len(differences)} seeds | {100 * gap:.0f}% |"
        )
    lines += ["", "| seed | teacher | " + " | ".join(NAMES.get(m, m) for m in methods) + " | seconds |"]
    lines.append("|---" * (len(methods) + 3) + "|")
    for seed, r in seeds.items():
        cells = [f"{100 * r['methods'][m]['ood_acc']:.1f}" for m in methods]
        lines.append(
            f"| {seed} | {100 * r['teacher_zeroshot'][target]:.1f} | " + " | ".join(cells) + f" | {r['wall_s']:.0f} |"
        )
    m = record["machine"]
    lines += [
        "",
        f"`{record['command']}` ({record['measured']}, commit {record['commit'][:7]}"
        f"{', with uncommitted changes' if record['uncommitted_changes'] else ''}; {m['cpu']}, "
        f"{m['torch_threads']} threads, torch {m['torch']}).",
    ]
    return "\n".join(lines) + "\n"


def render(text: str) -> str:
    def table(match: re.Match) -> str:
        record = json.loads((REPO / match["file"]).read_text())
        return match[1] + demo_table(record) + match[4]

    return BLOCK.sub(table, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is stale")
    args = parser.parse_args()
    stale = []
    for name in DOCUMENTS:
        path = REPO / name
        text = path.read_text()
        rendered = render(text)
        if rendered != text:
            stale.append(name)
            if not args.check:
                path.write_text(rendered)
    if args.check and stale:
        sys.exit(
            f"{', '.join(stale)}: a results table differs from its results file. Tables are rendered, never "
            "edited: re-measure (tools/measure_demo.py) and run python tools/render_results.py in the same change"
        )


if __name__ == "__main__":
    main()
