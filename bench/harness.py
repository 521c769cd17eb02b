"""Shared pieces of the benchmarks: a `vl2v serve` subprocess and a load of concurrent HTTP clients."""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from common.schema import image_data_url
from teacher_service.local import LocalVendor, local_vendor

ROOT = Path(__file__).resolve().parents[1]
PACS_MINI = ROOT.parent / "shared" / "data" / "pacs-mini"
KEY = "sk-bench"
CLIENT = Path(__file__).with_name("client.py")


@contextlib.contextmanager
def serve(
    model: str, max_batch: int, *, device: str = "cpu", precision: str = "fp32", other_keys: str = ""
) -> Iterator[LocalVendor]:
    """The vendor (`python -m teacher_service`, what `vl2v serve` runs) with random weights (speed does not depend
    on their values), no rate limits, one rich key (and `other_keys`, "name:key:balance,...")."""
    settings = {
        "api_keys": ",".join(filter(None, [f"bench:{KEY}:1000000", other_keys])),
        "rate_limit_requests": 0,
        "rate_limit_images": 0,
        "model": model,
        "pretrained": "",
        "allow_random_weights": True,
        "device": device,
        "precision": precision,
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


def p99(ordered: list[float]) -> float:
    """The 99th percentile of `ordered` (sorted), the nearest rank at or below it."""
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def load_starts(clients: int) -> float:
    """When a load of `clients` client processes started now can begin: every client started and warmed up."""
    return time.time() + 2.0 + 0.1 * clients


def load(
    endpoint: str,
    headers: dict[str, str],
    bodies: list[dict],
    per_request: int,
    seconds: float,
    *,
    status: int = 200,
    start_at: float | None = None,
) -> dict:
    """One client process per body (`bench/client.py`), each posting its body again as soon as the last answer
    arrived, all starting at the same instant, for `seconds`: images/s and request latency p50/p99. Every answer
    must have `status`. `start_at` (a `time.time()`) must leave the clients time to start and warm up.

    Processes, not threads: client threads would share one GIL and, with a pure-Python HTTP stack, spend
    milliseconds of it per request, which on a small machine is a measurable part of the server's idle time.
    """
    with tempfile.TemporaryDirectory(prefix="vl2v-load-") as folder:
        files = []
        for i, body in enumerate(bodies):
            files.append(Path(folder) / f"body{i}.json")
            files[-1].write_bytes(json.dumps(body).encode())
        secret = Path(folder) / "headers.json"  # the key: in a file only this user reads, not in argv
        secret.touch(mode=0o600)
        secret.write_text(json.dumps(headers))
        start_at = start_at or load_starts(len(bodies))
        clients = [
            subprocess.Popen(
                [sys.executable, str(CLIENT), endpoint, str(f), str(start_at), str(seconds), str(secret), str(status)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for f in files
        ]
        results = []
        for client in clients:
            out, _ = client.communicate()
            if client.returncode != 0:
                raise RuntimeError(f"a load client failed (exit {client.returncode})")
            results.append(json.loads(out))
    latencies = sorted(latency for r in results for latency in r["latencies"])
    if not latencies:
        raise RuntimeError("no load client finished a request in time")
    elapsed = max(r["finished_at"] for r in results) - start_at
    return {
        "images_per_s": len(latencies) * per_request / elapsed,
        "requests": len(latencies),
        "latency_p50_ms": 1000 * statistics.median(latencies),
        "latency_p99_ms": 1000 * p99(latencies),
    }
