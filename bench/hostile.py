"""Another key's one-image latency while a hostile client floods the vendor / the same latency alone, in one run.

    python bench/hostile.py --model ViT-B-32 --requests 40

The vendor (`vl2v serve` in a subprocess, random weights) refuses a hostile request with its cheap checks, before
the expensive work: a body over the cap before it is read, images by their data URL and header before any is
decoded, texts by their token count before any reaches the model. The suite shows that order (no hostile image is
decoded, no hostile text encoded, every hostile request answered 400: `tests/teacher_service/test_cheap_checks.py`);
this measures what it is worth. Per round:

1. alone: a victim key posts `--requests` one-image requests (a PACS photo), one after another;
2. attacked: the same, while one process per hostile body below (another key) posts it again as soon as its 400
   arrives.

3. flooded: the same, while as many processes post an empty input (400 at once, nothing to check): what any flood
   of refused requests costs on this machine, where the clients share the server's cores.

Alternating rounds expose every phase to the same machine load. The figures at the top level are medians over
rounds; `delay_max_s` (attacked max less alone max) is the most a hostile client held the victim up, and
`hostile_over_flood_p50` what the hostile bodies cost beyond an equal number of clients sending nothing. Prints
one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import threading
import time

import numpy as np
import requests
from harness import KEY, PACS_MINI, load, load_starts, p99, serve
from PIL import Image

from common.schema import image_data_url

MALLORY = "sk-bench-mallory"


def hostile_bodies(model: str) -> dict[str, dict]:
    """Four bodies a cheap check refuses with 400, each as costly as its check lets it be."""
    noise = np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), dtype=np.uint8)
    large = io.BytesIO()
    Image.fromarray(noise).save(large, "PNG")
    large_image = {"type": "image", "image": image_data_url(large.getvalue(), "image/png")}
    corrupt = {"type": "image", "image": image_data_url(b"GIF89a" + b"\0" * 40, "image/gif")}
    inputs = {
        "huge texts": ["a dog " * 680] * 256,  # each within the character cap, over the context in tokens
        "huge body": ["x" * 4000] * 6000,  # 24 MB of JSON under the 32 MiB cap, more inputs than allowed
        "large images, one corrupt": [large_image] * 3 + [corrupt],  # 27 MB, refused by the last header
        "many texts, one too long": ["a photo of a small dog"] * 255 + ["a dog " * 680],
    }
    return {name: {"model": model, "input": items} for name, items in inputs.items()}


def one_image_latencies(url: str, model: str, count: int) -> list[float]:
    """`count` one-image requests by the victim key, one after another, each answered 200."""
    photo = next(PACS_MINI.rglob("*.jpg")).read_bytes()
    body = {"model": model, "input": [{"type": "image", "image": image_data_url(photo)}]}
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {KEY}"
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        answer = session.post(url, json=body, timeout=60)
        latencies.append(time.perf_counter() - started)
        if answer.status_code != 200:
            raise SystemExit(f"the victim's request got {answer.status_code}: {answer.text[:300]}")
    return latencies


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_s": round(statistics.median(ordered), 4),
        "p99_s": round(p99(ordered), 4),
        "max_s": round(ordered[-1], 4),
    }


def attacked_latencies(url: str, bodies: list[dict], model: str, count: int, seconds: float) -> tuple[list[float], int]:
    """The victim's latencies while each of `bodies` is posted by its own process for `seconds`, and the requests
    of those processes answered (every one 400, or the load fails)."""
    start_at = load_starts(len(bodies))
    refused: dict = {}

    def attack() -> None:
        headers = {"Authorization": f"Bearer {MALLORY}"}
        refused.update(load(url, headers, bodies, 0, seconds, status=400, start_at=start_at))

    attackers = threading.Thread(target=attack)
    attackers.start()
    time.sleep(max(0.0, start_at - time.time()) + 1.0)  # every attacker under way
    latencies = one_image_latencies(url, model, count)
    if time.time() > start_at + seconds:
        raise SystemExit(f"the attack ended before the victim's {count} requests did: give it longer than {seconds} s")
    attackers.join()
    return latencies, refused["requests"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--requests", type=int, default=40, help="victim requests per phase and round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    bodies = hostile_bodies(args.model)
    empty = {"model": args.model, "input": []}
    rounds = []
    with serve(args.model, 32, other_keys=f"mallory:{MALLORY}:1000000") as service:
        url = f"{service.url}/v1/embeddings"
        one_image_latencies(url, args.model, 5)  # warm-up
        for _ in range(args.rounds):
            alone = one_image_latencies(url, args.model, args.requests)
            attack_s = 5.0 + 5 * sum(alone)  # outlasts the victim's requests unless they slow down five times
            attacked, refused = attacked_latencies(url, list(bodies.values()), args.model, args.requests, attack_s)
            flooded, flood = attacked_latencies(url, [empty] * len(bodies), args.model, args.requests, attack_s)
            rounds.append(
                {
                    "alone": summary(alone),
                    "attacked": summary(attacked),
                    "flooded": summary(flooded),
                    "flood_s": round(attack_s, 1),
                    "hostile_requests_refused": refused,
                    "flood_requests_refused": flood,
                    "delay_max_s": round(max(attacked) - max(alone), 4),
                    "ratio_p50": round(statistics.median(attacked) / statistics.median(alone), 3),
                    "flood_ratio_p50": round(statistics.median(flooded) / statistics.median(alone), 3),
                    "hostile_over_flood_p50": round(statistics.median(attacked) / statistics.median(flooded), 3),
                }
            )
    print(
        json.dumps(
            {
                "model": args.model,
                "hostile_bodies": list(bodies),
                **{
                    name: statistics.median(r[name] for r in rounds)
                    for name in ("delay_max_s", "ratio_p50", "flood_ratio_p50", "hostile_over_flood_p50")
                },
                "rounds": rounds,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
