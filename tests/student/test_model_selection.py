"""DomainBed's three model-selection rules, checked on hand-made results.jsonl records."""

from __future__ import annotations

import pytest

from student.collect import collect, latex, markdown
from student.model_selection import select

DOMAINS = ["A", "B", "C"]


def record(test_envs, step, hparams_seed=0, trial=0, final=False, method="erm", **accs) -> dict:
    """A DomainBed record of 3 domains; accuracies default to 0 unless given as env<i>_<in|out>=value."""
    r = {
        "args": {"dataset": "toy", "algorithm": method, "test_envs": test_envs, "trial_seed": trial,
                 "hparams_seed": hparams_seed, "domains": DOMAINS},
        "step": step,
    }  # fmt: skip
    for i in range(3):
        for part in ("in", "out"):
            r[f"env{i}_{part}_acc"] = accs.get(f"env{i}_{part}", 0.0)
    if final:
        r["final"] = True
    return r


def test_training_domain_validation_picks_the_best_source_out_checkpoint_of_the_best_sample():
    records = [
        # sample 0: its best source-validation checkpoint is step 2 (val 0.8), test 0.5 there
        record([0], 1, 0, env1_out=0.6, env2_out=0.6, env0_in=0.9),
        record([0], 2, 0, env1_out=0.8, env2_out=0.8, env0_in=0.5),
        # sample 1: best val 0.7 (worse than sample 0's 0.8), though its test is higher
        record([0], 2, 1, env1_out=0.7, env2_out=0.7, env0_in=0.99),
    ]
    chosen = select(records, "iid")
    assert (chosen.hparams_seed, chosen.step, chosen.val_acc, chosen.test_acc) == (0, 2, 0.8, 0.5)


def test_the_oracle_takes_each_samples_last_model_judged_on_the_target_out_split():
    records = [
        record([0], 1, 0, env0_out=0.9, env0_in=0.8),
        record([0], 2, 0, env0_out=0.6, env0_in=0.7),  # last of sample 0
        record([0], 2, 1, env0_out=0.75, env0_in=0.65),  # last of sample 1, better on the target's out split
    ]
    chosen = select(records, "oracle")
    assert (chosen.hparams_seed, chosen.test_acc) == (1, 0.65)


def test_leave_one_domain_out_judges_a_step_by_the_held_out_source_domains():
    records = [
        record([0], 1, 0, env0_in=0.40),
        record([0, 1], 1, 0, env1_in=0.9),
        record([0, 2], 1, 0, env2_in=0.7),  # step 1: mean of held-out in-accuracies 0.8
        record([0], 2, 0, env0_in=0.60),
        record([0, 1], 2, 0, env1_in=0.5),
        record([0, 2], 2, 0, env2_in=0.5),  # step 2: 0.5
    ]
    chosen = select(records, "loo")
    assert (chosen.step, chosen.val_acc, chosen.test_acc) == (1, pytest.approx(0.8), 0.40)
    assert select(records[:2], "loo") is None, "a source domain never held out: no choice"
    assert select([r for r in records if len(r["args"]["test_envs"]) == 2], "iid") is None


def test_collect_makes_one_table_per_dataset_with_mean_and_standard_error_over_trials():
    records = []
    for trial, acc in enumerate([0.6, 0.7, 0.8]):
        for target in (0, 1):
            others = [i for i in range(3) if i != target]
            records.append(
                record(
                    [target],
                    1,
                    trial=trial,
                    **{f"env{target}_in": acc + target / 10},
                    **{f"env{i}_out": 0.9 for i in others},
                )
            )
    records.append(record([0], 1, trial=0, method="adip", env0_in=0.9, env1_out=0.9, env2_out=0.9))
    collected = collect(records, "iid")
    table = collected["datasets"]["toy"]
    assert table["domains"] == ["A", "B"]
    erm = table["methods"]["erm"]
    assert erm["A"]["mean"] == pytest.approx(70.0) and erm["A"]["stderr"] == pytest.approx(5.7735, abs=1e-3)
    assert erm["B"]["n"] == 3 and table["average"]["erm"] == pytest.approx(75.0)
    assert table["average"]["adip"] is None, "no average over an incomplete row"
    text = markdown(collected)
    assert "| erm | 70.0 ± 5.8 | 80.0 ± 5.8 | 75.0 |" in text and "| adip | 90.0 (n=1) | – | – |" in text
    assert r"70.0 $\pm$ 5.8" in latex(collected) and r"\toprule" in latex(collected)
