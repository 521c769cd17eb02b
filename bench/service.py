"""Service throughput over raw encoder throughput, same model, batch size and machine, in one run.

    python bench/service.py --model ViT-B-32 --batch 32 --clients 8 --per-request 8 --seconds 30

1. raw: `ClipEncoder.encode_images` on preprocessed batches of `--batch` images, in this process;
2. service: `vl2v serve` in a subprocess (max batch `--batch`), `--clients` threads posting JPEG data URLs
   (`--per-request` images each) over loopback HTTP for `--seconds`.
Reports images/s of both, their ratio, request latency p50/p99 and the service's peak RSS. Weights are random
(no hub here): speed does not depend on their values. Prints one JSON object.

The service can only batch what is in flight: four single-image requests make batches of four, however fast the
service. So the run also reads, from the service's `/metrics`, the mean size of the batches it ran and the share of
the wall time its model was busy, then measures the raw encoder again at that batch size: `ratio_at_service_batch`
is the service's own overhead, `ratio` that and the batch size together.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import requests
import torch
from harness import PACS_MINI, hammer, serve
from PIL import Image

from teacher_service.encoder import ClipEncoder


def model_work(url: str) -> tuple[float, float, float]:
    """(model calls, images, model seconds) the service has run so far, from its Prometheus histograms."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    found = dict(re.findall(r"^(vl2v_batch_\w+) (\S+)$", text, re.MULTILINE))
    return (
        float(found["vl2v_batch_size_count"]),
        float(found["vl2v_batch_size_sum"]),
        float(found["vl2v_batch_seconds_sum"]),
    )


def raw_throughput(model: str, images: list[Path], batch: int, seconds: float) -> float:
    encoder = ClipEncoder.load(model, None, device="cpu", allow_random=True)
    pixels = torch.stack([encoder.preprocess_image(Image.open(p).convert("RGB")) for p in images[:batch]])
    encoder.encode_images(pixels)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        encoder.encode_images(pixels)
        done += batch
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-request", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--images", type=Path, default=PACS_MINI / "photo", help="folder of JPEGs (recursive)")
    args = parser.parse_args()
    images = sorted(args.images.rglob("*.jpg"))
    if len(images) < args.batch:
        parser.error(f"need at least {args.batch} JPEGs under {args.images}")

    raw = raw_throughput(args.model, images, args.batch, args.seconds)
    with serve(args.model, args.batch) as service:
        before = model_work(service.url)
        served = hammer(service, args.model, images, args.clients, args.per_request, args.seconds)
        calls, encoded, busy_s = (b - a for a, b in zip(before, model_work(service.url), strict=True))
        served["service_peak_rss_mb"] = service.peak_rss_mb()
    service_batch = encoded / calls
    raw_at_service_batch = raw_throughput(args.model, images, round(service_batch), args.seconds)
    result = {
        "model": args.model,
        "batch": args.batch,
        "clients": args.clients,
        "per_request": args.per_request,
        "cpu_threads": torch.get_num_threads(),
        "raw_images_per_s": raw,
        **served,
        "ratio": served["images_per_s"] / raw,
        "service_mean_batch": service_batch,
        "service_model_busy": served["images_per_s"] / (encoded / busy_s),  # model-busy share of the wall time
        "raw_images_per_s_at_service_batch": raw_at_service_batch,
        "ratio_at_service_batch": served["images_per_s"] / raw_at_service_batch,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
