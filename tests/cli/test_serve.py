"""`vl2v` itself: version, help, and `serve` refusing what it cannot serve, in one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
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


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def unwritable_folder(tmp_path) -> str:
    if os.geteuid() == 0:  # root writes through permission bits; sysfs refuses even root
        return "/sys/vl2v-state"
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o500)
    return str(folder / "state")


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("bad balance", "entry 1 (alice): the balance is not a number"),
        ("read-only state folder", "state folder"),
        ("port in use", "cannot listen on 127.0.0.1:"),
        ("infinite price", "price_per_image"),
        ("missing billing database", "VL2V_CREATE_BILLING=1"),
    ],
)
@pytest.mark.parametrize("entry", ["vl2v serve", "python -m teacher_service"])
def test_every_startup_failure_is_one_line_with_exit_code_1(
    tmp_path, tiny_checkpoint, busy_port, case, fragment, entry
):
    env = {**os.environ, "VL2V_API_KEYS": "alice:sk-alice-secret:10", "VL2V_CREATE_BILLING": "1"}
    args = ["serve", "--model", "vl2v-tiny", "--pretrained", str(tiny_checkpoint), "--port", "0"]
    args += ["--state-dir", str(tmp_path / "state")]
    if case == "bad balance":
        env["VL2V_API_KEYS"] = "alice:sk-alice-secret:lots"
    elif case == "read-only state folder":
        args += ["--state-dir", unwritable_folder(tmp_path)]
    elif case == "port in use":
        args += ["--port", str(busy_port)]
    elif case == "infinite price":
        args += ["--price-per-image", "inf"]
    else:
        env.pop("VL2V_CREATE_BILLING")
    if entry == "vl2v serve":
        result = vl2v(*args, env=env)
    else:  # the same settings as VL2V_* variables, later flags winning as they do on a command line
        env |= {
            f"VL2V_{flag[2:].replace('-', '_').upper()}": value
            for flag, value in zip(args[1::2], args[2::2], strict=True)
        }
        module = [sys.executable, "-m", "teacher_service"]
        result = subprocess.run(module, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == ERROR, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], result.stderr
    assert "sk-alice" not in result.stderr


def test_every_serve_option_reaches_the_settings(tmp_path, monkeypatch):
    """Each option is a Settings field: a value other than its default, given on the command line, arrives."""
    from typing import Literal, get_args, get_origin

    from cli import serve as command
    from teacher_service.settings import Settings

    keys = tmp_path / "keys"
    keys.write_text("")
    keys.chmod(0o600)
    given, args = {}, []
    for name in command.OPTIONS:
        field = Settings.model_fields[name]
        flag = f"--{name.replace('_', '-')}"
        if field.default is False:
            given[name], args = True, [*args, flag]
            continue
        if get_origin(field.annotation) is Literal:
            value = next(c for c in get_args(field.annotation) if c != field.default and c != "cpu")
        elif field.annotation in (int, float):
            value = field.default + 1
        elif name == "keys_file":
            value = keys
        elif name == "state_dir":
            value = tmp_path / "state"
        else:
            value = f"x-{name}"
        given[name], args = value, [*args, flag, str(value)]
    received = []
    monkeypatch.setattr(command, "run", received.append)
    result = CliRunner().invoke(app, ["serve", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    (settings,) = received
    for name, value in given.items():
        assert getattr(settings, name) == value, name
