"""Test images for a clone with no real data beside it: a PACS-shaped folder drawn by the demo world.

Same layout as the real subset (4 domains x 7 classes x 40 images, 227 x 227 RGB, JPEG except PNG sketches), so
every test that reads images runs on either. Only what needs real photographs (an ImageNet classifier naming a
dog) checks more on the real images.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from cache.data.world import CLASSES, render

DOMAINS = {"art_painting": "painting", "cartoon": "cartoon", "photo": "photo", "sketch": "sketch"}
PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
PER_CLASS = 40
SIZE = 227
MARK = "generated.json"


def write_pacs_like(root: Path) -> Path:
    """Draw the folder at `root` (kept between runs once complete); returns it."""
    if (root / MARK).is_file():
        return root
    for d, (domain, style) in enumerate(DOMAINS.items()):
        for c, (name, shape) in enumerate(zip(PACS_CLASSES, CLASSES, strict=False)):
            folder = root / domain / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(PER_CLASS):
                image = render(shape, style, seed=(d * 100 + c) * 1000 + i).resize((SIZE, SIZE), Image.BICUBIC)
                if domain == "sketch":
                    image.save(folder / f"{5000 + 20 * i + c}.png")
                else:
                    image.save(folder / f"{c:03d}_{i:04d}.jpg", quality=90)
    (root / MARK).write_text(json.dumps({"per_class": PER_CLASS, "size": SIZE}))
    return root
