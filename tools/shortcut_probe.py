"""How much each demo student leans on the background-pattern shortcut: one results file over several demo runs.

    python tools/shortcut_probe.py --seeds 0 1 2 --out docs/results/shortcut-sketch.json

For each seed, runs `vl2v demo --seed S` (the default demo, every method, unless `--methods`, `--context-bias`,
`--unlabelled` or `--views` change it) into a temporary folder, then shows every trained student, and the demo
teacher itself, fresh images of the source domains (shapes and styles they trained on, drawn with seeds no run has
seen) three ways: on their own class's background pattern (what most training images look like), on a pattern drawn
at random (as the held-out domain's images are), and on the pattern of another class (the shortcut pointing at a
wrong answer). The drop from "own" to "another class's" is how much of a student's answer the pattern decides.
Every probe image is of a source domain, so worlds compared by the probe are not compared on the held-out domain
(whose accuracy the file records beside it). `tools/render_results.py` renders the table.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from measure_demo import REPO, provenance

from cache.data.world import CLASSES, DOMAINS, PATTERNS, render
from student.config import DemoConfig
from student.data import eval_transform
from student.deploy.classifier import open_classifier

PER_CLASS = 20  # fresh images per source domain and class
FRESH = 50_000  # image numbers from here on: in the seed's range of the benchmark, beyond any demo world's images
CONDITIONS = ("own", "random", "other")


def pattern_of(condition: str, label: int, rng: random.Random) -> int:
    if condition == "own":
        return label
    if condition == "other":
        return (label + rng.randrange(1, len(PATTERNS))) % len(PATTERNS)  # any class's pattern but its own
    return rng.randrange(len(PATTERNS))


def probe_images(seed: int, target: str) -> dict[str, tuple[list, torch.Tensor]]:
    """Per condition: the same fresh source-domain shapes, each on its condition's pattern; and their labels."""
    out = {}
    for condition in CONDITIONS:
        rng = random.Random(f"probe:{seed}:{condition}")
        images, labels = [], []
        for domain in DOMAINS:
            if domain == target:
                continue
            for label, shape in enumerate(CLASSES):
                for i in range(PER_CLASS):
                    image_seed = seed * 100_000 + FRESH + i  # as write_benchmark numbers them
                    images.append(render(shape, domain, image_seed, pattern_of(condition, label, rng)))
                    labels.append(label)
        out[condition] = (images, torch.tensor(labels))
    return out


@torch.no_grad()
def student_accuracy(model: Path, images: list, labels: torch.Tensor) -> float:
    classifier = open_classifier(model, torch.device("cpu"))
    order = [CLASSES.index(c) for c in classifier.meta["classes"]]  # the student's class order -> the world's
    transform = eval_transform(classifier.meta["image_size"])
    pixels = torch.stack([transform(image) for image in images])
    logits = torch.cat([classifier(pixels[i : i + 256]) for i in range(0, len(pixels), 256)])
    predicted = torch.tensor(order)[logits.argmax(1)]
    return float((predicted == labels).float().mean())


@torch.no_grad()
def teacher_accuracy(images: list, labels: torch.Tensor) -> float:
    from teacher_service.encoder import ClipEncoder

    encoder = ClipEncoder.load("demo", None, device="cpu")
    classes = encoder.encode_texts(encoder.tokenize([f"a photo of a {c}" for c in CLASSES]))
    embedded = encoder.encode_images(torch.stack([encoder.preprocess_image(image) for image in images]))
    return float(((torch.from_numpy(embedded) @ torch.from_numpy(classes).T).argmax(1) == labels).float().mean())


def probe_seed(seed: int, target: str, demo_args: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="vl2v-probe-") as out:
        command = [sys.executable, "-m", "cli", "demo", "--seed", str(seed), "--target", target, "--out", out, "--json"]
        command += demo_args
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"seed {seed}: vl2v demo failed:\n{done.stderr[-2000:]}")
        demo = json.loads(done.stdout.strip().splitlines()[-1])
        sets = probe_images(seed, target)
        result = {"ood_acc": {m: r["ood_acc"] for m, r in demo["methods"].items()}, "accuracy": {}}
        for method in demo["methods"]:
            model = next((Path(out) / "runs" / method).rglob("model.safetensors"))
            result["accuracy"][method] = {c: student_accuracy(model, *sets[c]) for c in CONDITIONS}
        result["accuracy"]["teacher"] = {c: teacher_accuracy(*sets[c]) for c in CONDITIONS}
    print(f"seed {seed}: {json.dumps(result['accuracy'])}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target", default="sketch")
    parser.add_argument("--methods", help="the students to train and probe (the demo's, if not given)")
    parser.add_argument(
        "--context-bias", type=float, help="share of source images on their class's pattern (the demo's, if not given)"
    )
    parser.add_argument("--unlabelled", type=int, help="unlabelled images per source domain (the demo's, if not given)")
    parser.add_argument("--views", type=int, default=0, help="augmented views bought of each image (vl2v demo --views)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    demo_args = ["--methods", args.methods] if args.methods else []
    demo_args += ["--context-bias", str(args.context_bias)] if args.context_bias is not None else []
    demo_args += ["--unlabelled", str(args.unlabelled)] if args.unlabelled is not None else []
    demo_args += ["--views", str(args.views)]
    record = provenance("tools/shortcut_probe.py") | {
        "target": args.target,
        "per_class": PER_CLASS,
        "context_bias": DemoConfig().context_bias if args.context_bias is None else args.context_bias,
        "unlabelled": DemoConfig(unlabelled=args.unlabelled).unlabelled_images,
        "views": args.views,
        "shortcut": {str(seed): probe_seed(seed, args.target, demo_args) for seed in args.seeds},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
