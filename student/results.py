"""What `distill` returns and writes to RUN/summary.json: one record per (target, trial) run and per target domain.

Accuracies are fractions in [0, 1]. ID is the accuracy on the source domains' validation splits (DomainBed's
training-domain validation), OOD the accuracy on the whole held-out target domain.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from cache.errors import InvalidOption

SUMMARY_FILE = "summary.json"


class RunFolderError(InvalidOption):
    """A run folder that cannot be used as asked: `--out` holds another run, the settings differ from the run
    being resumed, or one of its files is missing or damaged (the message names it)."""


def read_json(path: Path, what: str) -> Any:
    """The JSON document in `path`, which should be `what`; a missing, unreadable or damaged file is one line.

    Raises:
        RunFolderError: naming the file and what it should have been.
    """
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFolderError(f"{path} not found: it should be {what}") from None
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8
        raise RunFolderError(f"{path} cannot be read as {what} ({type(e).__name__}: {e})") from None


@dataclass(frozen=True)
class TrialResult:
    """One (target domain, trial) run."""

    test_domain: str
    trial: int
    id_acc: float
    ood_acc: float
    run_dir: str
    trained_on: dict[str, dict[str, int]] = field(default_factory=dict)  # per source domain: in_split, with_embedding
    unreadable: dict = field(default_factory=dict)  # {"count": n, "examples": [...]}: files that failed to load
    averaging: dict = field(default_factory=dict)  # what weight averaging (SWAD, SMA) did, if the method uses it


@dataclass(frozen=True)
class TargetResult:
    """A target domain's trials together: mean accuracies and the standard error of the OOD mean."""

    test_domain: str
    id_acc: float
    ood_acc: float
    ood_stderr: float  # 0 for a single trial
    trials: int

    @classmethod
    def of(cls, test_domain: str, trials: Sequence[TrialResult]) -> TargetResult:
        ood = [t.ood_acc for t in trials]
        return cls(
            test_domain=test_domain,
            id_acc=statistics.fmean(t.id_acc for t in trials),
            ood_acc=statistics.fmean(ood),
            ood_stderr=statistics.stdev(ood) / len(ood) ** 0.5 if len(ood) > 1 else 0.0,
            trials=len(trials),
        )


@dataclass(frozen=True)
class DistillSummary:
    """Every run of one `distill` call: per trial (`runs`), per target domain (`results`) and over targets."""

    method: str
    student: str
    run_dir: str
    runs: tuple[TrialResult, ...]
    domains: tuple[str, ...]  # every domain of the dataset, in its order
    changed_since_bought: dict = field(default_factory=dict)  # images edited or missing since the query

    @cached_property  # (read by the means and by to_json: grouped once)
    def results(self) -> tuple[TargetResult, ...]:
        targets = dict.fromkeys(r.test_domain for r in self.runs)
        return tuple(TargetResult.of(t, [r for r in self.runs if r.test_domain == t]) for t in targets)

    @property
    def mean_id_acc(self) -> float:
        return statistics.fmean(r.id_acc for r in self.results)

    @property
    def mean_ood_acc(self) -> float:
        """The mean over target domains of each domain's mean over trials (DomainBed's average)."""
        return statistics.fmean(r.ood_acc for r in self.results)

    def result(self, test_domain: str) -> TargetResult:
        for r in self.results:
            if r.test_domain == test_domain:
                return r
        raise KeyError(f"no run held out {test_domain!r}; held out: {[r.test_domain for r in self.results]}")

    def to_json(self) -> dict:
        """The summary.json layout: the fields, the per-target results and their means."""
        return {
            "method": self.method,
            "student": self.student,
            "run_dir": self.run_dir,
            "results": [asdict(r) for r in self.results],
            "mean": {"id_acc": self.mean_id_acc, "ood_acc": self.mean_ood_acc},
            "runs": [asdict(r) for r in self.runs],
            "domains": list(self.domains),
            "changed_since_bought": self.changed_since_bought,
        }

    def write(self, run: Path) -> None:
        (run / SUMMARY_FILE).write_text(json.dumps(self.to_json(), indent=2))

    @classmethod
    def read(cls, run: Path) -> DistillSummary:
        """The summary of the run folder `run` (`vl2v distill --out`)."""
        path = run / SUMMARY_FILE
        data = read_json(path, what=f"the summary of a finished `vl2v distill --out` folder ({run})")
        try:
            return cls(
                method=data["method"],
                student=data["student"],
                run_dir=data["run_dir"],
                runs=tuple(TrialResult(**r) for r in data["runs"]),
                domains=tuple(data["domains"]),
                changed_since_bought=data.get("changed_since_bought", {}),
            )
        except (KeyError, TypeError) as e:
            raise RunFolderError(f"{path} is not a vl2v run summary ({type(e).__name__}: {e})") from None


@dataclass(frozen=True)
class MethodScore:
    """One method's student in the demo: accuracies of its single run, and the seconds it took."""

    id_acc: float
    ood_acc: float
    seconds: float


MIN_GAP = 0.02  # below two points of OOD accuracy between ERM and the teacher there is no gap to speak of


def gap_closed(teacher_ood: float, methods: dict[str, MethodScore]) -> dict[str, float]:
    """Each method's share of the ERM-to-teacher OOD gap it closes: 0 is ERM, 1 the teacher; empty when there is
    no gap (the teacher less than `MIN_GAP` above ERM), since a share of nothing means nothing."""
    if "erm" not in methods or teacher_ood - methods["erm"].ood_acc < MIN_GAP:
        return {}
    erm = methods["erm"].ood_acc
    return {m: round((r.ood_acc - erm) / (teacher_ood - erm), 4) for m, r in methods.items() if m != "erm"}


@dataclass(frozen=True)
class DemoResult:
    """What `vl2v demo` found (OUT/demo.json): the teacher zero-shot and each method's student, one target."""

    target: str
    teacher_zeroshot: dict[str, float]  # per domain
    methods: dict[str, MethodScore]
    images_paid: int
    texts_paid: int
    cost: float
    currency: str
    student: str
    student_weights: str | None
    steps: int
    context_bias: float | None
    views: int
    seed: int
    out: str
    chart: str
    seconds: float
    machine: dict = field(default_factory=dict)  # `student.environment`: what the numbers were computed on
    unlabelled: int = 0  # unlabelled images per source domain (absent from results files before they existed)

    @property
    def gap_closed(self) -> dict[str, float]:
        return gap_closed(self.teacher_zeroshot[self.target], self.methods)

    def to_json(self) -> dict:
        return asdict(self) | {"gap_closed": self.gap_closed}


NEAR_CHANCE_SHARE = 0.1  # of the way from chance to perfect accuracy, below which a teacher teaches nothing


@dataclass(frozen=True)
class DomainAccuracy:
    """Accuracy per domain, and how many images each was measured on; `mean` is over domains."""

    accuracy: dict[str, float]
    images: dict[str, int]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracy.values())

    def to_json(self) -> dict:
        return asdict(self) | {"mean": self.mean}


@dataclass(frozen=True)
class ZeroShot(DomainAccuracy):
    """The teacher's zero-shot accuracy from cached embeddings, with one prompt set, over `classes` classes."""

    template_set: str
    classes: int

    @property
    def chance(self) -> float:
        return 1 / self.classes

    @property
    def near_chance(self) -> bool:
        """Whether the teacher gets less than a tenth of the way from chance to perfect: a student distilled from
        it learns next to nothing (CLIP ViT-B/16 is at 96% on PACS, where chance is 14%)."""
        return self.mean < self.chance + NEAR_CHANCE_SHARE * (1 - self.chance)

    def to_json(self) -> dict:
        return super().to_json() | {"chance": self.chance, "near_chance": self.near_chance}

    def warning(self, dataset: str) -> str | None:
        """What to tell a user whose teacher is near chance on `dataset`, or None."""
        if not self.near_chance:
            return None
        return (
            f"the teacher's zero-shot accuracy on {dataset} is {100 * self.mean:.1f}%, near chance "
            f"({100 * self.chance:.1f}% for {self.classes} classes): a student distilled from it will learn next "
            "to nothing. Check the teacher's weights (a model served with random or wrong weights, or one trained "
            "on other images, such as `--model demo` on real photos)"
        )


@dataclass(frozen=True)
class Evaluation(DomainAccuracy):
    """A saved student on every domain of a dataset folder."""

    model: str
    data_dir: str
    unreadable: dict  # {"count": n, "examples": [...]}: images left out because they cannot be read


@dataclass(frozen=True)
class Prediction:
    """A student's top classes for one image (class, probability), best first; or why the image was not read."""

    image: str
    top: tuple[tuple[str, float], ...] = ()
    error: str | None = None

    def to_json(self) -> dict:
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        return {"image": self.image, "top": [{"class": c, "probability": p} for c, p in self.top]}
