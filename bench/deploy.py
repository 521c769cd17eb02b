"""What the student buys the user: the deployed student against the teacher's image tower, in one run.

    python bench/deploy.py --out bench/results/deploy.json            # CPU, every core
    python bench/deploy.py --device cuda --out bench/results/deploy-gpu.json   # where a GPU is lent

Rows, each measured in a process of its own (so that its peak memory is its own):
- the demo student (EfficientNet-Lite0 distilled by VL2V-ADiP at the demo world's 64 px, from `vl2v demo --quick
  --methods adip`), as vl2v's run folder in torch eager, and as `vl2v export --format onnx` in ONNX Runtime, fp32
  and `--quantize int8`; with its OOD accuracy and the teacher's zero-shot accuracy on the same held-out images;
- the same student network at 224 px, the size it takes on real datasets (a 1-step run: speed does not depend on
  the weights' values), torch eager and ONNX Runtime fp32 and int8;
- the teacher's image tower as a vendor runs it: open_clip ViT-B-32 and ViT-B-16 at 224 px, torch eager, random
  weights (no hub here, and speed does not depend on their values).

Per row: images/s at batch 1 and at batch 32, latency p50 and p99 at batch 1, size on disk, and peak resident
memory of the process (the interpreter and the runtime included: what a deployment pays; the ONNX rows import
ONNX Runtime and NumPy alone, as the README's snippet does), with, in brackets, what the model and its runs added
once the libraries were imported. The ratios
the targets are about come from the same run: the student's batch-1 images/s over ViT-B-16's (target >= 20x),
ONNX Runtime's over torch eager's for the student at batch 1 (target >= 1.5x), and int8's accuracy against fp32's
(target: within 1 point). Prints a Markdown table and writes every number to `--out`.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from student.environment import environment  # the machine every results file records

ROOT = Path(__file__).resolve().parents[1]

TEACHERS = ("ViT-B-32", "ViT-B-16")
THREADS_NOTE = "torch and ONNX Runtime each use every core of the machine (their defaults)"


# -- one row, in its own process ---------------------------------------------------------------------------------


def measure(kind: str, path: str, size: int, seconds: float, device: str) -> dict:
    """Load one model and time it: images/s at batch 1 and 32, batch-1 latency p50/p99, peak RSS (and how much of
    it the model and its runs added to the process once its libraries were imported)."""
    import numpy as np

    _import_libraries(kind)
    imported = _peak_rss_mb()
    run = _runner(kind, path, size, device)
    result: dict = {}
    for batch in (1, 32):
        pixels = np.random.default_rng(0).integers(0, 256, (batch, 3, size, size), dtype=np.uint8)
        for _ in range(3):  # warm-up: allocations, kernels, ONNX Runtime's first-run graph work
            run(pixels)
        latencies = []
        began = time.perf_counter()
        while time.perf_counter() - began < seconds or len(latencies) < 5:
            start = time.perf_counter()
            run(pixels)
            latencies.append(time.perf_counter() - start)
        result[f"images_per_s_b{batch}"] = batch * len(latencies) / sum(latencies)
        if batch == 1:
            latencies.sort()
            result["p50_ms"] = 1000 * statistics.median(latencies)
            result["p99_ms"] = 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    result["peak_rss_mb"] = _peak_rss_mb()
    result["model_rss_mb"] = result["peak_rss_mb"] - imported
    if device == "cuda" and kind != "onnx":
        import torch

        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far: VmHWM, which starts afresh at exec. (getrusage's ru_maxrss does
    not on Linux: a child started by a parent that had imported torch reports the parent's peak.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)


def _import_libraries(kind: str) -> None:
    """Import what a row's deployment imports, so that what its model adds can be told from what they cost."""
    if kind == "onnx":
        import onnxruntime  # noqa: F401
    else:
        import torch  # noqa: F401

        if kind == "torch":
            import student.deploy.classifier  # noqa: F401
        else:
            import open_clip  # noqa: F401


def _runner(kind: str, path: str, size: int, device: str):
    """A function from uint8 (B, 3, size, size) pixels to logits or embeddings, as a deployment calls it: the ONNX
    rows with ONNX Runtime and NumPy alone (no torch in the process), the others with torch."""
    if kind == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda pixels: session.run(None, {name: pixels})[0]
    import numpy as np
    import torch

    target = torch.device(device)
    if kind == "torch":
        from student.deploy.classifier import open_classifier

        student = open_classifier(Path(path), target)
        return lambda pixels: student(torch.from_numpy(pixels))
    import open_clip

    tower = open_clip.create_model(path, pretrained=None).visual.eval().to(target)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN, device=target).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD, device=target).view(1, 3, 1, 1)

    @torch.no_grad()
    def embed(pixels: np.ndarray) -> torch.Tensor:
        images = (torch.from_numpy(pixels).to(target).float() / 255 - mean) / std
        with torch.autocast("cuda", torch.bfloat16, enabled=device == "cuda"):
            out = tower(images)
        return out.float().cpu()

    return embed


def teacher_size_mb(name: str) -> float:
    """The tower's fp32 weights as a safetensors file would hold them."""
    import open_clip

    tower = open_clip.create_model(name, pretrained=None).visual
    return sum(p.numel() * p.element_size() for p in tower.state_dict().values()) / 2**20


# -- the students --------------------------------------------------------------------------------------------------


def vl2v(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "cli", *args, "--json"], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"vl2v {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def students(work: Path, demo: Path | None) -> tuple[dict, list[dict]]:
    """The demo's ADiP student (trained here unless `demo` holds one) and a 224 px twin; each with its run folder,
    its ONNX exports and what the exports measured."""
    if demo is None:
        demo = work / "demo"
        vl2v("demo", "--quick", "--methods", "adip", "--out", str(demo))
    summary = json.loads((demo / "demo.json").read_text())
    run = demo / "runs" / "adip"
    wide = work / "adip-224"
    vl2v(
        "distill", "--cache", str(demo / "cache"), "--method", "adip", "--student", summary["student"],
        "--student-weights", summary["student_weights"], "--image-size", "224", "--steps", "1", "--eval-every", "1",
        "--batch-size", "4", "--test-domain", summary["target"], "--workers", "0", "--out", str(wide),
    )  # fmt: skip
    rows = []
    for name, folder, size in (("student 64 px", run, 64), ("student 224 px", wide, 224)):
        fp32 = vl2v("export", str(folder), "--format", "onnx", "--out", str(work / f"{folder.name}.onnx"))
        int8 = vl2v(
            "export", str(folder), "--format", "onnx", "--out", str(work / f"{folder.name}-int8.onnx"),
            "--quantize", "int8",
        )  # fmt: skip
        model = next(folder.rglob("model.safetensors"))
        rows += [
            {"row": f"{name}, torch eager", "kind": "torch", "path": str(model), "size": size,
             "disk_mb": model.stat().st_size / 2**20, "accuracy": fp32["check"]["accuracy"]["torch"]},
            {"row": f"{name}, ONNX Runtime fp32", "kind": "onnx", "path": fp32["out"], "size": size,
             "disk_mb": Path(fp32["out"]).stat().st_size / 2**20, "accuracy": fp32["check"]["accuracy"]["export"]},
            {"row": f"{name}, ONNX Runtime int8", "kind": "onnx", "path": int8["out"], "size": size,
             "disk_mb": Path(int8["out"]).stat().st_size / 2**20, "accuracy": int8["int8"]["accuracy"]["export"]},
        ]  # fmt: skip
    return summary, rows


# -- the table -----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="timing per row and batch size")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the GPU rows: torch only)")
    parser.add_argument("--demo", type=Path, help="a `vl2v demo` folder with an adip run (default: train one)")
    parser.add_argument("--out", type=Path, help="write every number here (JSON)")
    parser.add_argument(
        "--table", type=Path, help="print the table of a results file this script wrote; measure nothing"
    )
    parser.add_argument("--measure", nargs=3, metavar=("KIND", "PATH", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.table:
        result = json.loads(args.table.read_text())
        print(table(result | {"ratios": ratios(result["rows"])}))
        return
    if args.measure:
        kind, path, size = args.measure
        print(json.dumps(measure(kind, path, int(size), args.seconds, args.device)))
        return

    with tempfile.TemporaryDirectory(prefix="vl2v-deploy-") as tmp:
        summary, rows = students(Path(tmp), args.demo)
        if args.device != "cpu":
            rows = [r for r in rows if r["kind"] == "torch"]  # ONNX Runtime here runs on the CPU only
        rows += [
            {"row": f"teacher {name} image tower, torch eager", "kind": "clip", "path": name, "size": 224,
             "disk_mb": teacher_size_mb(name)}
            for name in TEACHERS
        ]  # fmt: skip
        for row in rows:
            done = subprocess.run(
                [sys.executable, __file__, "--measure", row["kind"], row["path"], str(row["size"]),
                 "--seconds", str(args.seconds), "--device", args.device],
                capture_output=True, text=True, cwd=ROOT, check=True,
            )  # fmt: skip
            row |= json.loads(done.stdout.strip().splitlines()[-1])
            print(f"measured {row['row']}", file=sys.stderr)

    teacher = summary["teacher_zeroshot"]
    result = {
        "command": "python bench/deploy.py " + " ".join(sys.argv[1:]),
        "machine": environment() | _versions(),
        "threads": THREADS_NOTE,
        "device": args.device,
        "demo": {"target": summary["target"], "teacher_ood": teacher[summary["target"]], "seed": summary["seed"]},
        "rows": rows,
        "ratios": ratios(rows),
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


def ratios(rows: list[dict]) -> dict:
    """The ratios the targets are about, from one run's rows: the student's batch-1 images/s over the ViT-B-16
    tower's (as the demo deploys it, 64 px, and at the tower's own 224 px), ONNX Runtime's over torch eager's, and
    int8's accuracy against fp32's."""
    by = {r["row"]: r for r in rows}
    vit = by["teacher ViT-B-16 image tower, torch eager"]["images_per_s_b1"]

    def over_vit(row: str) -> float | None:
        return by[row]["images_per_s_b1"] / vit if row in by else None

    eager, onnx, int8 = (
        by.get(f"student 64 px, {form}") for form in ("torch eager", "ONNX Runtime fp32", "ONNX Runtime int8")
    )
    best = max((r for r in rows if r["row"].startswith("student 64 px")), key=lambda r: r["images_per_s_b1"])
    return {
        "student_over_vit_b16_b1": best["images_per_s_b1"] / vit,
        "student_row": best["row"],
        "at_224": {
            form: over_vit(f"student 224 px, {form}")
            for form in ("torch eager", "ONNX Runtime fp32", "ONNX Runtime int8")
        },
        "onnx_over_eager_b1": onnx["images_per_s_b1"] / eager["images_per_s_b1"] if onnx and eager else None,
        "int8_minus_fp32_ood_points": 100 * (int8["accuracy"]["ood"] - onnx["accuracy"]["ood"])
        if onnx and int8
        else None,
        "int8_minus_fp32_id_points": 100 * (int8["accuracy"]["id"] - onnx["accuracy"]["id"]) if onnx and int8 else None,
    }


def table(result: dict) -> str:
    """The Markdown table bench/README.md shows."""
    lines = [
        "| model | img/s b1 | img/s b32 | p50 b1 | p99 b1 | disk | peak RSS (model) | ID | OOD |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        acc = r.get("accuracy")
        lines.append(
            f"| {r['row']} | {r['images_per_s_b1']:.0f} | {r['images_per_s_b32']:.0f} | {r['p50_ms']:.2f} ms | "
            f"{r['p99_ms']:.2f} ms | {r['disk_mb']:.1f} MB | {r['peak_rss_mb']:.0f} MB ({r['model_rss_mb']:.0f} MB) | "
            + (f"{100 * acc['id']:.1f} | {100 * acc['ood']:.1f} |" if acc and r["size"] == 64 else "– | – |")
        )
    demo = result["demo"]
    lines.append(f"| teacher zero-shot on the same held-out {demo['target']} images | | | | | | | | "
                 f"{100 * demo['teacher_ood']:.1f} |")  # fmt: skip
    ratios = result["ratios"]
    lines += [
        "",
        f"- student ({ratios['student_row']}) over the ViT-B-16 tower at batch 1: "
        f"**{ratios['student_over_vit_b16_b1']:.0f}x** (target >= 20x)",
        "- the student at the tower's 224 px over the tower at batch 1: "
        + ", ".join(f"{form} **{r:.1f}x**" for form, r in ratios["at_224"].items() if r is not None),
    ]
    if ratios["onnx_over_eager_b1"] is not None:
        lines += [
            "- ONNX Runtime fp32 over torch eager, the 64 px student at batch 1: "
            f"**{ratios['onnx_over_eager_b1']:.2f}x** (target >= 1.5x)",
            f"- int8 against fp32: OOD {ratios['int8_minus_fp32_ood_points']:+.1f} points, ID "
            f"{ratios['int8_minus_fp32_id_points']:+.1f} points (target: within 1 point)",
        ]
    return "\n".join(lines)


def _versions() -> dict:
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__}


if __name__ == "__main__":
    main()
