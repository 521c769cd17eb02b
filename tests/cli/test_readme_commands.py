"""The README's `vl2v serve` example, run as a newcomer would copy it: each line in turn, in a new folder."""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
import sys
from pathlib import Path

import requests

from ..conftest import REPO, free_port, wait_until


def readme_serve_example() -> list[str]:
    """The lines of the README's first code block that runs `vl2v serve` with keys, in order."""
    blocks, block = [], []
    for line in (REPO / "README.md").read_text().splitlines() + [""]:
        if line.startswith("    "):
            block.append(line[4:])
        elif block and line.strip() == "":
            continue
        elif block:
            blocks.append(block)
            block = []
    return next(b for b in blocks if any("API_KEYS" in ln for ln in b) and any("vl2v serve" in ln for ln in b))


def as_run_here(line: str, tiny_checkpoint: Path, port: int) -> tuple[dict[str, str], list[str]]:
    """A README line's variables and `vl2v serve` command, with what differs here: the tiny model (no hub) and a
    free port."""
    words = shlex.split(line, comments=True)
    start = words.index("vl2v")
    variables = dict(w.split("=", 1) for w in words[:start])
    argv = words[start:]
    assert argv[:2] == ["vl2v", "serve"], line
    for option, value in (("--model", "vl2v-tiny"), ("--pretrained", str(tiny_checkpoint))):
        argv[argv.index(option) + 1] = value
    return variables, [sys.executable, "-m", "cli", *argv[1:], "--port", str(port)]


def test_the_readme_serve_example_starts_the_first_time_and_every_time_after(tmp_path, tiny_checkpoint):
    env = dict(os.environ) | {"PYTHONPATH": str(REPO)}
    serves = []
    for line in readme_serve_example():
        if line.startswith("export "):
            name, value = shlex.split(line)[1].split("=", 1)
            env[name] = value
        else:
            serves.append(line)
    for line in serves:  # in one folder, in order: the first start, then the later ones
        port = free_port()
        variables, command = as_run_here(line, tiny_checkpoint, port)
        server = subprocess.Popen(
            command, cwd=tmp_path, env=env | variables, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            wait_until(functools.partial(_up_or_exited, port, server), what=f"{line!r} to start", timeout=120)
            assert server.poll() is None, f"{line!r} exited:\n{server.communicate()[0]}"
            session = requests.Session()
            session.headers["Authorization"] = "Bearer sk-alice"
            usage = session.get(f"http://127.0.0.1:{port}/v1/usage", timeout=10).json()
            assert usage["balance"] == 10.0, usage
        finally:
            server.terminate()
            server.wait(timeout=30)


def _up_or_exited(port: int, server: subprocess.Popen) -> bool:
    return _ready(port) or server.poll() is not None


def _ready(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False
