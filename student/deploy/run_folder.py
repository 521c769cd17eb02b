"""A trained run as the exports read it: its student, what it was trained on and scored, and its own images.

An export must describe the model (the card) and check itself on images the run was evaluated on: the source
domains' validation splits (in domain) and the held-out target domain (out of domain), the splits `vl2v distill`
drew. Calibration for int8 uses the source domains' training splits only: the target stays unseen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cache.data.datasets import DatasetError, open_dataset
from cache.errors import UserError
from cache.store import EmbeddingCache

from ..checkpoint import MODEL_FILE, load_student
from ..data import Sample, make_splits
from ..environment import FILE as ENVIRONMENT
from ..methods.base import Method
from ..results import RunFolderError, read_json


@dataclass
class TrainedRun:
    """One trained student and the run around it."""

    model_path: Path
    method: Method
    meta: dict
    final: dict  # the run's last results.jsonl record: accuracies per split, the DomainBed args
    described: dict  # the run's config.json: its settings, the teacher, what the cache held
    environments: list[dict]  # the run's environment.json: the machine of each start or resume (older runs: none)

    @property
    def target(self) -> str:
        return self.meta["domains"][self.final["args"]["test_envs"][0]]

    @property
    def trial_seed(self) -> int:
        return int(self.final["args"]["trial_seed"])


@dataclass
class CheckImages:
    """The run's images by role, as paths under `root` with labels in the student's class order."""

    root: Path
    in_domain: list[Sample]  # the source domains' validation splits
    out_of_domain: list[Sample]  # the target domain, whole
    calibration: list[Sample]  # the source domains' training splits

    @property
    def evaluated(self) -> list[Sample]:
        return self.in_domain + self.out_of_domain


def open_run(path: Path) -> TrainedRun:
    """The student in `path`: a run folder holding one trained student, or its `model.safetensors`.

    Raises:
        RunFolderError: `path` is not a run (no student in it, or its files are missing), or it holds several
            students and one must be named.
        StudentFormatError: the student was written by a vl2v whose format this one does not read.
    """
    path = path.expanduser()
    if path.is_file():
        model = path
    elif path.is_dir():
        models = sorted(path.rglob(MODEL_FILE))
        if not models:
            raise RunFolderError(f"{path} is not a vl2v run folder: no {MODEL_FILE} under it (`vl2v distill --out`)")
        if len(models) > 1:
            names = ", ".join(str(m.parent) for m in models[:3])
            raise RunFolderError(f"{path} holds {len(models)} students; export one of them: {names}...")
        (model,) = models
    else:
        raise RunFolderError(f"{path} does not exist: give a `vl2v distill --out` folder or its {MODEL_FILE}")
    method, meta = load_student(model)
    results = model.parent / "results.jsonl"
    try:
        finals = [r for r in map(json.loads, results.read_text().splitlines()) if r.get("final")]
    except (OSError, ValueError) as e:
        raise RunFolderError(
            f"{results} cannot be read ({type(e).__name__}: {e}): is {model} in a run folder?"
        ) from None
    if not finals:
        raise RunFolderError(f"{results} holds no final record: was the run finished?")
    run_dir = model.parents[2]  # RUN/<target>/trial_<n>/model.safetensors
    described = read_json(run_dir / "config.json", "the run's settings (config.json)")
    recorded = run_dir / ENVIRONMENT
    environments = read_json(recorded, f"the run's machine ({ENVIRONMENT})") if recorded.is_file() else []
    return TrainedRun(model, method, meta, finals[-1], described, environments)


def check_images(run: TrainedRun, data_dir: Path | None = None) -> CheckImages:
    """The run's own splits, from `data_dir` or where the run read its dataset.

    Raises:
        UserError: the dataset is not there any more; the message says to pass --data-dir.
    """
    config = run.described["config"]
    root = data_dir or config.get("data_dir") or _bought_from(Path(config["cache_dir"]))
    if root is None:
        raise UserError(
            f"cannot find the images of {run.model_path} (its cache {config['cache_dir']} is gone); "
            "pass --data-dir with the dataset it was trained on"
        )
    try:
        dataset = open_dataset(run.meta["dataset"], Path(root))
    except DatasetError as e:
        raise UserError(f"{e}; pass --data-dir with the dataset {run.model_path} was trained on") from None
    label = {name: i for i, name in enumerate(run.meta["classes"])}
    dataset_classes = [label.get(c) for c in dataset.classes]
    splits = make_splits(dataset, {}, run.target, run.trial_seed, holdout=config.get("holdout"))

    def relabelled(samples: list[Sample]) -> list[Sample]:
        """In the student's class order; images of a class the student does not know are left out."""
        known = [(s, dataset_classes[s.label]) for s in samples]
        return [Sample(s.path, label, s.domain, None) for s, label in known if label is not None]

    target = splits.test_domain
    return CheckImages(
        root=dataset.root,
        in_domain=relabelled([s for d in splits.sources for s in splits.splits[d][1]]),
        out_of_domain=relabelled(splits.splits[target][0] + splits.splits[target][1]),
        calibration=relabelled([s for d in splits.sources for s in splits.splits[d][0]]),
    )


def _bought_from(cache_dir: Path) -> str | None:
    if not (cache_dir / "data.mdb").is_file():
        return None
    with EmbeddingCache.open(cache_dir) as cache:
        return cache.bound_dataset()["root"]
