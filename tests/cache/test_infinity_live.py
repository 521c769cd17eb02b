"""infinity-emb itself, from its own virtual environment, serving the demo teacher written as a Hugging Face CLIP
folder (tools/hf_clip_folder.py): bought from with `vl2v query --vendor infinity`, killed and resumed, compared
with `vl2v serve --model demo`, and distilled from. infinity-emb is never a vl2v dependency: `.ci/run` installs it
into `.venv-peer` (or point VL2V_PEER_VENV at one)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import open_clip.tokenizer
import pytest
import requests

from cache.data.world import write_benchmark
from cache.store import EmbeddingCache
from cli.student_cmds import teacher_zeroshot
from teacher_service.local import free_port

from ..conftest import REPO, need_server, run_service, wait_until

INSTALL = "python3 -m venv .venv-peer && .venv-peer/bin/pip install 'infinity-emb[server,torch,vision]==0.0.78' aiohttp"
pytestmark = pytest.mark.slow


def peer_venv() -> Path:
    return Path(os.environ.get("VL2V_PEER_VENV", REPO / ".venv-peer"))


@pytest.fixture(scope="module")
def infinity(tmp_path_factory) -> Iterator[str]:
    venv = peer_venv()
    need_server("infinity-emb", (venv / "bin" / "infinity_emb").exists(), INSTALL)
    folder = tmp_path_factory.mktemp("hf") / "vl2v-demo"
    source = REPO / "common" / "demo" / "vl2v-demo"
    subprocess.run(
        [str(venv / "bin" / "python"), str(REPO / "tools" / "hf_clip_folder.py"), str(source), str(folder),
         open_clip.tokenizer.default_bpe()], check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    command = [str(venv / "bin" / "infinity_emb"), "v2", "--model-id", str(folder), "--served-model-name", "demo-clip"]
    command += ["--device", "cpu", "--engine", "torch", "--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path_factory.mktemp("log") / "infinity.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=os.environ | {"HF_HUB_OFFLINE": "1"}
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url) or process.poll() is not None, what="infinity-emb to start", timeout=300)
        if process.poll() is not None:
            raise RuntimeError(f"infinity_emb exited: {log.read_text()[-2000:]}")
        yield url
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The demo's patterned world, 10 images per domain and class (320)."""
    root = tmp_path_factory.mktemp("world")
    write_benchmark(root, per_class=10, seed=0, target="sketch", context_bias=0.9)
    return root


def demo_args(world: Path, cache: Path, *extra: str) -> list[str]:
    return ["--dataset", "demo", "--data-dir", str(world), "--cache", str(cache), *extra]


def embeddings(cache: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    with EmbeddingCache.open(cache) as store:
        return dict(store.images()), store.texts()


def buy(url: str | None, world: Path, cache: Path, *extra: str, env: dict | None = None) -> tuple[int, dict]:
    """`vl2v query --json` of the demo world in its own process (the console script's code path)."""
    command = [sys.executable, "-m", "cli", "query", *demo_args(world, cache, *extra), "--json"]
    command += ["--teacher-url", url] if url else []
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ | (env or {}), timeout=600)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    return done.returncode, (json.loads(lines[-1]) if lines else {"output": done.stderr[-2000:]})


def test_infinity_sells_the_demo_teacher_as_vl2v_serves_it(infinity, world, tmp_path, make_settings):
    """The same weights through both servers: every image's embedding within cosine 0.999, every prompt's too,
    and the teacher's zero-shot accuracy on the cache within half a point."""
    code, report = buy(infinity, world, tmp_path / "inf", "--vendor", "infinity")
    assert code == 0 and report["paid_images"] == 320, report
    with run_service(make_settings(model="demo", pretrained="openai")) as vendor:
        code, report = buy(vendor.url, world, tmp_path / "vl2v", env={"VL2V_API_KEY": "sk-alice-secret"})
        assert code == 0 and report["paid_images"] == 320, report
    (ours, our_texts), (theirs, their_texts) = embeddings(tmp_path / "vl2v"), embeddings(tmp_path / "inf")
    assert ours.keys() == theirs.keys() and our_texts.keys() == their_texts.keys()
    cosines = [float(ours[k] @ theirs[k]) for k in ours] + [float(our_texts[t] @ their_texts[t]) for t in our_texts]
    assert min(cosines) >= 0.999, f"the least similar embedding: cosine {min(cosines)}"
    a, b = teacher_zeroshot(tmp_path / "vl2v").mean, teacher_zeroshot(tmp_path / "inf").mean
    assert abs(a - b) <= 0.005, (a, b)


def test_killed_mid_run_infinity_purchases_resume_within_the_bound(infinity, world, tmp_path):
    """No idempotency keys at infinity: killed with kill -9, the resumed run re-buys what was in flight and counts
    it as possibly paid: at most --concurrency x --batch-size images."""
    cache, in_flight = tmp_path / "c", 2 * 2
    options = ("--vendor", "infinity", "--batch-size", "2", "--concurrency", "2", "--teacher-url", infinity)
    command = [sys.executable, "-m", "cli", "query", *demo_args(world, cache, *options)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _held(cache) >= 40, what="some images bought", timeout=120)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    code, report = buy(infinity, world, cache, *options[:6])
    assert code == 0, report
    with EmbeddingCache.open(cache) as store:
        totals = store.totals()
    assert totals.held_images == 320, "everything bought in the end"
    assert totals.unrecovered_images <= in_flight, "at most what was in flight is counted twice"
    assert totals.paid_images == 320 + totals.unrecovered_images


def _held(cache: Path) -> int:
    try:
        with EmbeddingCache.open(cache) as store:
            return store.totals().held_images
    except Exception:  # not created yet, or mid-creation
        return 0


def test_a_cache_bought_from_infinity_distils(infinity, world, tmp_path):
    from ..student.test_distill import distill_args, run_cli

    assert buy(infinity, world, tmp_path / "c", "--vendor", "infinity")[0] == 0
    code, output = run_cli(*distill_args(tmp_path / "c", tmp_path / "run", "adip"))
    assert code == 0, output
    assert any((tmp_path / "run").rglob("model.safetensors"))
