"""A saved student as one function from uint8 pixels to logits, from its `model.safetensors` or its ONNX export.

`vl2v evaluate` and `vl2v predict` take either: the same images give the same answers (within the export's checked
difference), and what preprocessing needs (size, mean, std, classes) comes from the file itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from cache.errors import UserError

from ..checkpoint import load_student
from .predictor import Predictor

ONNX_FORMAT = "vl2v-onnx/1"
ONNX_SUFFIX = ".onnx"
INSTALL = "pip install 'vl2v[deploy]'"


class Classifier(Protocol):
    meta: dict  # classes, image_size, dataset, ...: what `save_student` recorded

    def __call__(self, images: Tensor) -> Tensor:
        """uint8 (B, 3, size, size) RGB -> float32 (B, C) logits on the CPU."""
        ...


@dataclass
class TorchClassifier:
    predictor: Predictor
    meta: dict
    device: torch.device

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        return self.predictor(images.to(self.device)).float().cpu()


class OnnxClassifier:
    """An exported `.onnx` student in ONNX Runtime on the CPU."""

    def __init__(self, path: Path) -> None:
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 (ONNX Runtime raises its own untyped errors for a bad file)
            raise UserError(f"{path} cannot be loaded by ONNX Runtime ({type(e).__name__}: {one_line(e)})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if "vl2v" not in props:
            raise UserError(
                f"{path} is an ONNX model but not a vl2v export (no vl2v metadata); export with vl2v export"
            )
        self.meta = json.loads(props["vl2v"])
        if self.meta.get("format") != ONNX_FORMAT:
            raise UserError(
                f"{path} is a vl2v export of format {self.meta.get('format')}; this vl2v reads {ONNX_FORMAT}"
            )
        self.input = self.session.get_inputs()[0].name

    def __call__(self, images: Tensor) -> Tensor:
        (logits,) = self.session.run(None, {self.input: images.numpy()})
        return torch.from_numpy(logits)


def open_classifier(path: Path, device: torch.device) -> Classifier:
    """The student in `path`: an exported `.onnx` file (ONNX Runtime, CPU) or a `model.safetensors`."""
    if path.suffix == ONNX_SUFFIX:
        return OnnxClassifier(path)
    method, meta = load_student(path, str(device))
    return TorchClassifier(Predictor(method).to(device).eval(), meta, device)


def require(module: str) -> Any:
    """An optional dependency of the deploy extra, or a one-line error saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{module} is not installed: {INSTALL}") from None


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]
