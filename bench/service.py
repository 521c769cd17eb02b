"""Service throughput over raw encoder throughput, same model, device and machine, alternating in one run.

    python bench/service.py --model ViT-B-32 --batch 32 --clients 8 --per-request 8 --seconds 30
    python bench/service.py --device cuda --precision bf16 --clients 4 --per-request 1   # where a GPU is lent

Each of `--rounds` rounds measures, for `--seconds` each:
1. raw: `ClipEncoder.encode_images` on preprocessed batches of `--batch` images, in this process;
2. service: `vl2v serve` in a subprocess (max batch `--batch`, the same device and precision), `--clients`
   processes posting JPEG data URLs (`--per-request` images each) over loopback HTTP;
3. raw again, at the mean batch size the service ran in step 2.
Alternating rounds expose raw and service to the same machine load; the figures at the top level are the median
over rounds, each round is listed. Weights are random (no hub here): speed does not depend on their values.
Prints one JSON object.

The service can only batch what is in flight: four single-image requests make batches of four, however fast the
service. So `ratio_at_service_batch` (service over raw at the batch sizes the service ran) is the service's own
overhead, `ratio` (over raw at `--batch`) that and the batch size together. Where the service's time goes comes
from its `/metrics`: per image, the decode and the preprocessing (on the decode threads) and the model (its share
of each batch's call, device transfer included), and the share of the wall time the model was busy.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

import requests
import torch
from harness import PACS_MINI, hammer, serve
from PIL import Image

from teacher_service.encoder import ClipEncoder
from teacher_service.local import LocalVendor

SERVICE_WORK = (  # from /metrics, without the vl2v_ prefix
    "batch_size_count",
    "batch_size_sum",
    "batch_seconds_sum",
    "image_decode_seconds_sum",
    "image_preprocess_seconds_sum",
)


def service_work(url: str) -> dict[str, float]:
    """What the service has done so far (model calls, images, seconds per phase), from its Prometheus metrics."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    found = dict(re.findall(r"^vl2v_(\w+) (\S+)$", text, re.MULTILINE))
    return {name: float(found[name]) for name in SERVICE_WORK}


def raw_throughput(encoder: ClipEncoder, pixels: torch.Tensor, seconds: float) -> float:
    """Images/s of `encoder.encode_images` on `pixels` (one batch) again and again for `seconds`."""
    encoder.encode_images(pixels)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        encoder.encode_images(pixels)
        done += len(pixels)
    return done / (time.perf_counter() - started)


def preprocessed(encoder: ClipEncoder, images: list[Path]) -> torch.Tensor:
    return torch.stack([encoder.preprocess_image(Image.open(p).convert("RGB")) for p in images])


def measure_round(
    args: argparse.Namespace, encoder: ClipEncoder, pixels: torch.Tensor, service: LocalVendor, images: list[Path]
) -> dict:
    """Raw at `--batch`, the service under load, raw at the batch size the service ran: one round."""
    raw = raw_throughput(encoder, pixels, args.seconds)
    before = service_work(service.url)
    served = hammer(service, args.model, images, args.clients, args.per_request, args.seconds)
    work = {name: value - before[name] for name, value in service_work(service.url).items()}
    images_done = work["batch_size_sum"]
    service_batch = images_done / work["batch_size_count"]
    raw_at_service_batch = raw_throughput(encoder, pixels[: round(service_batch)], args.seconds)
    return {
        "raw_images_per_s": raw,
        **served,
        "ratio": served["images_per_s"] / raw,
        "service_mean_batch": service_batch,
        "service_model_busy": served["images_per_s"] * work["batch_seconds_sum"] / images_done,
        "raw_images_per_s_at_service_batch": raw_at_service_batch,
        "ratio_at_service_batch": served["images_per_s"] / raw_at_service_batch,
        "decode_ms_per_image": 1000 * work["image_decode_seconds_sum"] / images_done,
        "preprocess_ms_per_image": 1000 * work["image_preprocess_seconds_sum"] / images_done,
        "model_ms_per_image": 1000 * work["batch_seconds_sum"] / images_done,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-request", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0, help="per measurement; each round takes three")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N, for the raw encoder and the service")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"), help="autocast on CUDA")
    parser.add_argument("--images", type=Path, default=PACS_MINI / "photo", help="folder of JPEGs (recursive)")
    args = parser.parse_args()
    images = sorted(args.images.rglob("*.jpg"))
    if len(images) < args.batch:
        parser.error(f"need at least {args.batch} JPEGs under {args.images}")

    encoder = ClipEncoder.load(args.model, None, device=args.device, precision=args.precision, allow_random=True)
    pixels = preprocessed(encoder, images[: args.batch])
    with serve(args.model, args.batch, device=args.device, precision=args.precision) as service:
        rounds = [measure_round(args, encoder, pixels, service, images) for _ in range(args.rounds)]
        peak_rss_mb = service.peak_rss_mb()
    result = {
        "model": args.model,
        "device": args.device,
        "precision": args.precision,
        "batch": args.batch,
        "clients": args.clients,
        "per_request": args.per_request,
        "cpu_threads": torch.get_num_threads(),
        **{name: statistics.median(r[name] for r in rounds) for name in rounds[0]},
        "service_peak_rss_mb": peak_rss_mb,
        "rounds": rounds,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
