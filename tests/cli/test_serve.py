"""`vl2v` itself: version, help, and `serve` refusing what it cannot serve, in one line."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from cli.app import app
from cli.exit_codes import ERROR


def test_version_and_help():
    runner = CliRunner(env={"COLUMNS": "200"})
    assert runner.invoke(app, ["--version"]).output.startswith("vl2v 0.1.0")
    help_text = runner.invoke(app, ["serve", "-h"]).output
    for flag in (
        "--model",
        "--pretrained",
        "--allow-random-weights",
        "--price-per-image",
        "--state-dir",
        "--keys-file",
        "--rate-limit-images",
        "--max-image-pixels",
        "VL2V_PORT",
    ):
        assert flag in help_text


def vl2v(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=120, env=env)


def test_serve_refuses_random_weights_in_one_line(tmp_path):
    result = vl2v("serve", "--model", "vl2v-tiny", "--pretrained", "", "--state-dir", str(tmp_path))
    assert result.returncode == ERROR
    (line,) = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert line.startswith("error:") and "--allow-random-weights" in line and "Traceback" not in result.stderr


def test_serve_names_a_bad_setting(tmp_path):
    result = vl2v("serve", "--model", "vl2v-tiny", "--device", "cpu", "--precision", "bf16")
    assert result.returncode == ERROR
    assert "error:" in result.stderr and "precision" in result.stderr and "Traceback" not in result.stderr


def test_serve_exits_with_an_error_when_the_checkpoint_is_corrupt(tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\0" * 64)
    result = vl2v(
        "serve",
        "--model",
        "vl2v-tiny",
        "--pretrained",
        str(broken),
        "--port",
        "0",
        "--state-dir",
        str(tmp_path / "state"),
    )
    assert result.returncode == ERROR
    assert "could not load the model" in result.stderr
