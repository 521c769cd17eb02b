"""Measure `vl2v demo` over seeds and write a results file: every seed's numbers, the command, the code, the machine.

    python tools/measure_demo.py --seeds 0 1 2 --target sketch --out docs/results/demo-sketch.json
    python tools/measure_demo.py --seeds 0 1 2 --quick --out docs/results/demo-quick-sketch.json
    python tools/measure_demo.py --quick --methods kd,adip --views 0 1 4 --out docs/results/views-study.json
    python tools/measure_demo.py --seeds 0 1 2 --quick --load 2 --out docs/results/demo-quick-sketch-load.json

Each seed runs `vl2v demo --seed S --json` in its own process, one after another; with `--views`, once per K
(`vl2v demo --views K`: K augmented views bought of each image and replayed), the file holding one set of seeds
per K. The file records the commit (read before the runs, with whether the tree had uncommitted changes), the CPU,
the thread count and the torch build, so a reader can tell a different result from a different machine.
`tools/render_results.py` renders the README's and docs' tables and figures from the files.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from student.environment import environment

REPO = Path(__file__).resolve().parents[1]


def provenance(script: str) -> dict:
    """What every results file starts with: the command that wrote it, the day, the commit (read before the runs,
    so a commit made meanwhile is not credited) and the machine."""
    return {
        "command": f"python {script} " + shlex.join(sys.argv[1:]),
        "measured": datetime.date.today().isoformat(),
        **commit(),
        "machine": environment(),
    }


def commit() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    # Results files are what this tool writes, not code: one written by an earlier measurement of the same
    # commit does not make the code measured differ from the commit.
    changes = git("status", "--porcelain", "--", ".", ":(exclude)docs/results")
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": bool(changes)}


def run_seed(seed: int, demo_args: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="vl2v-demo-") as out:
        command = [sys.executable, "-m", "cli", "demo", "--seed", str(seed), "--out", out, "--json", *demo_args]
        started = time.monotonic()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"seed {seed}: vl2v demo failed ({done.returncode}):\n{done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(time.monotonic() - started, 1)
    for volatile in ("out", "chart"):
        result.pop(volatile, None)
    return result


# What "under load" means here: another PyTorch job on the same cores, as a second training run or a notebook is.
LOAD_JOB = (
    "import sys, torch; torch.set_num_threads(int(sys.argv[1])); a = torch.randn(512, 512)\n"
    "while True: a = torch.tanh(a @ a)"
)


@contextlib.contextmanager
def load(threads: int | None):
    """While the block runs, a `threads`-thread PyTorch job (float32 512 x 512 matmuls in a loop) beside it."""
    if not threads:
        yield None
        return
    job = subprocess.Popen([sys.executable, "-c", LOAD_JOB, str(threads)])
    try:
        yield {"threads": threads, "job": f"a {threads}-thread PyTorch job: 512 x 512 float32 matmuls in a loop"}
    finally:
        job.kill()
        job.wait()


def seeds_of(seeds: list[int], demo_args: list[str]) -> dict[str, dict]:
    results = {}
    for seed in seeds:
        results[str(seed)] = run_seed(seed, demo_args)
        scores = {m: r["ood_acc"] for m, r in results[str(seed)]["methods"].items()}
        print(f"{shlex.join(demo_args)} seed {seed}: {json.dumps(scores)}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target", default="sketch")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--methods", help="comma-separated, as `vl2v demo --methods` (default: the demo's)")
    parser.add_argument("--views", type=int, nargs="+", help="measure each K of `vl2v demo --views K`")
    parser.add_argument("--load", type=int, metavar="THREADS", help="measure beside a PyTorch job of THREADS threads")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    demo_args = ["--target", args.target, *(["--quick"] if args.quick else [])]
    demo_args += ["--methods", args.methods] if args.methods else []
    record = provenance("tools/measure_demo.py")
    if record["uncommitted_changes"]:
        print("warning: the tree has uncommitted changes; the file will say so", file=sys.stderr)
    record |= {
        "demo": "vl2v demo --seed S --json " + shlex.join(demo_args) + (" --views K" if args.views else ""),
        "target": args.target,
        "quick": args.quick,
    }
    with load(args.load) as job:
        record |= {"load": job} if job else {}
        if args.views is None:
            record["seeds"] = seeds_of(args.seeds, demo_args)
        else:
            views = args.views
            record["views"] = {str(k): {"seeds": seeds_of(args.seeds, [*demo_args, "--views", str(k)])} for k in views}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
