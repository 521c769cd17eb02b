"""Service throughput over raw encoder throughput, same model, batch size and machine, in one run.

    python bench/service.py --model ViT-B-32 --batch 32 --clients 8 --per-request 8 --seconds 30

1. raw: `ClipEncoder.encode_images` on preprocessed batches of `--batch` images, in this process;
2. service: `vl2v serve` in a subprocess (max batch `--batch`), `--clients` threads posting JPEG data URLs
   (`--per-request` images each) over loopback HTTP for `--seconds`.
Reports images/s of both, their ratio, request latency p50/p99 and the service's peak RSS. Weights are random
(no hub here): speed does not depend on their values. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import torch
from PIL import Image

from teacher_service.encoder import ClipEncoder
from teacher_service.schema import image_data_url

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "pacs-mini" / "photo"


def raw_throughput(model: str, images: list[Path], batch: int, seconds: float) -> float:
    encoder = ClipEncoder.load(model, None, device="cpu", allow_random=True)
    pixels = torch.stack([encoder.preprocess_image(Image.open(p).convert("RGB")) for p in images[:batch]])
    encoder.encode_images(pixels)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        encoder.encode_images(pixels)
        done += batch
    return done / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_throughput(args: argparse.Namespace, images: list[Path]) -> dict:
    port, key = free_port(), "sk-bench"
    state = tempfile.mkdtemp(prefix="vl2v-bench-")
    env = {
        **os.environ,
        "VL2V_API_KEYS": f"bench:{key}:1000000",
        "VL2V_RATE_LIMIT_REQUESTS": "0",
        "VL2V_RATE_LIMIT_IMAGES": "0",
    }
    command = [
        sys.executable,
        "-m",
        "cli",
        "serve",
        "--model",
        args.model,
        "--pretrained",
        "",
        "--allow-random-weights",
        "--device",
        "cpu",
        "--port",
        str(port),
        "--state-dir",
        state,
        "--max-batch",
        str(args.batch),
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(command, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, server)
        urls = [image_data_url(p.read_bytes()) for p in images]
        bodies = [
            json.dumps(
                {
                    "model": args.model,
                    "encoding_format": "base64",
                    "input": [
                        {"type": "image", "image": urls[(c * args.per_request + i) % len(urls)]}
                        for i in range(args.per_request)
                    ],
                }
            ).encode()
            for c in range(args.clients)
        ]
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        requests.post(f"{url}/v1/embeddings", data=bodies[0], headers=headers, timeout=120).raise_for_status()

        latencies: list[float] = []
        lock, stop = threading.Lock(), threading.Event()

        def client(body: bytes) -> None:
            session = requests.Session()
            while not stop.is_set():
                started = time.perf_counter()
                session.post(f"{url}/v1/embeddings", data=body, headers=headers, timeout=120).raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - started)

        threads = [threading.Thread(target=client, args=(b,)) for b in bodies]
        started = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        peak_rss_mb = _peak_rss_mb(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    latencies.sort()
    return {
        "images_per_s": len(latencies) * args.per_request / elapsed,
        "requests": len(latencies),
        "latency_p50_ms": 1000 * statistics.median(latencies),
        "latency_p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "service_peak_rss_mb": peak_rss_mb,
    }


def _wait_ready(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the service exited with {server.returncode}")
        try:
            if requests.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise TimeoutError("the service did not become ready")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-request", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of JPEGs (searched recursively)")
    args = parser.parse_args()
    images = sorted(args.images.rglob("*.jpg"))
    if len(images) < args.batch:
        parser.error(f"need at least {args.batch} JPEGs under {args.images}")

    raw = raw_throughput(args.model, images, args.batch, args.seconds)
    served = service_throughput(args, images)
    result = {
        "model": args.model,
        "batch": args.batch,
        "clients": args.clients,
        "per_request": args.per_request,
        "cpu_threads": torch.get_num_threads(),
        "raw_images_per_s": raw,
        **served,
        "ratio": served["images_per_s"] / raw,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
