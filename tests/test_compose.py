"""docker-compose.yml, checked without Docker: its teacher command, run as compose would, comes up healthy."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import requests
import yaml

from .conftest import REPO, free_port, wait_until
from .teacher_service.test_api_contract import image

_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR} and ${VAR:-default}."""
    return _VARIABLE.sub(lambda m: env.get(m[1]) or (m[2] or ""), value)


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def load_compose(name: str = "docker-compose.yml") -> dict:
    return yaml.safe_load((REPO / name).read_text())


def test_compose_declares_a_safe_teacher():
    teacher = load_compose()["services"]["teacher"]
    assert all(p.startswith("127.0.0.1:") for p in teacher["ports"]), "bind to localhost by default"
    assert "/ready" in " ".join(teacher["healthcheck"]["test"]) and teacher["healthcheck"]["start_period"]
    assert "curl" not in " ".join(teacher["healthcheck"]["test"])  # slim images have no curl
    assert teacher["environment"]["HF_HOME"] == "/models" and "weights:/models" in teacher["volumes"]
    assert teacher["env_file"][0]["path"] == "teacher.env"
    assert not any("KEY" in k for k in teacher["environment"]), "keys come from the env file only"
    assert "API_KEY" not in (REPO / "Dockerfile").read_text().replace("VL2V_API_KEYS or", "")


def test_gpu_override_reserves_a_gpu():
    device = load_compose("docker-compose.gpu.yml")["services"]["teacher"]["deploy"]["resources"]
    (reservation,) = device["reservations"]["devices"]
    assert reservation["capabilities"] == ["gpu"]


def test_compose_teacher_command_comes_up_ready_and_embeds(tmp_path, tiny_checkpoint, jpeg_bytes):
    teacher = load_compose()["services"]["teacher"]
    example = read_env_file(REPO / "teacher.env.example")
    # What differs outside Docker: the model (no hub here), loopback instead of 0.0.0.0, and host paths.
    env_file = example | {"VL2V_MODEL": "vl2v-tiny", "VL2V_PRETRAINED": str(tiny_checkpoint)}
    # The documented first start: VL2V_CREATE_BILLING=1 docker compose up teacher.
    environment = {k: interpolate(str(v), {"VL2V_CREATE_BILLING": "1"}) for k, v in teacher["environment"].items()}
    port = free_port()
    environment |= {
        "VL2V_HOST": "127.0.0.1",
        "VL2V_PORT": str(port),
        "VL2V_STATE_DIR": str(tmp_path / "state"),
        "HF_HOME": str(tmp_path / "models"),
    }
    env = {
        **os.environ,
        **env_file,
        **environment,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = teacher["command"]
    assert shutil.which(command[0], path=env["PATH"]), f"{command[0]} is not installed"

    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ready(url, process), what="the compose teacher to become ready", timeout=120)
        key = example["VL2V_API_KEYS"].split(":")[1]
        response = requests.post(
            f"{url}/v1/embeddings",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "vl2v-tiny", "input": [image(jpeg_bytes[0]), "a dog"]},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert len(response.json()["data"]) == 2
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode in (0, -signal.SIGTERM), output  # uvicorn re-raises the signal it handled
    assert "Application shutdown complete" in output
    assert key not in output, "the API key must never be logged"


def _ready(url: str, process: subprocess.Popen) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"the teacher exited with {process.returncode}: {process.stdout.read()}")
    try:
        return requests.get(f"{url}/ready", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_compose_teacher_refuses_an_empty_state_volume_after_the_first_start(tmp_path, tiny_checkpoint):
    """Without VL2V_CREATE_BILLING=1 an empty state folder is a wrong mount: one line, exit 1, no books made."""
    teacher = load_compose()["services"]["teacher"]
    example = read_env_file(REPO / "teacher.env.example")
    environment = {k: interpolate(str(v), {}) for k, v in teacher["environment"].items()}
    environment |= {"VL2V_PORT": str(free_port()), "VL2V_STATE_DIR": str(tmp_path / "state"), "VL2V_HOST": "127.0.0.1"}
    env = {
        **os.environ,
        **example,
        "VL2V_MODEL": "vl2v-tiny",
        "VL2V_PRETRAINED": str(tiny_checkpoint),
        **environment,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    result = subprocess.run(teacher["command"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert "VL2V_CREATE_BILLING=1" in line and "Traceback" not in result.stderr
    assert not (tmp_path / "state" / "billing.sqlite3").exists()
