"""`distill(config)`: every (target domain, trial) run of one method, from the cache alone, into one run folder.

RUN/config.json                      the resolved configuration
RUN/environment.json                 the machine and software of each start or resume (`environment`)
RUN/summary.json                     per trial and target domain: ID (source validation) and OOD (target) accuracy
                                     (`results.DistillSummary`)
RUN/<target>/trial_<k>/results.jsonl DomainBed-style records (readable by DomainBed's collect_results)
RUN/<target>/trial_<k>/model.safetensors   the student and what prediction needs
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import torch

from cache.data.datasets import REGISTRY, open_dataset, prompt_words
from cache.errors import InvalidOption
from cache.store import EmbeddingCache

from .checkpoint import MODEL_FILE, save_student
from .config import DistillConfig, TrainConfig
from .data import eval_transform, make_splits, train_transform
from .distributed import Ranks, process_group, ranks_from_environment
from .environment import FILE as ENVIRONMENT
from .environment import record_environment
from .knowledge import TeacherKnowledge
from .methods import get_method
from .methods.base import Context
from .results import DistillSummary, RunFolderError, TrialResult, read_json
from .trainer import Progress, Trainer

log = logging.getLogger("vl2v.distill")


# Settings that change how fast a run goes, not what it computes: a resumed run may change them.
_RESUMABLE_CHANGES = {
    "resume",
    "overwrite",
    "out",
    "data_dir",
    "train.workers",
    "train.device",
    "train.eval_batch_size",
}


def distill(
    config: DistillConfig, on_progress: Callable[[str, Progress], None] = lambda run, p: None
) -> DistillSummary | None:
    """Train and evaluate; returns the summary (also written to RUN/summary.json). Under torchrun, every rank
    trains its share and rank 0 alone writes and returns the summary (the others return None)."""
    ranks = ranks_from_environment()
    with process_group(ranks, config.train.device) as device:
        return _distill(config, on_progress, ranks, device)


def _distill(config: DistillConfig, on_progress, ranks: Ranks, device: str) -> DistillSummary | None:
    method_cls = get_method(config.method)
    hparams = method_cls.Hparams.with_overrides(config.overrides)
    with EmbeddingCache.open(config.cache_dir) as cache:
        knowledge = TeacherKnowledge.from_cache(cache)
        recorded = cache.bound_dataset()
        keys_by_path = {p: k for k, paths in cache.items() if k in knowledge.index for p in paths}
    root = Path(config.data_dir or recorded["root"])
    dataset = open_dataset(recorded["name"], root)
    targets = list(dataset.domains) if config.test_domains == ("all",) else list(config.test_domains)
    for target in targets:
        if target not in dataset.domains:
            raise InvalidOption(f"--test-domain {target!r} is not one of {list(dataset.domains)} (or 'all')")
    described = json.loads(json.dumps(_describe(config, hparams, knowledge), default=str))
    made = ranks.on_leader(lambda: _claim_out(config, described))
    ranks.on_leader(lambda: record_environment(config.out, device, resumed=not made))
    try:
        keys_by_path, changed = ranks.on_leader(lambda: unchanged_files(dataset.root, keys_by_path))
        train = TrainConfig(**(asdict(config.train) | {"device": device}))
        runs = [
            _one_run(config, train, method_cls, hparams, knowledge, dataset, keys_by_path, t, trial, on_progress, ranks)
            for t in targets
            for trial in range(config.first_trial, config.first_trial + config.trials)
        ]
    except BaseException:
        if made and ranks.leader:
            _discard_if_untrained(config.out)
        raise
    if not ranks.leader:
        return None
    summary = DistillSummary(
        method=config.method,
        student=config.student,
        run_dir=str(config.out),
        runs=tuple(r for r in runs if r is not None),
        domains=tuple(dataset.domains),
        changed_since_bought=changed,
    )
    summary.write(config.out)
    return summary


def _claim_out(config: DistillConfig, described: dict) -> bool:
    """Make `config.out` this run's folder: a new one, the same run resumed, or a replaced run when asked. True
    when the folder is new (or replaced), False when a run is resumed in it.

    Raises:
        RunFolderError: the folder holds another run (and neither --resume nor --overwrite was given), the run to
            resume was started with other settings, or the folder is not a run folder at all.
    """
    out, recorded = config.out, config.out / "config.json"
    if out.is_dir() and any(out.iterdir()):
        if not recorded.is_file():
            raise RunFolderError(f"--out {out} exists and is not a vl2v run folder; choose another --out")
        if config.resume:
            differences = _differences(read_described(out), described)
            if differences:
                raise RunFolderError(
                    f"--resume: {out} was started with other settings ({'; '.join(differences[:4])}); resume it "
                    "with the same settings, or pass --overwrite to start it again"
                )
            return False
        if not config.overwrite:
            raise RunFolderError(
                f"--out {out} already holds a run; pass --resume to continue it with the same settings, or "
                "--overwrite to replace it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(described, indent=2))
    return True


def _discard_if_untrained(out: Path) -> None:
    """Remove a new run folder that failed before its first checkpoint, so that the same command can be run
    again (a folder that holds only `config.json` and `environment.json` has nothing to resume)."""
    if all(path.name in ("config.json", ENVIRONMENT) for path in out.rglob("*") if path.is_file()):
        shutil.rmtree(out, ignore_errors=True)


def result_settings(described: dict) -> dict[str, object]:
    """Everything in a run's `config.json` that changes what it computes, flat ("train.steps": 4): its settings
    (less those that only change how fast it goes), its hyper-parameters, its teacher and the cache it read."""
    flat = {k: v for k, v in _flatten(described.get("config", {})).items() if k not in _RESUMABLE_CHANGES}
    return flat | {part: described.get(part) for part in ("hparams", "teacher", "cached_images")}


def read_described(run: Path) -> dict:
    """A run folder's `config.json`, as `_describe` wrote it.

    Raises:
        RunFolderError: it is missing or not JSON (one line naming the file).
    """
    path = run / "config.json"
    described = read_json(path, what="a vl2v run folder's config.json")
    if not isinstance(described, dict):
        raise RunFolderError(f"{path} is not a vl2v run configuration")
    return described


def _differences(before: dict, now: dict) -> list[str]:
    """'key: old -> new' for every setting that changes what the run computes."""
    flat_before, flat_now = result_settings(before), result_settings(now)
    return [
        f"{key}: {flat_before.get(key)!r} -> {flat_now.get(key)!r}"[:200]
        for key in sorted(set(flat_before) | set(flat_now))
        if flat_before.get(key) != flat_now.get(key)
    ]


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "overrides":
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def unchanged_files(root: Path, keys_by_path: dict[str, str], workers: int = 8) -> tuple[dict[str, str], dict]:
    """Keep only the files whose bytes still hash to the embedding bought for them; say what was left out.

    An image edited or replaced since the query has an embedding of other pixels: training on the pair would
    teach the student something the teacher never said.
    """

    def check(item: tuple[str, str]) -> str:
        path, key = item
        try:
            digest = hashlib.sha256((root / path).read_bytes()).hexdigest()
        except OSError:
            return "missing"
        return "ok" if digest == key else "changed"

    with ThreadPoolExecutor(workers, thread_name_prefix="vl2v-hash") as pool:
        verdicts = dict(zip(keys_by_path, pool.map(check, keys_by_path.items()), strict=True))
    kept = {p: k for p, k in keys_by_path.items() if verdicts[p] == "ok"}
    changed = sorted(p for p, v in verdicts.items() if v == "changed")
    missing = sorted(p for p, v in verdicts.items() if v == "missing")
    if changed or missing:
        log.warning(
            "%d image(s) changed since they were bought and %d are missing (e.g. %s); they are left out of "
            "training (re-run `vl2v query` to buy the new versions)",
            len(changed),
            len(missing),
            ", ".join((changed + missing)[:3]),
        )
    return kept, {"changed": len(changed), "missing": len(missing), "examples": (changed + missing)[:5]}


def _one_run(
    config, train, method_cls, hparams, knowledge, dataset, keys_by_path, target, trial, on_progress, ranks
) -> TrialResult | None:
    splits = make_splits(
        dataset,
        keys_by_path,
        target,
        trial_seed=trial,
        views_by_key=knowledge.views_by_key(config.views),
        holdout=config.holdout,
    )
    coverage = splits.coverage()
    train = TrainConfig(**(asdict(train) | {"seed": config.train.seed + trial}))
    torch.manual_seed(train.seed)  # the student's initial weights (random heads, --no-pretrained backbones)
    backbone = method_cls.build_backbone(
        config.student, pretrained=config.pretrained, weights=config.student_weights, image_size=config.image_size
    )
    spec = REGISTRY.get(dataset.name)
    sources = tuple(dataset.domains[d] for d in splits.sources)
    anchors = spec.anchor_words(sources) if spec else tuple(prompt_words(d) for d in sources)
    context = Context(dataset=dataset.name, anchors=anchors, num_classes=len(dataset.classes))
    method = method_cls(backbone, knowledge, hparams, context)
    run_dir = config.out / target / f"trial_{trial}"
    record_base = {
        "args": {
            "dataset": dataset.name,
            "algorithm": config.method,
            "test_envs": splits.test_envs,
            "domains": list(dataset.domains),
            "trial_seed": trial,
            "hparams_seed": config.hparams_seed,
            "seed": train.seed,
            "student": config.student,
        },
        "hparams": asdict(hparams),
    }
    transforms = (
        train_transform(backbone.image_size),
        eval_transform(backbone.image_size),
    )
    trainer = Trainer(
        method,
        knowledge,
        splits,
        dataset.root,
        transforms,
        train,
        run_dir,
        record_base,
        on_progress=lambda p: on_progress(f"{config.method} {target}/trial_{trial}", p),
        ranks=ranks,
    )
    views = sum(len(s.views) for samples in splits.train_sets().values() for s in samples)
    unlabelled = len(trainer.unlabelled)  # those the trainer draws from: none for ERM or --unlabelled-batch 0
    log.info(
        "target %s, trial %d: training on %s cached images (of %s in the source `in` splits)%s%s",
        target,
        trial,
        sum(c["with_embedding"] for c in coverage.values()),
        sum(c["in_split"] for c in coverage.values()),
        f" and {unlabelled} unlabelled ones ({train.unlabelled_per_step} a step)" if unlabelled else "",
        f", replaying {views} augmented views the teacher embedded" if views else ", augmented at random",
    )
    final = trainer.fit(resume=config.resume)
    if final is None:  # not rank 0: rank 0 writes the student and reports
        return None
    save_student(
        method,
        run_dir / MODEL_FILE,
        {
            "student": config.student,
            "student_weights": config.student_weights,
            "dataset": dataset.name,
            "classes": list(dataset.classes),
            "class_prompts": list(dataset.class_prompts),
            "domains": list(dataset.domains),
            "teacher_dim": knowledge.dim,
            "logit_scale": knowledge.logit_scale,
            "teacher": {k: knowledge.teacher.get(k) for k in ("id", "fingerprint")},
        },
    )
    return TrialResult(
        test_domain=target,
        trial=trial,
        id_acc=final["source_val_acc"],
        ood_acc=final["target_acc"],
        run_dir=str(run_dir),
        trained_on=coverage,
        unreadable={"count": len(trainer.unreadable), "examples": sorted(trainer.unreadable)[:5]},
        averaging=final.get("averaging", {}),
    )


def _describe(config: DistillConfig, hparams, knowledge: TeacherKnowledge) -> dict:
    return {
        "config": asdict(config),
        "hparams": asdict(hparams),
        "teacher": {k: knowledge.teacher.get(k) for k in ("id", "fingerprint", "embedding_dim", "logit_scale")},
        "cached_images": len(knowledge.index),  # the snapshot trained on, should a query still be adding to it
        "cached_views": len(knowledge.view_params),
        "note": "a sample with cached augmented views shows one of them, replayed exactly, and distils toward its "
        "embedding; one without is augmented at random and distils toward its clean image's embedding",
    }
