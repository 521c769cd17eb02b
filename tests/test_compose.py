"""docker-compose.yml, checked without Docker: its teacher command, run as compose would, comes up healthy."""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

from .conftest import REPO, free_port, need_server, wait_until
from .teacher_service.test_api_contract import image

NGINX_INSTALL = "Debian: apt-get update && apt-get install -y nginx"
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


def test_the_replicas_profile_declares_postgres_replicas_and_a_balancer():
    services = load_compose()["services"]
    assert all(services[s]["profiles"] == ["replicas"] for s in ("postgres", "teacher-replica", "balancer"))
    assert "profiles" not in services["teacher"], "docker compose up teacher is unchanged"
    replica = services["teacher-replica"]
    assert interpolate(str(replica["deploy"]["replicas"]), {}) == "3"
    url = interpolate(replica["environment"]["VL2V_DATABASE_URL"], {})
    assert url.startswith("postgresql://") and "@postgres:5432/" in url
    assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "replica-state:/state" in replica["volumes"], "one key-hashing secret for every replica"
    balancer = services["balancer"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in balancer["volumes"]
    assert all(p.startswith("127.0.0.1:") for p in balancer["ports"])
    assert "server teacher-replica:8000" in (REPO / "nginx.conf").read_text()


def test_the_replicas_profile_runs_behind_nginx_and_a_replica_killed_mid_request_is_paid_once(
    tmp_path, tiny_checkpoint, postgres, jpeg_bytes
):
    """The profile outside Docker: the test's PostgreSQL, three `vl2v serve` replicas on loopback, nginx with the
    repo's nginx.conf. One replica is killed while it holds a request; the client's retries finish it, paid once."""
    import psycopg

    from cache.client import TeacherClient, request_body

    services = load_compose()["services"]
    replica = services["teacher-replica"]
    example = read_env_file(REPO / "teacher.env.example")
    database = postgres.create_database()
    environment = {k: interpolate(str(v), {"VL2V_CREATE_BILLING": "1"}) for k, v in replica["environment"].items()}
    environment |= {
        "VL2V_HOST": "127.0.0.1",
        "VL2V_STATE_DIR": str(tmp_path / "state"),  # the shared state volume
        "VL2V_DATABASE_URL": database,  # the compose URL names the postgres service; here it is on loopback
        "HF_HOME": str(tmp_path / "models"),
        "VL2V_IDEMPOTENCY_LOCK_S": "3",  # a dead replica's claim is taken over after 3 s (90 s by default)
    }
    env = {
        **os.environ,
        **example,
        "VL2V_MODEL": "vl2v-tiny",
        "VL2V_PRETRAINED": str(tiny_checkpoint),
        "VL2V_RATE_LIMIT_REQUESTS": "0",
        **environment,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    key = example["VL2V_API_KEYS"].split(":")[1]
    replicas: list[tuple[subprocess.Popen, int]] = []
    nginx = None
    try:
        for _ in range(3):
            port = free_port()
            process = subprocess.Popen(
                replica["command"],
                env=env | {"VL2V_PORT": str(port)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            replicas.append((process, port))
        for process, port in replicas:
            wait_until(lambda: _ready(f"http://127.0.0.1:{port}", process), what="a replica", timeout=120)  # noqa: B023
        balancer_port = free_port()
        nginx = _start_nginx(tmp_path / "nginx", [port for _, port in replicas], balancer_port)
        url = f"http://127.0.0.1:{balancer_port}"
        wait_until(lambda: _ready(url, replicas[0][0]), what="nginx to answer", timeout=30)

        client = TeacherClient(url, key)
        dim = client.model()["embedding_dim"]
        # A warm-up purchase through the balancer.
        warm = client.embed(request_body("vl2v-tiny", [image(jpeg_bytes[0])]), "warm-up", count=1, dim=dim)
        assert not warm.replayed and warm.images == 1

        inputs = [image(jpeg_bytes[i % 8]) for i in range(48)]
        body = request_body("vl2v-tiny", inputs)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            answer = pool.submit(client.embed, body, "order-killed", count=len(inputs), dim=dim)
            owner = _claim_owner(database, "order-killed", answer)
            victim = next(p for p, _ in replicas if owner.startswith(f"{socket.gethostname()}:{p.pid}/"))
            victim.kill()  # kill -9 while it holds the key
            result = answer.result(timeout=120)
        assert len(result.vectors) == 48
        with psycopg.connect(database) as db:
            rows = db.execute(
                "SELECT idempotency_key, images FROM ledger ORDER BY id",
            ).fetchall()
            spent = db.execute("SELECT spent, balance FROM keys WHERE name = 'dev'").fetchone()
        assert rows == [("warm-up", 1), ("order-killed", 48)], "the killed request is charged once, or not at all"
        price = round(float(example["VL2V_PRICE_PER_IMAGE"]) * 1e9)
        assert spent == (49 * price, round(100.0 * 1e9) - 49 * price)
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.communicate(timeout=30)
        for process, _ in replicas:
            process.terminate()
        for process, _ in replicas:
            output, _ = process.communicate(timeout=30)
            assert key not in output, "the API key must never be logged"


def _claim_owner(database: str, idempotency_key: str, pending: concurrent.futures.Future) -> str:
    """The owner of the key's in-flight claim, as soon as one exists."""
    import psycopg

    with psycopg.connect(database, autocommit=True) as db:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert not pending.done(), f"the request ended before it could be interrupted: {pending.result()}"
            row = db.execute(
                "SELECT owner FROM idempotency WHERE idempotency_key = %s AND state = 'in_flight'", (idempotency_key,)
            ).fetchone()
            if row:
                return row[0]
            time.sleep(0.001)
    raise TimeoutError("the request never claimed its key")


def _start_nginx(root: Path, ports: list[int], listen: int) -> subprocess.Popen:
    """nginx with the repo's nginx.conf, its upstream pointed at loopback replicas and its files in `root`."""
    root.mkdir()
    conf = (REPO / "nginx.conf").read_text()
    upstream = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;" for p in ports)
    conf = re.sub(r"^\s*server teacher-replica:8000[^;]*;", upstream, conf, flags=re.M)
    conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    temp = "\n".join(
        f"    {name}_temp_path {root / name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = conf.replace("http {", "http {\n" + temp, 1)
    user = "user root;\n" if os.geteuid() == 0 else ""
    (root / "nginx.conf").write_text(f"{user}daemon off;\npid {root / 'nginx.pid'};\nerror_log stderr warn;\n{conf}")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    need_server("nginx", Path(nginx).exists(), NGINX_INSTALL)
    return subprocess.Popen([nginx, "-p", str(root), "-c", str(root / "nginx.conf"), "-e", "stderr"], text=True)
