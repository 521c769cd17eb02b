"""A user error is one red line and exit code 1; a bug keeps its traceback; --debug shows every traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer

from cache.errors import InvalidOption
from cli.errors import reports_errors


def _vl2v(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "VL2V_DEBUG"} | (env or {})
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=environ)


def test_a_user_error_is_one_line_without_a_traceback(tmp_path):
    done = _vl2v("demo", "--target", "nowhere", "--out", str(tmp_path / "demo"))
    assert done.returncode == 1
    assert done.stderr.strip() == "error: --target 'nowhere' is not one of ['cartoon', 'painting', 'photo', 'sketch']"
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_shows_the_traceback_of_a_user_error(tmp_path, how):
    args = ("--debug",) if how == "flag" else ()
    env = {"VL2V_DEBUG": "1"} if how == "environment" else None
    done = _vl2v(*args, "demo", "--target", "nowhere", "--out", str(tmp_path / "demo"), env=env)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.rstrip().endswith(
        "cache.errors.InvalidOption: --target 'nowhere' is not one of ['cartoon', 'painting', 'photo', 'sketch']"
    )


def test_only_typed_errors_become_a_line_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    monkeypatch.delenv("VL2V_DEBUG", raising=False)

    @reports_errors
    def mistaken() -> None:
        raise InvalidOption("--steps must be >= 1, got 0")

    @reports_errors
    def buggy() -> None:
        raise ValueError("not enough values to unpack")

    with pytest.raises(typer.Exit) as stopped:
        mistaken()
    assert stopped.value.exit_code == 1
    assert capsys.readouterr().err.strip() == "error: --steps must be >= 1, got 0"
    with pytest.raises(ValueError, match="not enough values to unpack"):
        buggy()
