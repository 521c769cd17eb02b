"""A procedural multi-domain world: 8 shapes drawn in 8 styles, deterministic from a seed, 64 px.

Four styles are the benchmark's domains (as PACS has photo, art painting, cartoon and sketch); four more exist
only in the vendor's training data, so the demo teacher has seen more of the world than any student will.

Backgrounds may carry one of 8 patterns (stripes, dots, rings...). The demo teacher learnt from images whose
pattern is drawn at random, as CLIP learns from the web's variety of backgrounds; the benchmark can give each class
its own pattern in most source images (`write_benchmark(context_bias=...)`): the context bias of real datasets,
which an ImageNet student, drawn to texture, learns as a shortcut, and which fails it on the target domain.

The bias is the labelling's: a source domain may also hold images nobody labelled (`unlabelled=...`), drawn as
images are found, uncurated, so on a pattern drawn at random. Only the teacher says what they show.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import InvalidOption
from .layout import UNLABELLED

SIZE = 64
CLASSES = ("arrow", "circle", "cross", "heart", "moon", "square", "star", "triangle")
DOMAINS = ("cartoon", "painting", "photo", "sketch")  # the benchmark
VENDOR_STYLES = ("blueprint", "mosaic", "neon", "stencil")  # only in the teacher's training data
STYLES = DOMAINS + VENDOR_STYLES
STYLE_WORDS = {
    "cartoon": "cartoon",
    "painting": "painting",
    "photo": "photo",
    "sketch": "sketch",
    "blueprint": "blueprint",
    "mosaic": "mosaic",
    "neon": "neon sign",
    "stencil": "stencil print",
}


def _outline(shape: str, rng: random.Random) -> list[list[tuple[float, float]]]:
    """The shape as closed polygons in unit coordinates ([-1, 1]^2), before placement."""

    def ring(n: int, r: float, phase: float = 0.0) -> list[tuple[float, float]]:
        return [
            (r * math.cos(phase + 2 * math.pi * i / n), r * math.sin(phase + 2 * math.pi * i / n)) for i in range(n)
        ]

    if shape == "circle":
        return [ring(40, 0.9)]
    if shape == "square":
        return [[(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]]
    if shape == "triangle":
        return [ring(3, 0.95, -math.pi / 2)]
    if shape == "star":
        outer, inner = ring(5, 0.95, -math.pi / 2), ring(5, 0.4, -math.pi / 2 + math.pi / 5)
        return [[p for pair in zip(outer, inner, strict=True) for p in pair]]
    if shape == "cross":
        a, b = 0.3, 0.9
        return [
            [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
        ]
    if shape == "arrow":
        return [[(-0.9, -0.25), (0.2, -0.25), (0.2, -0.6), (0.9, 0.0), (0.2, 0.6), (0.2, 0.25), (-0.9, 0.25)]]
    if shape == "heart":
        points = []
        for i in range(48):
            t = 2 * math.pi * i / 48
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            points.append((x / 17, -y / 17 + 0.1))
        return [points]
    if shape == "moon":  # a crescent: the outer circle's left arc, back along a flatter inner arc
        a, d = math.radians(60), 0.5
        end = (0.9 * math.cos(a), 0.9 * math.sin(a))
        r2, phi = math.dist(end, (d, 0.0)), math.atan2(end[1], end[0] - d)
        outer = [(0.9 * math.cos(t), 0.9 * math.sin(t)) for t in np.linspace(a, 2 * math.pi - a, 30)]
        inner = [(d + r2 * math.cos(t), r2 * math.sin(t)) for t in np.linspace(2 * math.pi - phi, phi, 30)]
        return [[(x - 0.2, y) for x, y in outer + inner]]
    raise ValueError(shape)


def _place(polys, rng: random.Random) -> list[list[tuple[float, float]]]:
    scale = rng.uniform(0.55, 0.85) * SIZE / 2
    angle = rng.uniform(-0.5, 0.5)
    cx, cy = SIZE / 2 + rng.uniform(-6, 6), SIZE / 2 + rng.uniform(-6, 6)
    cos, sin = math.cos(angle), math.sin(angle)
    return [[(cx + scale * (x * cos - y * sin), cy + scale * (x * sin + y * cos)) for x, y in poly] for poly in polys]


def _mask(polys) -> Image.Image:
    mask = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(mask)
    draw.polygon(polys[0], fill=255)
    for hole in polys[1:]:
        draw.polygon(hole, fill=0)
    return mask


def _colour(rng: random.Random, lo: int = 0, hi: int = 255) -> tuple[int, int, int]:
    return rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(lo, hi)


def _contrasting(rng: random.Random, against: np.ndarray) -> np.ndarray:
    """A colour at least 120 grey levels away from `against` on average: the shape must stay visible."""
    while True:
        colour = np.array(_colour(rng), dtype=float)
        if abs(colour.mean() - against.mean()) >= 120 or np.abs(colour - against).max() >= 170:
            return colour


def _noise(rng: random.Random, scale: int, amount: float) -> np.ndarray:
    coarse = np.random.default_rng(rng.getrandbits(32)).random((SIZE // scale + 1, SIZE // scale + 1, 3))
    big = np.kron(coarse, np.ones((scale, scale, 1)))[:SIZE, :SIZE]
    return (big - 0.5) * amount


def _photo(polys, rng):
    base = np.array(_colour(rng, 60, 200), dtype=float)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    background = np.clip(base * 0.6 + 60 * yy[..., None] + _noise(rng, 4, 60) + _noise(rng, 1, 30), 0, 255)
    fill = _contrasting(rng, base * 0.6 + 30)
    light = 0.6 + 0.7 * (1 - xx) * (1 - yy)  # shading from the top left
    shape = np.clip(fill * light[..., None] + _noise(rng, 2, 20), 0, 255)
    mask = np.array(_mask(polys).filter(ImageFilter.GaussianBlur(0.7)), dtype=float)[..., None] / 255
    return Image.fromarray((background * (1 - mask) + shape * mask).astype(np.uint8))


def _sketch(polys, rng):
    image = Image.new("RGB", (SIZE, SIZE), (rng.randint(235, 255),) * 3)
    draw = ImageDraw.Draw(image)
    ink = (rng.randint(0, 80),) * 3
    for _ in range(rng.randint(1, 3)):  # a few wobbly strokes over the outline
        for poly in polys:
            jittered = [(x + rng.gauss(0, 0.8), y + rng.gauss(0, 0.8)) for x, y in poly]
            draw.line(jittered + jittered[:1], fill=ink, width=1)
    return image


def _cartoon(polys, rng):
    image = Image.new("RGB", (SIZE, SIZE), _colour(rng, 150, 255))
    draw = ImageDraw.Draw(image)
    palette = [(230, 40, 40), (40, 120, 230), (250, 200, 20), (40, 180, 70), (230, 100, 200)]
    image.paste(Image.new("RGB", (SIZE, SIZE), rng.choice(palette)), mask=_mask(polys))
    for poly in polys:
        draw.line(poly + poly[:1], fill=(0, 0, 0), width=3)
    return image


def _painting(polys, rng):
    base = np.array(_colour(rng, 40, 220), float)
    background = np.clip(base + _noise(rng, 8, 110) + _noise(rng, 3, 60), 0, 255)
    shape = np.clip(_contrasting(rng, base) + _noise(rng, 5, 90), 0, 255)
    mask = np.array(_mask(polys).filter(ImageFilter.GaussianBlur(1.6)), float)[..., None] / 255
    image = Image.fromarray((background * (1 - mask) + shape * mask).astype(np.uint8))
    return image.filter(ImageFilter.ModeFilter(3))


def _neon(polys, rng):
    glow = Image.new("RGB", (SIZE, SIZE), (0, 0, 0))
    draw = ImageDraw.Draw(glow)
    hue = _colour(rng, 80, 255)
    for poly in polys:
        draw.line(poly + poly[:1], fill=hue, width=3)
    return Image.blend(glow.filter(ImageFilter.GaussianBlur(2)), glow, 0.5)


def _mosaic(polys, rng):
    image = _cartoon(polys, rng)
    block = rng.choice([4, 6, 8])
    return image.resize((SIZE // block, SIZE // block), Image.BILINEAR).resize((SIZE, SIZE), Image.NEAREST)


def _blueprint(polys, rng):
    image = Image.new("RGB", (SIZE, SIZE), (20, 50, rng.randint(120, 170)))
    draw = ImageDraw.Draw(image)
    for i in range(0, SIZE, 8):
        draw.line([(i, 0), (i, SIZE)], fill=(60, 90, 190))
        draw.line([(0, i), (SIZE, i)], fill=(60, 90, 190))
    for poly in polys:
        draw.line(poly + poly[:1], fill=(235, 240, 255), width=2)
    return image


def _stencil(polys, rng):
    mask = np.array(_mask(polys)) > 0
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    period = rng.choice([3, 4])
    dots = ((xx % period) < period // 2 + 1) & ((yy % period) < period // 2 + 1)
    paper = np.array(_colour(rng, 200, 255), np.uint8)
    ink = np.array(_colour(rng, 0, 90), np.uint8)
    out = np.where((mask & dots)[..., None], ink, paper)
    return Image.fromarray(out.astype(np.uint8))


RENDER: dict[str, Callable] = {
    "photo": _photo,
    "sketch": _sketch,
    "cartoon": _cartoon,
    "painting": _painting,
    "neon": _neon,
    "mosaic": _mosaic,
    "blueprint": _blueprint,
    "stencil": _stencil,
}


_Y, _X = np.mgrid[0:SIZE, 0:SIZE]
PATTERNS = (
    (_Y // 3) % 2 == 0,  # horizontal stripes
    (_X // 3) % 2 == 0,  # vertical stripes
    ((_X + _Y) // 3) % 2 == 0,  # diagonal stripes
    ((_X - _Y) // 3) % 2 == 0,  # the other diagonal
    ((_X % 6) < 2) & ((_Y % 6) < 2),  # dots
    ((_X // 4 + _Y // 4) % 2) == 0,  # checks
    (np.hypot(_X - SIZE / 2, _Y - SIZE / 2) // 3) % 2 == 0,  # rings
    ((_X % 6) == 0) | ((_Y % 6) == 0),  # grid
)
PATTERN_SHADE = 0.55  # a patterned background pixel keeps this share of its brightness


def render(shape: str, style: str, seed: int, pattern: int | None = None) -> Image.Image:
    """One 64x64 RGB image; the same (shape, style, seed, pattern) always gives the same pixels. `pattern` (an
    index into `PATTERNS`) shades the background outside the shape; None leaves it plain."""
    rng = random.Random(f"{shape}:{style}:{seed}")
    polys = _place(_outline(shape, rng), rng)
    image = RENDER[style](polys, rng)
    if pattern is None:
        return image
    pixels = np.asarray(image).astype(np.float32)
    pixels[PATTERNS[pattern] & (np.asarray(_mask(polys)) == 0)] *= PATTERN_SHADE
    return Image.fromarray(pixels.astype(np.uint8))


# Seeds of the benchmark images and of the teacher's training images never overlap.
BENCHMARK_SEEDS = range(0, 1_000_000)
TRAINING_SEED_BASE = 10_000_000
UNLABELLED_SEED_OFFSET = 20_000  # image numbers of the unlabelled images: beyond any labelled image of the world


def write_benchmark(
    root: Path,
    per_class: int = 40,
    seed: int = 0,
    *,
    target: str | None = None,
    context_bias: float | None = None,
    target_per_class: int | None = None,
    unlabelled: int = 0,
) -> Path:
    """The benchmark in DomainBed layout, `root/vl2v_demo/<domain>/<class>/<i>.png`; returns the dataset folder.

    Every domain has `per_class` images of each class, the `target` domain `target_per_class` (None: as many):
    the held-out domain is only ever evaluated, and a larger one measures out-of-domain accuracy more precisely
    (320 images give a standard error of about 2.5 points at 70%, 1,280 about 1.3); its first `per_class` images
    are the same either way.

    Every source domain (not `target`) also gets `unlabelled` images in `<domain>/_unlabelled/`, the classes in
    turn, each on a pattern drawn at random where the world has patterns.

    With `context_bias` None (the default) backgrounds are plain. With a share, every image has a patterned
    background: in every domain but `target`, a share
    `context_bias` of each class's images show that class's own pattern (class i, pattern i); the rest, and every
    target image, show one drawn at random.

    The world's parameters are written to `world.json`: the files of another world in `root` are replaced, those of
    this one are kept, so a second call is free.
    """
    if target is not None and target not in DOMAINS:
        raise InvalidOption(f"target {target!r} is not one of {list(DOMAINS)}")
    if context_bias is not None and not 0 <= context_bias <= 1:
        raise InvalidOption(f"context_bias must be in [0, 1], got {context_bias}")
    folder = root / "vl2v_demo"
    if target_per_class is not None and (target is None or target_per_class < 1):
        raise InvalidOption("target_per_class needs a target domain and must be >= 1")
    if unlabelled < 0 or (unlabelled and target is None):
        raise InvalidOption("unlabelled must be >= 0, and needs a target domain (which gets none)")
    world = {"per_class": per_class, "seed": seed, "target": target, "context_bias": context_bias}
    if target_per_class is not None and target_per_class != per_class:
        world["target_per_class"] = target_per_class  # absent when equal: earlier worlds stay valid
    if unlabelled:
        world["unlabelled"] = unlabelled  # likewise
    recorded = folder / "world.json"
    if folder.exists() and (not recorded.is_file() or json.loads(recorded.read_text()) != world):
        shutil.rmtree(folder)
    for domain in DOMAINS:
        for label, shape in enumerate(CLASSES):
            images = folder / domain / shape
            images.mkdir(parents=True, exist_ok=True)
            for i in range((target_per_class or per_class) if domain == target else per_class):
                path = images / f"{i:04d}.png"
                if not path.exists():
                    render(
                        shape, domain, seed * 100_000 + i, _pattern(context_bias, target, domain, label, seed, i)
                    ).save(path)
        if domain != target and unlabelled:
            _write_unlabelled(folder / domain / UNLABELLED, domain, unlabelled, seed, context_bias)
    recorded.write_text(json.dumps(world))
    return folder


def _write_unlabelled(folder: Path, domain: str, count: int, seed: int, context_bias: float | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / f"{i:04d}.png"
        if not path.exists():
            rng = random.Random(f"unlabelled:{seed}:{domain}:{i}")
            pattern = None if context_bias is None else rng.randrange(len(PATTERNS))
            shape = CLASSES[i % len(CLASSES)]
            render(shape, domain, seed * 100_000 + UNLABELLED_SEED_OFFSET + i, pattern).save(path)


def describe_bias(context_bias: float | None) -> str:
    """The world's context bias in words, as the demo's log and the rendered studies name it."""
    if context_bias is None:
        return "plain backgrounds"
    return f"{context_bias:.0%} of each source class on its own pattern"


def _pattern(context_bias: float | None, target: str | None, domain: str, label: int, seed: int, i: int) -> int | None:
    """The background pattern of image `i` of class `label` in `domain` (None: plain)."""
    if context_bias is None:
        return None
    rng = random.Random(f"context:{seed}:{domain}:{label}:{i}")
    biased = domain != target and rng.random() < context_bias
    return label if biased else rng.randrange(len(PATTERNS))
