"""`vl2v distill` under torchrun: two CPU processes (gloo) train as one process on the same global batch, write
exactly one set of outputs, and resume after a kill.

The student normalises with GroupNorm: BatchNorm statistics are per rank under DDP (as in any DDP run without
SyncBatchNorm, which needs GPUs), so a BatchNorm student is not expected to match one process exactly."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

from student.state_file import StateFileError, load_state
from student.trainer import CHECKPOINT

from ..conftest import wait_until
from .test_distill import distill_args, run_cli

LOSS_TOLERANCE = 1e-4  # relative: the two processes sum gradients in another order than one process does
ACCURACY_TOLERANCE = 0.02  # a prediction on the edge may flip with that last-digit difference


def torchrun(*args: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "cli",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def ddp_args(cache, out, *extra: str) -> list[str]:
    args = distill_args(cache, out, "adip", *extra, "--device", "cpu", "--json")
    args[args.index("test_resnet")] = "test_efficientnet_gn"
    return args


def records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "sketch" / "trial_0" / "results.jsonl").read_text().splitlines()]


def assert_same_training(one: list[dict], two: list[dict]) -> None:
    assert [(r["stage"], r["step"]) for r in one] == [(r["stage"], r["step"]) for r in two]
    for a, b in zip(one, two, strict=True):
        for key, value in a.items():
            if key.startswith("loss_"):
                assert math.isclose(value, b[key], rel_tol=LOSS_TOLERANCE, abs_tol=1e-6), (key, value, b[key])
            elif key.endswith("_acc"):
                assert abs(value - b[key]) <= ACCURACY_TOLERANCE, (key, value, b[key])


def test_two_processes_train_as_one_on_the_same_global_batch_and_write_one_set_of_outputs(pacs_cache, tmp_path):
    code, output = run_cli(*ddp_args(pacs_cache, tmp_path / "one"))
    assert code == 0, output
    process = torchrun(*ddp_args(pacs_cache, tmp_path / "two"))
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert len(out.strip().splitlines()) == 1, "rank 0 alone reports"
    assert json.loads(out)["results"][0]["test_domain"] == "sketch"
    assert_same_training(records(tmp_path / "one"), records(tmp_path / "two"))
    written = sorted(p.relative_to(tmp_path / "two").as_posix() for p in (tmp_path / "two").rglob("*") if p.is_file())
    assert written == [
        "config.json",
        "environment.json",
        "sketch/trial_0/checkpoint.safetensors",
        "sketch/trial_0/model.safetensors",
        "sketch/trial_0/results.jsonl",
        "summary.json",
    ]
    assert len(records(tmp_path / "two")) == 2 * 2 + 1, "each record once, not once per process"
    assert len(json.loads((tmp_path / "two" / "environment.json").read_text())) == 1, "rank 0 records its start"


def test_a_killed_torchrun_resumes_to_the_same_result(pacs_cache, tmp_path):
    args = ["--steps", "8", "--eval-every", "2"]
    whole = torchrun(*ddp_args(pacs_cache, tmp_path / "whole", *args))
    assert whole.wait(300) == 0, whole.stderr.read()

    killed = torchrun(*ddp_args(pacs_cache, tmp_path / "killed", *args))
    checkpoint = tmp_path / "killed" / "sketch" / "trial_0" / CHECKPOINT

    def mid_stage_two() -> bool:
        try:
            state = load_state(checkpoint)
        except StateFileError:
            return False
        return state["stage"] == 1 and state["step"] >= 2

    wait_until(mid_stage_two, what="a checkpoint inside stage two", timeout=240)
    os.killpg(killed.pid, signal.SIGKILL)  # torchrun and both ranks
    killed.wait(30)
    resumed = torchrun(*ddp_args(pacs_cache, tmp_path / "killed", *args, "--resume"))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert_same_training(records(tmp_path / "whole"), records(tmp_path / "killed"))
