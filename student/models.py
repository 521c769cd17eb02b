"""Students: timm backbones (features only), with BatchNorm statistics frozen, as the papers train ResNets."""

from __future__ import annotations

import contextlib
import difflib
from pathlib import Path
from typing import Any

import open_clip
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from cache.errors import InvalidOption
from common.weights import create_clip, embedding_dim_of, image_size_of

from . import hub
from .weights import DEFAULT_PACKAGE, PACKAGED, PYPI, PackagedWeights, WeightsError, offline_weights_for, packaged


class StudentError(InvalidOption):
    """The student cannot be built as asked; the message says what to do."""


class Backbone(nn.Module):
    """A feature extractor `f(x)`: (B, 3, H, W) -> (B, feature_dim). BatchNorm layers stay in eval mode."""

    def __init__(self, model: nn.Module, feature_dim: int, mean: tuple, std: tuple, image_size: int) -> None:
        super().__init__()
        self.model = model
        self.feature_dim = feature_dim
        self.mean, self.std, self.image_size = tuple(mean), tuple(std), image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()  # frozen statistics (DomainBed's freeze_bn); the affine parameters still train
        return self


def timm_student(name: str, *, pretrained: bool, weights: str | Path | None, image_size: int) -> Backbone:
    """`timm.create_model(name, num_classes=0)` with ImageNet weights from the hub (`pretrained`), from a package
    (`weights` = `pypi:NAME`, see `student.weights`) or from a state dict file (`weights` = its path)."""
    check_student(name, None)
    # Any: timm's models carry `num_features` and `pretrained_cfg`, which nn.Module's type does not know.
    model: Any
    from_hub = pretrained and weights is None
    hub.log_once()
    offline = hub.unreachable() if from_hub else None
    try:
        with hub.local_cache_only() if offline else contextlib.nullcontext():
            model = timm.create_model(name, pretrained=from_hub, num_classes=0)
    except Exception as e:  # the hub is unreachable, or the model has no pretrained weights
        why = (
            f"the model hub is unreachable ({offline}) and they are not in its local cache"
            if offline
            else (f"{type(e).__name__}: {e}")
        )
        raise StudentError(
            f"could not fetch ImageNet weights for {name!r} ({why}); pass {_offline_hint(name)}, "
            "or --no-pretrained to start from random weights"
        ) from None
    if weights is not None:
        _load_weights(model, name, str(weights))
    config = model.pretrained_cfg or {}
    return Backbone(
        model,
        model.num_features,
        config.get("mean", IMAGENET_DEFAULT_MEAN),
        config.get("std", IMAGENET_DEFAULT_STD),
        image_size,
    )


def _offline_hint(name: str) -> str:
    """How to get ImageNet weights for `name` without the hub, or the student that vl2v installs them for."""
    offline = offline_weights_for(name)
    if offline:
        return f"--student-weights {offline} (installed with vl2v)"
    installed = PACKAGED[DEFAULT_PACKAGE]
    return (
        f"--student-weights FILE, or use the ImageNet student installed with vl2v: --student "
        f"{installed.architecture} --student-weights {PYPI}{installed.distribution}"
    )


def check_student(name: str, weights: str | None) -> None:
    """The checks a student and its weights can fail before anything is built, bought or trained: an unknown timm
    name, packaged weights of another architecture."""
    if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise StudentError(f"unknown timm model {name!r}" + (f"; did you mean {close}?" if close else ""))
    if weights is not None:
        _package(name, weights)


def _package(name: str, weights: str) -> PackagedWeights | None:
    try:
        pack = packaged(weights)
    except WeightsError as e:
        raise StudentError(str(e)) from None
    if pack is not None and pack.architecture != name:
        raise StudentError(f"--student-weights {weights} are for --student {pack.architecture}, not {name}")
    return pack


def _load_weights(model: nn.Module, name: str, weights: str) -> None:
    pack = _package(name, weights)
    if pack is not None:
        try:
            state = pack.state_dict(model)
        except WeightsError as e:
            raise StudentError(str(e)) from None
        _fit(model, state, weights)
        return
    path = Path(weights).expanduser()
    if not path.is_file():
        raise StudentError(f"--student-weights {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
    _fit(model, state, str(path))


def _fit(model: nn.Module, state: dict, source: str) -> None:
    """Load `state`, whose ImageNet classifier may go (a student has no 1000-way head); nothing else may differ."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.startswith(("fc.", "head.", "classifier."))]
    if missing or unexpected:
        raise StudentError(
            f"--student-weights {source} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def clip_image_tower(name: str, checkpoint: str | None) -> Backbone:
    """The teacher's own image tower, from a local open_clip checkpoint (VL2V-SD, white-box)."""
    if not checkpoint:
        raise StudentError(
            "method 'sd' trains the teacher's own image tower and needs its weights: pass --student-weights "
            "with an open_clip checkpoint file or local-dir:FOLDER, and --student with its open_clip name"
        )
    clip, _ = create_clip(name, checkpoint)
    dim = embedding_dim_of(clip.eval())
    preprocess = open_clip.get_model_preprocess_cfg(clip)
    visual = clip.get_submodule("visual").train().requires_grad_(True)
    return Backbone(visual, dim, tuple(preprocess["mean"]), tuple(preprocess["std"]), image_size_of(clip)[0])
