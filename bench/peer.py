"""vl2v serve against a peer embedding server (infinity-emb), same architecture, images and load, in one run.

    python3 -m venv /tmp/peer && /tmp/peer/bin/pip install "infinity-emb[server,torch,vision]" aiohttp
    python bench/peer.py --peer-venv /tmp/peer --levels 1,4,16 --seconds 20

Both serve CLIP ViT-B/32 with random weights (speed does not depend on their values): open_clip's `ViT-B-32` for
vl2v, the same shapes as a local Hugging Face folder for the peer (`bench/peer_model.py`, built once in the peer's
own virtual environment; infinity-emb is never a dependency of vl2v). At each concurrency level, `level` client
threads post single-image requests (the same PACS JPEGs, as base64 data URLs, base64 answers) to one server for
`--seconds`, then to the other, the idle one frozen (SIGSTOP); the order alternates from level to level. Both
servers run on the CPU with the same maximum batch. Also measured, in this process: the raw `encode_images`
throughput at that batch, so each server's images/s can be read as a share of what the model alone does.

vl2v does more per request than the peer: it authenticates, rate-limits, checks the balance and commits a ledger
row (SQLite, synchronous=FULL) before answering. Prints one JSON object and the Markdown table.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import open_clip
import requests
from harness import PACS_MINI, ROOT, load, serve
from service import preprocessed, raw_throughput

from teacher_service.encoder import ClipEncoder
from teacher_service.local import free_port


@contextlib.contextmanager
def peer_server(venv: Path, model_dir: Path, batch: int) -> Iterator[tuple[str, subprocess.Popen]]:
    """infinity-emb serving `model_dir` on CPU on a loopback port; yields its URL and process."""
    port = free_port()
    command = [str(venv / "bin" / "infinity_emb"), "v2", "--model-id", str(model_dir), "--served-model-name", "clip"]
    command += ["--device", "cpu", "--engine", "torch", "--batch-size", str(batch), "--port", str(port)]
    command += ["--host", "127.0.0.1"]
    log = tempfile.NamedTemporaryFile(prefix="peer-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"infinity_emb exited with {process.returncode}; see {log.name}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"infinity_emb did not start; see {log.name}")
            time.sleep(0.5)
        yield url, process
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(30)


def peer_model(venv: Path, out: Path) -> Path:
    """The Hugging Face CLIP ViT-B/32 folder, built once with the peer's Python."""
    if not (out / "model.safetensors").is_file():
        bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
        subprocess.run([str(venv / "bin" / "python"), str(ROOT / "bench" / "peer_model.py"), str(out), str(bpe)],
                       check=True)  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-venv", type=Path, required=True, help="virtual environment with infinity-emb")
    parser.add_argument("--peer-model", type=Path, default=Path(tempfile.gettempdir()) / "vl2v-peer-clip-b32")
    parser.add_argument("--levels", default="1,4,16", help="requests in flight, comma-separated")
    parser.add_argument("--batch", type=int, default=32, help="maximum batch of both servers")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--images", type=Path, default=PACS_MINI / "photo", help="folder of JPEGs (recursive)")
    args = parser.parse_args()
    images = sorted(args.images.rglob("*.jpg"))
    levels = [int(x) for x in args.levels.split(",")]
    urls = ["data:image/jpeg;base64," + base64.b64encode(p.read_bytes()).decode() for p in images]

    def bodies(level: int, server: str) -> list[dict]:
        picked = [urls[i % len(urls)] for i in range(level)]
        if server == "vl2v":
            return [{"model": "ViT-B-32", "encoding_format": "base64", "input": [{"type": "image", "image": u}]}
                    for u in picked]  # fmt: skip
        return [{"model": "clip", "encoding_format": "base64", "modality": "image", "input": [u]} for u in picked]

    encoder = ClipEncoder.load("ViT-B-32", None, device="cpu", allow_random=True)
    raw = raw_throughput(encoder, preprocessed(encoder, images[: args.batch]), args.seconds)
    del encoder
    rows = []
    model_dir = peer_model(args.peer_venv, args.peer_model)
    with (
        serve("ViT-B-32", args.batch) as vl2v,
        peer_server(args.peer_venv, model_dir, args.batch) as (peer, peer_process),
    ):
        targets = {
            "vl2v": (f"{vl2v.url}/v1/embeddings", {"Authorization": "Bearer sk-bench"}),
            "peer": (f"{peer}/embeddings", {}),
        }
        processes = {"vl2v": vl2v.process, "peer": peer_process}
        for n, level in enumerate(levels):
            order = ("vl2v", "peer") if n % 2 == 0 else ("peer", "vl2v")
            measured = {}
            for server in order:
                # The other server is frozen while this one is measured: an idle server's polling loop must not
                # take CPU from the one under load.
                for name, process in processes.items():
                    process.send_signal(signal.SIGCONT if name == server else signal.SIGSTOP)
                endpoint, headers = targets[server]
                measured[server] = load(endpoint, headers, bodies(level, server), 1, args.seconds)
                print(f"{level} in flight, {server}: {measured[server]['images_per_s']:.1f} img/s", file=sys.stderr)
            rows.append({"in_flight": level, **{f"{s}_{k}": v for s, m in measured.items() for k, v in m.items()}})
            rows[-1]["ratio"] = measured["vl2v"]["images_per_s"] / measured["peer"]["images_per_s"]
        for process in processes.values():
            process.send_signal(signal.SIGCONT)
    result = {"model": "ViT-B/32 (random weights)", "batch": args.batch, "raw_images_per_s": raw, "rows": rows}
    print(json.dumps(result, indent=2))
    print("\n| in flight | vl2v img/s | peer img/s | vl2v / peer | vl2v / raw | vl2v p50 / p99 | peer p50 / p99 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['in_flight']} | {r['vl2v_images_per_s']:.1f} | {r['peer_images_per_s']:.1f} | **{r['ratio']:.2f}** "
            f"| {r['vl2v_images_per_s'] / raw:.2f} "
            f"| {r['vl2v_latency_p50_ms']:.0f} / {r['vl2v_latency_p99_ms']:.0f} ms "
            f"| {r['peer_latency_p50_ms']:.0f} / {r['peer_latency_p99_ms']:.0f} ms |"
        )


if __name__ == "__main__":
    main()
