"""Model selection as DomainBed defines it (Gulrajani & Lopez-Paz, ICLR 2021), over `results.jsonl` records.

Each method picks, for one (dataset, method, target domain, trial), a hyper-parameter sample and a checkpoint
without looking at the target domain's test data, except the oracle, which is an upper bound:

- training-domain validation (the default): the checkpoint with the best mean accuracy on the source domains'
  `out` splits, and the sample whose best checkpoint is best;
- leave-one-domain-out: runs that also hold one source domain out; a (sample, step) is judged by its mean accuracy
  on each held-out source domain's `in` split, over the runs that held each one out;
- oracle (test-domain validation): the last model of each sample, judged on the target's `out` split.

Candidates are every checkpoint and the final model (which SWAD or SMA average); `step` counts across stages.

The accuracy reported is that of the target domain's `in` split, as DomainBed's collect_results reports it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from cache.errors import InvalidOption

SELECTIONS = ("iid", "loo", "oracle")
TITLES = {
    "iid": "training-domain validation",
    "loo": "leave-one-domain-out cross-validation",
    "oracle": "test-domain validation (oracle)",
}


@dataclass(frozen=True)
class Chosen:
    """What a selection method chose: how it judged it (`val_acc`) and the accuracy it reports (`test_acc`)."""

    val_acc: float
    test_acc: float
    hparams_seed: int
    step: int


def _envs(record: dict) -> int:
    n = 0
    while f"env{n}_out_acc" in record:
        n += 1
    return n


def _training_validation(record: dict) -> tuple[float, float]:
    test = record["args"]["test_envs"][0]
    held = set(record["args"]["test_envs"])
    val = [record[f"env{i}_out_acc"] for i in range(_envs(record)) if i not in held]
    return statistics.fmean(val), record[f"env{test}_in_acc"]


def select(records: Iterable[dict], method: str = "iid") -> Chosen | None:
    """The choice of `method` among the records of one (dataset, algorithm, target domain, trial); None if the
    records cannot support it (leave-one-domain-out needs runs holding out each source domain too)."""
    if method not in SELECTIONS:
        raise InvalidOption(f"unknown model selection {method!r}; choose one of {list(SELECTIONS)}")
    records = list(records)  # every checkpoint, and the final model (averaged, for SWAD and SMA)
    by_sample: dict[int, list[dict]] = defaultdict(list)
    for r in records:
        by_sample[r["args"]["hparams_seed"]].append(r)
    chosen = [c for c in (_choose(method, rs) for rs in by_sample.values()) if c is not None]
    return max(chosen, key=lambda c: (c.val_acc, -c.hparams_seed)) if chosen else None


def _choose(method: str, records: list[dict]) -> Chosen | None:
    """One hyper-parameter sample's checkpoint, chosen by `method`."""
    alone = [r for r in records if len(r["args"]["test_envs"]) == 1]
    if method == "iid":
        if not alone:
            return None
        scored = [(_training_validation(r), r) for r in alone]
        (val, test), record = max(scored, key=lambda s: (s[0][0], -s[1]["step"]))
        return Chosen(val, test, record["args"]["hparams_seed"], record["step"])
    if method == "oracle":
        if not alone:
            return None
        last = max(alone, key=lambda r: r["step"])
        test = last["args"]["test_envs"][0]
        return Chosen(last[f"env{test}_out_acc"], last[f"env{test}_in_acc"], last["args"]["hparams_seed"], last["step"])
    return _leave_one_out(records)


def _leave_one_out(records: list[dict]) -> Chosen | None:
    by_step: dict[tuple[int, bool], list[dict]] = defaultdict(list)
    for r in records:
        by_step[(r["step"], bool(r.get("final")))].append(r)  # the final model shares its last checkpoint's step
    best = None
    for (step, _), group in by_step.items():
        alone = [r for r in group if len(r["args"]["test_envs"]) == 1]
        if len(alone) != 1:
            continue
        test = alone[0]["args"]["test_envs"][0]
        n = _envs(alone[0])
        held_out = {}
        for r in group:
            envs = r["args"]["test_envs"]
            if len(envs) == 2 and envs[0] == test:
                held_out[envs[1]] = r[f"env{envs[1]}_in_acc"]
        if set(held_out) != set(range(n)) - {test}:
            continue  # some source domain was never held out at this step
        chosen = Chosen(
            statistics.fmean(held_out.values()), alone[0][f"env{test}_in_acc"], alone[0]["args"]["hparams_seed"], step
        )
        if best is None or chosen.val_acc > best.val_acc:
            best = chosen
    return best
