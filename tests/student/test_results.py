"""The typed results: summary.json round-trips, and the means and standard errors are the ones computed by hand."""

import json

import pytest

from student.results import DistillSummary, Evaluation, Prediction, RunFolderError, TrialResult


def trial(domain: str, k: int, id_acc: float, ood_acc: float) -> TrialResult:
    return TrialResult(domain, k, id_acc, ood_acc, run_dir=f"run/{domain}/trial_{k}")


def test_per_target_means_standard_errors_and_the_mean_over_targets():
    runs = (trial("sketch", 0, 0.9, 0.6), trial("sketch", 1, 0.8, 0.7), trial("photo", 0, 0.7, 0.95))
    summary = DistillSummary("adip", "resnet18", "run", runs, ("photo", "sketch"))
    sketch, photo = summary.results
    assert (sketch.test_domain, sketch.trials) == ("sketch", 2)
    assert sketch.id_acc == pytest.approx(0.85) and sketch.ood_acc == pytest.approx(0.65)
    assert sketch.ood_stderr == pytest.approx(0.05)  # stdev 0.0707 over sqrt(2)
    assert photo.ood_stderr == 0.0, "one trial has no error to show"
    assert summary.mean_ood_acc == pytest.approx((0.65 + 0.95) / 2), "targets weigh alike, whatever their trials"
    assert summary.result("photo") is not None
    with pytest.raises(KeyError, match="no run held out 'cartoon'"):
        summary.result("cartoon")


def test_summary_json_keeps_its_layout_and_reads_back(tmp_path):
    summary = DistillSummary("kd", "resnet18", str(tmp_path), (trial("sketch", 0, 0.9, 0.6),), ("photo", "sketch"))
    summary.write(tmp_path)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["mean"] == {"id_acc": 0.9, "ood_acc": 0.6}
    assert written["results"][0] == {
        "test_domain": "sketch", "id_acc": 0.9, "ood_acc": 0.6, "ood_stderr": 0.0, "trials": 1
    }  # fmt: skip
    assert DistillSummary.read(tmp_path) == summary
    with pytest.raises(RunFolderError, match="not found: it should be the summary of a finished `vl2v distill"):
        DistillSummary.read(tmp_path / "elsewhere")


def test_evaluations_and_predictions_as_json():
    evaluation = Evaluation({"a": 0.5, "b": 1.0}, {"a": 2, "b": 4}, model="m", data_dir="d", unreadable={})
    assert evaluation.to_json()["mean"] == 0.75
    assert Prediction("x.jpg", (("dog", 0.9),)).to_json() == {
        "image": "x.jpg",
        "top": [{"class": "dog", "probability": 0.9}],
    }
    assert Prediction("y.jpg", error="cannot read it").to_json() == {"image": "y.jpg", "error": "cannot read it"}
