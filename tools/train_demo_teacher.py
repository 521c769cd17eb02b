"""Train the demo teacher: a small open_clip model, contrastively, on captioned images of every style.

    python tools/train_demo_teacher.py --steps 2500 --batch 128

Captions name the class and usually the style through varied templates; the generic ones ("a photo of a {}",
"a {}") name only the class. The loss is CLIP's symmetric contrastive loss with soft targets (UniCL, Yang et al.
2022): an image's positives are the captions of its class that name its style or no style. Training images use
seeds from `TRAINING_SEED_BASE` up, never the benchmark's. Saves fp16 weights, the open_clip config and a sha256
next to them, and prints the zero-shot accuracy on each benchmark domain.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import time
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from cache.data.world import CLASSES, DOMAINS, PATTERNS, STYLE_WORDS, STYLES, TRAINING_SEED_BASE, render
from common.weights import register_packaged_configs

ARCHITECTURE = "vl2v-demo"
SHIPPED = Path(__file__).resolve().parents[1] / "teacher_service" / "demo" / "vl2v-demo"  # where the vendor loads it
STYLED = (
    "a {style} of a {cls}",
    "a {cls} drawn as a {style}",
    "{style} of a {cls}",
    "a {cls} in {style} style",
    "a {style} showing a {cls}",
)
GENERIC = ("a {cls}", "a photo of a {cls}", "this is a photo of a {cls}", "a picture of a {cls}")


def caption_batch(rng: random.Random, size: int) -> tuple[list, list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, captions, each item's class, the style its caption names (-1: none) and the image's style."""
    images, captions, classes, named, styles = [], [], [], [], []
    for _ in range(size):
        c, s = rng.randrange(len(CLASSES)), rng.randrange(len(STYLES))
        # Half the images get a background pattern drawn at random: never a hint of the class, always seen.
        pattern = rng.randrange(len(PATTERNS)) if rng.random() < 0.5 else None
        images.append(render(CLASSES[c], STYLES[s], TRAINING_SEED_BASE + rng.getrandbits(30), pattern))
        generic = rng.random() < 0.35
        template = rng.choice(GENERIC if generic else STYLED)
        captions.append(template.format(cls=CLASSES[c], style=STYLE_WORDS[STYLES[s]]))
        classes.append(c)
        named.append(-1 if generic else s)
        styles.append(s)
    return images, captions, torch.tensor(classes), torch.tensor(named), torch.tensor(styles)


def soft_targets(classes: torch.Tensor, named: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """(B images, B captions): 1 where caption j fits image i (same class; its style named and equal, or none),
    normalised per image."""
    fits = (classes[:, None] == classes[None, :]) & ((named[None, :] == -1) | (named[None, :] == styles[:, None]))
    return fits.float() / fits.float().sum(1, keepdim=True)


def train(args: argparse.Namespace) -> None:
    register_packaged_configs()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    model, _, preprocess = open_clip.create_model_and_transforms(ARCHITECTURE)
    if args.init:  # fine-tune earlier weights (e.g. the shipped teacher) instead of starting from random ones
        state = load_file(str(Path(args.init) / "open_clip_model.safetensors"))
        model.load_state_dict({k: v.float() for k, v in state.items()})
    tokenizer = open_clip.get_tokenizer(ARCHITECTURE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    started = time.perf_counter()
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, captions, classes, named, styles = caption_batch(rng, args.batch)
        pixels = torch.stack([preprocess(im) for im in images])
        image_features = F.normalize(model.encode_image(pixels), dim=-1)
        text_features = F.normalize(model.encode_text(tokenizer(captions)), dim=-1)
        logits = model.logit_scale.exp() * image_features @ text_features.T  # (images, captions)
        fits = soft_targets(classes, named, styles)
        by_caption = fits.T / fits.T.sum(1, keepdim=True)
        loss = (
            -((fits * logits.log_softmax(1)).sum(1).mean() + (by_caption * logits.T.log_softmax(1)).sum(1).mean()) / 2
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0 or step == args.steps - 1:
            print(
                f"step {step} loss {loss.item():.3f} scale {model.logit_scale.exp().item():.1f} "
                f"{(time.perf_counter() - started) / (step + 1):.2f}s/step",
                flush=True,
            )
    accuracy = zeroshot(model, preprocess, tokenizer)
    print(json.dumps({"zeroshot": accuracy}))
    save(model, preprocess, Path(args.out), accuracy)


@torch.no_grad()
def zeroshot(model, preprocess, tokenizer, per_class: int = 40) -> dict[str, float]:
    """Accuracy on benchmark images (seeds 0..per_class-1) with random background patterns, "a photo of a {class}"."""
    model.eval()
    text = F.normalize(model.encode_text(tokenizer([f"a photo of a {c}" for c in CLASSES])), dim=-1)
    accuracy = {}
    for domain in DOMAINS:
        correct = 0
        for c, shape in enumerate(CLASSES):
            pixels = torch.stack([preprocess(render(shape, domain, i, i % len(PATTERNS))) for i in range(per_class)])
            predicted = (F.normalize(model.encode_image(pixels), dim=-1) @ text.T).argmax(1)
            correct += int((predicted == c).sum())
        accuracy[domain] = correct / (per_class * len(CLASSES))
    model.train()
    return accuracy


def save(model, preprocess, out: Path, accuracy: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "open_clip_model.safetensors"
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()}, str(weights))
    config = {
        "model_cfg": open_clip.get_model_config(ARCHITECTURE),
        "preprocess_cfg": {
            k: list(v) if isinstance(v, tuple) else v for k, v in open_clip.get_model_preprocess_cfg(model).items()
        },
        "vl2v": {"zeroshot_accuracy": accuracy, "architecture": ARCHITECTURE},
    }
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    (out / "SHA256SUMS").write_text(f"{digest}  open_clip_model.safetensors\n")
    print(f"saved {weights} ({weights.stat().st_size / 1e6:.1f} MB, sha256 {digest[:12]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100, help="steps of linear warm-up before the cosine decay")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", help="a folder of earlier weights to fine-tune (open_clip_model.safetensors)")
    parser.add_argument("--out", default=str(SHIPPED), help="where to save  [default: where the vendor loads it]")
    train(parser.parse_args())


if __name__ == "__main__":
    main()
