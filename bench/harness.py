"""Shared pieces of the benchmarks: a `vl2v serve` subprocess and a load of concurrent HTTP clients."""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from teacher_service.local import LocalVendor, local_vendor
from teacher_service.schema import image_data_url

ROOT = Path(__file__).resolve().parents[1]
PACS_MINI = ROOT.parent / "shared" / "data" / "pacs-mini"
KEY = "sk-bench"


@contextlib.contextmanager
def serve(model: str, max_batch: int) -> Iterator[LocalVendor]:
    """The vendor (`python -m teacher_service`, what `vl2v serve` runs) with random weights (speed does not depend
    on their values), no rate limits, one rich key."""
    settings = {
        "api_keys": f"bench:{KEY}:1000000",
        "rate_limit_requests": 0,
        "rate_limit_images": 0,
        "model": model,
        "pretrained": "",
        "allow_random_weights": True,
        "device": "cpu",
        "max_batch": max_batch,
        "log_level": "warning",
    }
    with local_vendor(settings, Path(tempfile.mkdtemp(prefix="vl2v-bench-"))) as vendor:
        yield vendor


def hammer(
    service: LocalVendor, model: str, images: list[Path], clients: int, per_request: int, seconds: float
) -> dict:
    """`clients` threads posting `per_request` pre-encoded JPEG data URLs each to `vl2v serve`, for `seconds`."""
    urls = [image_data_url(p.read_bytes()) for p in images]
    bodies = [
        {
            "model": model,
            "encoding_format": "base64",
            "input": [{"type": "image", "image": urls[(c * per_request + i) % len(urls)]} for i in range(per_request)],
        }
        for c in range(clients)
    ]
    headers = {"Authorization": f"Bearer {KEY}"}
    return load(f"{service.url}/v1/embeddings", headers, bodies, per_request, seconds)


def load(endpoint: str, headers: dict[str, str], bodies: list[dict], per_request: int, seconds: float) -> dict:
    """One thread per body, each posting its body again as soon as the last answer arrived, for `seconds`:
    images/s and request latency p50/p99."""
    encoded = [json.dumps(b).encode() for b in bodies]
    headers = headers | {"Content-Type": "application/json"}
    requests.post(endpoint, data=encoded[0], headers=headers, timeout=120).raise_for_status()  # warm-up
    latencies: list[float] = []
    lock, stop = threading.Lock(), threading.Event()

    def client(body: bytes) -> None:
        session = requests.Session()
        while not stop.is_set():
            started = time.perf_counter()
            session.post(endpoint, data=body, headers=headers, timeout=120).raise_for_status()
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client, args=(b,)) for b in encoded]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "images_per_s": len(latencies) * per_request / elapsed,
        "requests": len(latencies),
        "latency_p50_ms": 1000 * statistics.median(latencies),
        "latency_p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }
