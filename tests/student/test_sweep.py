"""`vl2v sweep`: a tiny DomainBed sweep on the local launcher, interrupted and resumed without redoing a finished
run, collected into its table; and the same sweep through submitit's real code path (its local executor)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import submitit
from typer.testing import CliRunner

from cli.app import app
from student.config import TrainConfig
from student.sweep import SweepConfig, plan, run_slurm, status

from ..conftest import wait_until

TINY = ["--student", "test_resnet", "--no-pretrained", "--image-size", "32", "--steps", "1", "--eval-every", "1",
        "--batch-size", "4", "--workers", "0"]  # fmt: skip


def sweep_args(cache, out, samples=2) -> list[str]:
    return ["sweep", "--cache", str(cache), "--methods", "erm,kd", "--test-domain", "photo", "--test-domain",
            "sketch", "--trials", "2", "--hparam-samples", str(samples), "--out", str(out), *TINY]  # fmt: skip


def config_for(cache, out, samples=2) -> SweepConfig:
    return SweepConfig(
        caches=(cache,), methods=("erm", "kd"), out=out, test_domains=("photo", "sketch"), trials=2,
        hparam_samples=samples, student="test_resnet", pretrained=False, image_size=32,
        train=TrainConfig(steps=1, eval_every=1, batch_size=4, workers=0),
    )  # fmt: skip


def test_runs_have_stable_ids_and_sample_0_is_the_defaults(pacs_cache, tmp_path):
    specs = plan(config_for(pacs_cache, tmp_path, samples=2))
    assert len(specs) == 2 * 2 * 2 * 2 and len({s.id for s in specs}) == 16
    assert [s.id for s in plan(config_for(pacs_cache, tmp_path, samples=2))] == [s.id for s in specs], "deterministic"
    assert all(s.overrides == {} for s in specs if s.hparams_seed == 0)
    assert all("lr" in s.overrides for s in specs if s.hparams_seed == 1)
    result = CliRunner().invoke(app, [*sweep_args(pacs_cache, tmp_path / "s", samples=2), "--dry-run", "--json"])
    rows = json.loads(result.stdout)["runs"]
    assert result.exit_code == 0 and len(rows) == 16 and {r["status"] for r in rows} == {"new"}


def test_an_interrupted_sweep_resumes_without_redoing_a_finished_run_and_collects_its_table(pacs_cache, tmp_path):
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "cli", *sweep_args(pacs_cache, out), "--jobs", "2"]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: len(list(out.glob("runs/*/summary.json"))) >= 3, what="a few runs to finish", timeout=300)
    os.killpg(process.pid, signal.SIGKILL)  # the sweep and the runs it started
    process.wait(30)
    specs = plan(config_for(pacs_cache, out))
    config = config_for(pacs_cache, out)
    done = {s.id: (out / "runs" / s.id / "summary.json").stat().st_mtime for s in specs if status(config, s) == "done"}
    assert 3 <= len(done) < 16

    time.sleep(1.1)  # a rerun of a finished run would show in its summary's mtime
    result = CliRunner().invoke(app, [*sweep_args(pacs_cache, out), "--jobs", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1]) == {"runs": 16, "failed": [], "out": str(out)}
    for run, mtime in done.items():
        assert (out / "runs" / run / "summary.json").stat().st_mtime == mtime, "a finished run was not redone"
    assert {p.stem for p in (out / "logs").glob("*.log")} >= {s.id for s in specs} - set(done), "a log per run"

    result = CliRunner().invoke(app, ["report", str(out), "--out", str(tmp_path / "t.md"), "--chart",
                                      str(tmp_path / "t.png"), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)["datasets"]["pacs"]
    assert table["domains"] == ["photo", "sketch"] and set(table["methods"]) == {"erm", "kd"}
    assert all(cell["n"] == 2 and cell["stderr"] is not None for m in table["methods"].values() for cell in m.values())
    assert (tmp_path / "t.tex").read_text().count(r"\toprule") == 1 and (tmp_path / "t.png").stat().st_size > 1000


def test_the_slurm_launcher_runs_the_same_sweep_through_submitit(pacs_cache, tmp_path):
    config = config_for(pacs_cache, tmp_path / "sweep")
    config = config.__class__(**(config.__dict__ | {"methods": ("erm",), "test_domains": ("photo",), "trials": 1}))
    executor = submitit.LocalExecutor(folder=str(tmp_path / "submitit"))
    executor.update_parameters(timeout_min=10)
    codes = run_slurm(config, plan(config), executor)
    assert codes and set(codes.values()) == {0}
    assert all(status(config, s) == "done" for s in plan(config))
    assert list((tmp_path / "submitit").glob("*_log.out")), "submitit's own job logs"


def test_a_leave_one_out_sweep_trains_without_each_source_and_the_report_selects_on_it(pacs_cache, tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", "--cache", str(pacs_cache), "--methods", "erm", "--test-domain", "sketch", "--trials", "1",
            "--hparam-samples", "2", "--leave-one-out", "--out", str(out), *TINY]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["runs"] == 2 * 4, "per sample: the target alone, then 3 holdouts"
    held_out = set()
    for records in out.glob("runs/*/**/results.jsonl"):
        envs = json.loads(records.read_text().splitlines()[-1])["args"]["test_envs"]
        held_out.add(tuple(envs))
    sketch = 3  # pacs: art_painting, cartoon, photo, sketch
    assert held_out == {(sketch,), (sketch, 0), (sketch, 1), (sketch, 2)}, "each source held out in its own run"
    result = CliRunner().invoke(app, ["report", str(out), "--selection", "loo", "--out", str(tmp_path / "t.md"),
                                      "--chart", str(tmp_path / "t.png"), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    cell = json.loads(result.stdout)["datasets"]["pacs"]["methods"]["erm"]["sketch"]
    assert cell["n"] == 1 and 0 <= cell["mean"] <= 100
