"""Golden trajectories: a change that moves a result fails here until its values are re-recorded (tests/golden.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cli.demo_pipeline as demo_pipeline
import student.methods.adip as adip_module
import student.trainer as trainer_module

from . import golden


@pytest.fixture(scope="module")
def world_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return golden.golden_cache(tmp_path_factory.mktemp("golden"))


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(golden.GOLDEN.read_text())


@pytest.mark.parametrize("method", golden.METHODS)
def test_every_method_follows_its_golden_trajectory(method, world_cache, recorded, tmp_path):
    measured = golden.trajectory(world_cache, method, tmp_path / method)
    moved = golden.differences(recorded["trajectories"][method], measured, golden.tolerances(recorded["spread"]))
    assert not moved, golden.failure(method, moved)


@pytest.mark.parametrize("name", golden.DEMO)
def test_every_method_with_the_demos_settings_follows_its_golden_trajectory(name, world_cache, recorded, tmp_path):
    measured = golden.demo_trajectory(world_cache, name, tmp_path / name)
    moved = golden.differences(recorded["trajectories"][name], measured, golden.tolerances(recorded["spread"]))
    assert not moved, golden.failure(name, moved)


def test_the_tolerance_is_wider_than_the_spread_measured_across_kernels_and_threads(recorded):
    spread = recorded["spread"]
    assert len(spread["variants"]) >= 5 and len(spread["per_step"]) == 2 * golden.STEPS, "ADiP's two stages"
    tolerance = golden.tolerances(spread)
    assert all(t >= golden.MARGIN * measured for t, measured in zip(tolerance, spread["per_step"], strict=True))
    assert tolerance[0] == golden.RELATIVE, "at the first step, where a mutation shows, rounding has not grown"
    assert spread["largest_accuracy_difference_images"] <= golden.IMAGES


def test_a_changed_default_fails_the_golden_trajectory(world_cache, recorded, tmp_path):
    # KD's temperature moved from its default 3 to 3.1, as an edit of KdHparams would.
    measured = golden.trajectory(world_cache, "kd", tmp_path / "kd", temperature="3.1")
    assert golden.differences(recorded["trajectories"]["kd"], measured, golden.tolerances(recorded["spread"]))
    assert golden.largest_moves(recorded["trajectories"]["kd"], measured)[0][0] > 10 * golden.RELATIVE, "from step 1"


def test_a_changed_loss_fails_the_golden_trajectory(world_cache, recorded, tmp_path, monkeypatch):
    # ADiP's lambda weighted 0.52 instead of 0.5 inside the loss, as a slip in blocks.image_text_distill would.
    original = adip_module.image_text_distill
    monkeypatch.setattr(adip_module, "image_text_distill", lambda z, i, t, y, m, w: original(z, i, t, y, m, w + 0.02))
    measured = golden.trajectory(world_cache, "adip", tmp_path / "adip")
    moved = golden.differences(recorded["trajectories"]["adip"], measured, golden.tolerances(recorded["spread"]))
    assert any(line.startswith("step 1 loss") for line in moved), moved


def test_a_changed_data_order_fails_the_golden_trajectory(world_cache, recorded, tmp_path, monkeypatch):
    original = trainer_module.train_loader
    monkeypatch.setattr(trainer_module, "train_loader", lambda *a, seed, **k: original(*a, seed=seed + 1, **k))
    measured = golden.trajectory(world_cache, "erm", tmp_path / "erm")
    moved = golden.differences(recorded["trajectories"]["erm"], measured, golden.tolerances(recorded["spread"]))
    assert any(line.startswith("step 1 ") for line in moved), moved


def test_the_failure_says_how_to_re_record_and_to_re_measure_the_results_files(recorded):
    was = recorded["trajectories"]["erm"]
    now = json.loads(json.dumps(was))
    now["steps"][2]["ce"] *= 1.01
    now["ood_acc"] += 2 / was["images"]["ood"]
    moved = golden.differences(was, now)
    assert [line.split(":")[0] for line in moved] == ["step 3 ce", "ood_acc"]
    assert "(2 images apart)" in moved[1]
    message = golden.failure("erm", moved)
    assert message.startswith("erm: the golden trajectory moved:\n  step 3 ce: ")
    assert "re-record with `python -m tests.golden`" in message
    assert "re-measure every results file in docs/results/" in message


def test_a_changed_demo_setting_fails_the_golden_trajectory(world_cache, recorded, tmp_path, monkeypatch):
    # The demo's KD learning rate moved from 2.8e-4 to 2.9e-4, as an edit of DEMO_HPARAMS would.
    monkeypatch.setitem(demo_pipeline.DEMO_HPARAMS, "kd", demo_pipeline.DEMO_HPARAMS["kd"] | {"lr": "2.9e-4"})
    measured = golden.demo_trajectory(world_cache, "demo-kd", tmp_path / "kd")
    moved = golden.differences(recorded["trajectories"]["demo-kd"], measured, golden.tolerances(recorded["spread"]))
    assert any(line.startswith("step 2 ") for line in moved), moved
