"""What the shipped demo was measured to give, for `vl2v demo` to show beside a user's own run.

A single run says little on this world (docs/demo.md measures the spread), so the demo's table puts each model's
held-out accuracy next to the range its measured seeds spanned and, for a measured seed, what that seed gave.
`demo_measured.json` beside this module is written by `tools/render_results.py` from the results files under
docs/results/ and checked by the tests against them: it holds no number typed by hand.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from importlib import resources

from student.config import DemoConfig


@dataclass(frozen=True)
class MeasuredDemo:
    """One path of the shipped demo (default or `--quick`, one held-out domain) as its results file measured it."""

    file: str  # the results file, under docs/ of the repository
    measured: str  # the date
    commit: str
    machine: str  # CPU, threads and torch build
    ood: dict[int, dict[str, float]]  # seed -> model ("teacher", "erm", ...) -> OOD accuracy
    other_kernels: dict | None  # how far other CPU kernels or threads moved the same seeds, where measured

    def span(self, model: str) -> tuple[float, float]:
        """The lowest and highest OOD accuracy `model` reached over the measured seeds."""
        values = [run[model] for run in self.ood.values()]
        return min(values), max(values)

    def seeds(self) -> str:
        return ", ".join(str(seed) for seed in self.ood)

    def describe(self, this_run: str) -> str:
        """Where these numbers come from, beside the machine `this_run` computed on, and how far another machine
        moves them, in one paragraph for a terminal."""
        line = (
            f"measured: seeds {self.seeds()} of this demo on {self.machine} ({self.measured}, commit {self.commit}); "
            f"this run on {this_run}"
        )
        moved = self.other_kernels
        if moved:
            line += (
                f"; the same seeds with other CPU kernels or threads ({moved['kernels']}) moved by "
                f"{moved['mean_points']} points on average, {moved['max_points']} at most, so on another machine your "
                "seed's row can differ"
            )
        return line + f"; docs/demo.md has every table ({self.file})"


def path_of(config: DemoConfig) -> str | None:
    """`default/<target>` or `quick/<target>` when `config` is the shipped demo or its `--quick`, whatever its seed,
    output folder or choice among the methods (each method trains on its own); None for anything else."""
    mine = dataclasses.replace(config, seed=0, out=DemoConfig.out, methods=DemoConfig.methods)
    shipped = DemoConfig(target=config.target)
    if mine == shipped:
        return f"default/{config.target}"
    if mine == shipped.quick():
        return f"quick/{config.target}"
    return None


def measured_for(config: DemoConfig) -> MeasuredDemo | None:
    """What the seeds measured on `config`'s path gave; None when that path was not measured."""
    path = path_of(config)
    if path is None:
        return None
    paths = json.loads(resources.files("cli").joinpath("demo_measured.json").read_text())["paths"]
    if path not in paths:
        return None
    entry = paths[path]
    return MeasuredDemo(
        file=entry["file"],
        measured=entry["measured"],
        commit=entry["commit"],
        machine=entry["machine"],
        ood={int(seed): run for seed, run in entry["ood"].items()},
        other_kernels=entry.get("other_kernels"),
    )
