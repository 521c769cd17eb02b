"""Where a CLIP's architecture and weights come from, and loading it: one function the vendor and the white-box
student (VL2V-SD) share, so both read a checkpoint the same way.

Three sources, as open_clip users name them: an architecture and a pretrained tag (from the hub), an architecture
and a checkpoint file, or `local-dir:FOLDER` (config and weights together). `demo` names the small CLIP shipped
with vl2v.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import open_clip
import torch

from common.errors import ConfigError

log = logging.getLogger("vl2v.teacher")

LOCAL_DIR = "local-dir:"
# What open_clip looks for inside a local-dir folder, in its order of preference.
LOCAL_DIR_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


DEMO = "demo"  # `--model demo`: the small CLIP shipped with vl2v, trained on the demo world


def verified_demo_weights() -> Path:
    """The packaged demo teacher's folder, after checking its weights against the shipped sha256."""
    folder = Path(str(resources.files("common") / "demo" / "vl2v-demo"))
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        raise ConfigError(
            f"the demo teacher is not installed ({folder} has no weights); "
            "train it with `python tools/train_demo_teacher.py`"
        )
    expected, name = sums.read_text().split()
    actual = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    if actual != expected:
        raise ConfigError(f"{folder / name} has sha256 {actual[:12]}, expected {expected[:12]}: reinstall vl2v")
    return folder


class RandomWeightsRefused(ConfigError):
    """The requested model would be served with randomly initialised weights."""


@cache
def register_packaged_configs() -> None:
    """Make the architectures shipped with vl2v (`vl2v-tiny`, ...) loadable by name, once per process."""
    open_clip.add_model_config(Path(str(resources.files("common") / "model_configs")))


@dataclass(frozen=True)
class WeightsSource:
    """Where the teacher's architecture and weights come from; `kind` is tag, file, local-dir or random."""

    model: str
    pretrained: str | None
    kind: str

    @property
    def architecture(self) -> str:
        return Path(self.model[len(LOCAL_DIR) :]).name if self.kind == "local-dir" else self.model


def resolve_source(model: str, pretrained: str | None, allow_random: bool) -> WeightsSource:
    """Check that `model` + `pretrained` name something loadable, without loading it.

    Raises:
        ConfigError: unknown architecture, tag or path; the message lists what exists.
        RandomWeightsRefused: no weights were named and `allow_random` is false.
    """
    register_packaged_configs()
    if model == DEMO:
        model, pretrained = f"{LOCAL_DIR}{verified_demo_weights()}", None
    if pretrained and pretrained.startswith(LOCAL_DIR):
        model, pretrained = pretrained, None
    if model.startswith(LOCAL_DIR):
        folder = Path(model[len(LOCAL_DIR) :]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise ConfigError(f"{model}: expected a folder holding open_clip_config.json and weights")
        has_weights = any((folder / name).is_file() for name in LOCAL_DIR_WEIGHTS)
        if not has_weights and not allow_random:
            raise RandomWeightsRefused(
                f"{model} holds no weights ({' or '.join(LOCAL_DIR_WEIGHTS)}); refusing to serve random weights"
            )
        return WeightsSource(f"{LOCAL_DIR}{folder}", None, "local-dir" if has_weights else "random")

    known = open_clip.list_models()
    if model not in known:
        close = difflib.get_close_matches(model, known, n=5)
        hint = f"; did you mean {close}?" if close else f"; {len(known)} known, see open_clip.list_models()"
        raise ConfigError(f"unknown open_clip model {model!r}{hint}")
    if not pretrained:
        if not allow_random:
            raise RandomWeightsRefused(
                f"no weights for {model!r}: pass --pretrained TAG|FILE|local-dir:DIR "
                "(or --allow-random-weights, for tests only)"
            )
        return WeightsSource(model, None, "random")
    if Path(pretrained).expanduser().is_file():
        return WeightsSource(model, str(Path(pretrained).expanduser()), "file")
    tags = open_clip.list_pretrained_tags_by_model(model)
    if pretrained in tags:
        return WeightsSource(model, pretrained, "tag")
    raise ConfigError(f"pretrained {pretrained!r} for {model!r} is neither a file nor a known tag; tags: {tags}")


def create_clip(
    model: str, pretrained: str | None, *, allow_random: bool = False
) -> tuple[torch.nn.Module, WeightsSource]:
    """The open_clip model `model` + `pretrained` name (see `resolve_source`), on the CPU, and where it came from."""
    source = resolve_source(model, pretrained, allow_random)
    if source.kind == "random":
        log.warning("loading RANDOMLY INITIALISED weights for %s (allowed for tests)", source.model)
    clip = open_clip.create_model(source.model, pretrained=source.pretrained, load_weights=source.kind != "random")
    return clip, source


def image_size_of(clip: Any) -> tuple[int, int]:
    """The (height, width) the model's image tower takes."""
    size = open_clip.get_model_preprocess_cfg(clip)["size"]
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


@torch.inference_mode()
def embedding_dim_of(clip: Any) -> int:
    """One blank image through the image tower: works for every architecture open_clip can build."""
    return int(clip.encode_image(torch.zeros(1, 3, *image_size_of(clip))).shape[-1])
