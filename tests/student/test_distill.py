"""`vl2v distill` end to end on a pacs-mini cache with a tiny timm student: outputs, protocol, resume."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cli.app import app
from cli.exit_codes import ERROR
from student import data as student_data
from student.checkpoint import load_student
from student.config import DistillConfig, TrainConfig
from student.methods import method_names
from student.run import distill
from student.state_file import StateFileError, load_state
from student.trainer import CHECKPOINT

from ..conftest import TINY, wait_until

TINY_STUDENT = ["--student", "test_resnet", "--no-pretrained", "--image-size", "32"]
SHORT = ["--steps", "4", "--eval-every", "2", "--batch-size", "8", "--workers", "0"]
FAST = TINY_STUDENT + SHORT


def tiny_config(cache: Path, out: Path, method: str, target: str, **train) -> DistillConfig:
    """An in-process distill run of `test_resnet` at 32 px, no workers."""
    return DistillConfig(
        cache_dir=cache,
        method=method,
        student="test_resnet",
        pretrained=False,
        out=out,
        test_domains=(target,),
        image_size=32,
        train=TrainConfig(workers=0, **train),
    )


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def distill_args(cache: Path, out: Path, method: str, *extra: str, target: str = "sketch") -> list[str]:
    """`vl2v distill` of a tiny student for a few steps, as command-line arguments."""
    return [
        "distill",
        "--cache",
        str(cache),
        "--method",
        method,
        "--test-domain",
        target,
        "--out",
        str(out),
        *FAST,
        *extra,
    ]


def distill_cli(cache: Path, out: Path, method: str, *extra: str) -> dict:
    code, output = run_cli(*distill_args(cache, out, method, "--json", *extra))
    assert code == 0, output
    return json.loads(output)


@pytest.mark.parametrize("method", [m for m in ["erm", "kd", "rise", "scmd", "adip"]])
def test_every_black_box_method_trains_and_writes_every_output(pacs_cache, tmp_path, method):
    result = distill_cli(pacs_cache, tmp_path / method, method)
    assert result["run_dir"] == str(tmp_path / method)
    (row,) = result["results"]
    assert row["test_domain"] == "sketch" and 0 <= row["id_acc"] <= 1 and 0 <= row["ood_acc"] <= 1
    run = tmp_path / method / "sketch" / "trial_0"
    records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    stages = 2 if method == "adip" else 1
    assert len(records) == 2 * stages + 1 and records[-1]["final"]
    for key in ("env0_in_acc", "env3_out_acc", "step", "hparams", "args"):
        assert key in records[0]
    assert records[0]["args"]["test_envs"] == [3] and records[0]["args"]["algorithm"] == method
    config = json.loads((tmp_path / method / "config.json").read_text())
    assert config["config"]["method"] == method and config["teacher"]["id"] == TINY
    summary = json.loads((tmp_path / method / "summary.json").read_text())
    assert summary["runs"][0]["trained_on"]["photo"] == {"in_split": 224, "with_embedding": 224}
    student, meta = load_student(run / "model.safetensors")
    assert meta["classes"][0] == "dog" and student.predict(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_sd_trains_the_teachers_own_image_tower_and_needs_its_weights(pacs_cache, tiny_checkpoint, tmp_path):
    sd = ["distill", "--cache", str(pacs_cache), "--method", "sd", "--student", TINY, "--test-domain", "sketch", *SHORT]
    code, output = run_cli(*sd, "--out", str(tmp_path / "x"))
    assert code == ERROR and "needs its weights" in output
    code, output = run_cli(*sd, "--student-weights", str(tiny_checkpoint), "--out", str(tmp_path / "sd"), "--json")
    assert code == 0, output
    assert 0 <= json.loads(output)["results"][0]["ood_acc"] <= 1


def test_all_test_domains_and_trials_give_one_run_each(pacs_cache, tmp_path):
    code, output = run_cli(
        "distill",
        "--cache",
        str(pacs_cache),
        "--method",
        "erm",
        "--out",
        str(tmp_path / "r"),
        "--trials",
        "2",
        "--json",
        *TINY_STUDENT,
        "--steps",
        "2",
        "--eval-every",
        "2",
        "--batch-size",
        "4",
        "--workers",
        "0",
    )
    assert code == 0, output
    result = json.loads(output)
    assert [r["test_domain"] for r in result["results"]] == ["art_painting", "cartoon", "photo", "sketch"]
    assert len(list((tmp_path / "r").rglob("model.safetensors"))) == 8


def test_adip_stage_one_trains_only_the_projector_and_stage_two_only_the_backbone(pacs_cache, tmp_path, monkeypatch):
    snapshots = {}

    def snap(method, stage):
        snapshots[stage] = {n: p.detach().clone() for n, p in method.named_parameters()}

    from student import trainer as trainer_module

    original = trainer_module.Trainer._run_stage

    def recording(self, index, stage, start, saved):
        snap(self.method, f"before_{stage.name}")
        original(self, index, stage, start, saved)
        snap(self.method, f"after_{stage.name}")

    monkeypatch.setattr(trainer_module.Trainer, "_run_stage", recording)
    distill(tiny_config(pacs_cache, tmp_path, "adip", "sketch", steps=3, eval_every=1, batch_size=4))

    def changed(a: str, b: str) -> set[str]:
        return {n for n in snapshots[a] if not torch.equal(snapshots[a][n], snapshots[b][n])}

    stage1, stage2 = changed("before_align", "after_align"), changed("before_distill", "after_distill")
    assert stage1 and all(n.startswith("projector.") for n in stage1)
    assert stage2 and all(n.startswith("backbone.") for n in stage2)


@pytest.mark.parametrize("holdout", [None, "photo"])
def test_the_target_domain_and_a_held_out_source_never_reach_a_training_batch(
    pacs_cache, tmp_path, monkeypatch, holdout
):
    trained, evaluated = set(), set()
    original = student_data.ImageFiles.__getitem__

    def spy(self, index):
        i = index[0] if isinstance(index, tuple) else index
        (trained if isinstance(index, tuple) else evaluated).add(self.samples[i].path.split("/")[0])
        return original(self, index)

    monkeypatch.setattr(student_data.ImageFiles, "__getitem__", spy)
    config = tiny_config(pacs_cache, tmp_path, "kd", "cartoon", steps=20, eval_every=10, batch_size=8)
    summary = distill(dataclasses.replace(config, holdout=holdout))
    assert summary is not None
    (run,) = summary.runs
    sources = {"art_painting", "photo", "sketch"} - {holdout}
    assert trained == sources, "training read only the source images not held out"
    assert {"cartoon", "photo"} <= evaluated, "the target and the held-out source are evaluated"
    final = json.loads((Path(run.run_dir) / "results.jsonl").read_text().splitlines()[-1])
    domains = final["args"]["domains"]
    assert [domains[i] for i in final["args"]["test_envs"]] == ["cartoon"] + ([holdout] if holdout else [])


def test_zeroshot_reports_the_teachers_accuracy_from_the_cache(pacs_cache):
    code, output = run_cli("zeroshot", "--cache", str(pacs_cache), "--json")
    result = json.loads(output)
    assert code == 0 and set(result["accuracy"]) == {"art_painting", "cartoon", "photo", "sketch"}
    assert all(0 <= a <= 1 for a in result["accuracy"].values()) and result["images"]["photo"] == 280


def test_evaluate_predict_and_report_use_saved_runs(pacs_cache, pacs_mini, tmp_path):
    for method in ("erm", "kd"):
        distill_cli(pacs_cache, tmp_path / method, method)
    code, output = run_cli("evaluate", str(tmp_path / "erm"), "--data-dir", str(pacs_mini), "--workers", "0", "--json")
    accuracy = json.loads(output)["results"][0]["accuracy"]
    assert code == 0 and set(accuracy) == {"art_painting", "cartoon", "photo", "sketch"}
    image = next((pacs_mini / "photo" / "dog").iterdir())
    code, output = run_cli("predict", str(tmp_path / "erm"), str(image), "--top-k", "2", "--json")
    top = json.loads(output)["predictions"][0]["top"]
    assert code == 0 and len(top) == 2 and top[0]["probability"] >= top[1]["probability"]
    code, output = run_cli(
        "report",
        str(tmp_path / "erm"),
        str(tmp_path / "kd"),
        "--out",
        str(tmp_path / "r.md"),
        "--chart",
        str(tmp_path / "r.png"),
    )
    assert code == 0 and "| erm |" in output and "| kd |" in output
    assert Image.open(tmp_path / "r.png").size[0] > 100


def test_a_run_killed_mid_way_resumes_to_the_same_result(pacs_cache, tmp_path):
    args = [
        "--cache",
        str(pacs_cache),
        "--method",
        "adip",
        "--test-domain",
        "photo",
        "--student",
        "test_resnet",
        "--no-pretrained",
        "--image-size",
        "32",
        "--steps",
        "8",
        "--eval-every",
        "2",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--json",
    ]
    whole = run_cli("distill", *args, "--out", str(tmp_path / "whole"))
    assert whole[0] == 0, whole[1]

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "cli", "distill", *args, "--out", str(tmp_path / "killed")]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "photo" / "trial_0" / CHECKPOINT

    def mid_stage_two() -> bool:
        if not checkpoint.exists():
            return False
        try:  # the file is replaced atomically, but it may vanish between exists() and load()
            state = load_state(checkpoint)
        except StateFileError:
            return False
        return state["stage"] == 1 and state["step"] >= 2

    wait_until(mid_stage_two, what="a checkpoint inside stage two", timeout=120)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    resumed = run_cli("distill", *args, "--out", str(tmp_path / "killed"), "--resume")
    assert resumed[0] == 0, resumed[1]
    assert json.loads(resumed[1])["results"] == json.loads(whole[1])["results"]
    a = (tmp_path / "whole" / "photo" / "trial_0" / "results.jsonl").read_text().splitlines()
    b = (tmp_path / "killed" / "photo" / "trial_0" / "results.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in a] == [json.loads(x) for x in b], "every record matches, not only the last"


def test_unknown_targets_and_bad_values_are_one_line_errors(pacs_cache, tmp_path):
    code, output = run_cli(*distill_args(pacs_cache, tmp_path, "erm", target="sketches"))
    assert code == ERROR and "'sketches' is not one of" in output
    code, output = run_cli(
        "distill", "--cache", str(pacs_cache), "--method", "adip", "--set", "lr=-3", "--out", str(tmp_path), *FAST
    )
    assert code == ERROR and "lr must be > 0" in output
    code, output = run_cli(
        "distill",
        "--cache",
        str(pacs_cache),
        "--method",
        "erm",
        "--student",
        "resnet5o",
        "--no-pretrained",
        "--out",
        str(tmp_path),
    )
    assert code == ERROR and "unknown timm model 'resnet5o'" in output
    assert set(method_names()) >= {"erm", "sd"}


@pytest.fixture(scope="module")
def unlabelled_cache(tmp_path_factory, tiny_checkpoint, pacs_mini) -> Path:
    """pacs-mini with every domain's horses moved to its `_unlabelled/` folder, bought whole."""
    from .conftest import bought_cache

    root = tmp_path_factory.mktemp("unlabelled")
    shutil.copytree(pacs_mini, root / "PACS")
    for domain in (root / "PACS").iterdir():
        (domain / "horse").rename(domain / "_unlabelled")
    return bought_cache(root, tiny_checkpoint, root / "PACS")


def test_unlabelled_images_train_the_methods_with_a_teacher_term_from_the_source_domains_only(
    unlabelled_cache, tmp_path, monkeypatch
):
    shown: list[tuple[str, int]] = []  # (domain, label) of every training image
    original = student_data.ImageFiles.__getitem__

    def spy(self, index):
        loaded = original(self, index)
        if isinstance(index, tuple):
            shown.append((self.samples[index[0]].path.split("/")[0], loaded[1]))
        return loaded

    monkeypatch.setattr(student_data.ImageFiles, "__getitem__", spy)

    def trained(method: str, **train) -> list[tuple[str, int]]:
        shown.clear()
        config = tiny_config(unlabelled_cache, tmp_path / method / str(train), method, "cartoon", eval_every=4, **train)
        assert distill(dataclasses.replace(config, holdout="photo")) is not None
        return list(shown)

    kd = trained("kd", steps=4, batch_size=4, unlabelled_batch=6)
    unlabelled = [domain for domain, label in kd if label == student_data.UNLABELLED]
    assert len(unlabelled) == 4 * 6 and len(kd) == 4 * (2 * 4 + 6), "6 a step beside 4 of each training domain"
    assert set(unlabelled) == {"art_painting", "sketch"}, "never the target's, nor the held-out source's"
    assert all(label == student_data.UNLABELLED for domain, label in kd[8:14]), "drawn after the labelled ones"
    erm = trained("erm", steps=4, batch_size=4, unlabelled_batch=6)
    assert len(erm) == 4 * 2 * 4 and all(label != student_data.UNLABELLED for _, label in erm)
    assert [d for d, _ in trained("kd", steps=4, batch_size=4)].count("sketch") > 4 * 4, "by default: --batch-size"
    none = trained("kd", steps=4, batch_size=4, unlabelled_batch=0)
    assert all(label != student_data.UNLABELLED for _, label in none)
    code, output = run_cli("zeroshot", "--cache", str(unlabelled_cache), "--json")
    assert code == 0 and json.loads(output)["images"]["photo"] == 240, "an image without a class is not scored"
