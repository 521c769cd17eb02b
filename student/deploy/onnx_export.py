"""The student as one ONNX graph, checked against torch with ONNX Runtime, and optionally quantised to int8.

Export follows timm's `onnx_export.py`: the network is rebuilt with timm's `exportable` layers (TF "SAME" padding
becomes a fixed pad for the run's image size, so the graph takes that size only), inputs and outputs are named,
the batch axis is dynamic, and `onnx.checker` runs a full check. The graph holds everything from uint8 pixels to
logits (`Predictor`); how to decode and resize an image, the class names and the run's provenance go in the
model's metadata (`vl2v` key, JSON), which `vl2v predict` and `vl2v evaluate` read back.

int8 is ONNX Runtime's static quantisation in QDQ form, weights per channel, calibrated on the source domains'
training images (never the target's): a CNN's cost is in its convolutions, which dynamic quantisation leaves in
float.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import timm
import torch

from ..data import Sample, eval_loader, eval_transform
from .agreement import Agreement, Tally
from .classifier import ONNX_FORMAT, OnnxClassifier, TorchClassifier, require
from .predictor import INPUT, Predictor
from .run_folder import CheckImages, TrainedRun

INPUT_NAME, OUTPUT_NAME = "images", "logits"
CALIBRATION_IMAGES = 256  # ONNX Runtime's examples calibrate on a few hundred images
BATCH = 32


def export_onnx(run: TrainedRun, out: Path, provenance: dict) -> None:
    """Write the run's student to `out` as one self-contained ONNX file (weights inside), with its metadata."""
    onnx = require("onnx")
    require("onnxscript")  # torch's ONNX exporter needs it
    with timm.layers.set_layer_config(exportable=True):
        method, _ = _reload(run)
    predictor = Predictor(method).eval()
    size = run.meta["image_size"]
    example = torch.zeros(2, 3, size, size, dtype=torch.uint8)
    with torch.no_grad():
        predictor(example)  # timm's export padding fixes itself to the image size on the first forward pass
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress: keep stdout for results
        program = torch.onnx.export(
            predictor,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True,
            verbose=False,
        )
    assert program is not None, "torch.onnx.export returns the program when no file is given"
    model = program.model_proto
    _set_metadata(model, run, provenance)
    onnx.save(model, str(out))
    onnx.checker.check_model(str(out), full_check=True)


def quantize_int8(fp32: Path, out: Path, run: TrainedRun, images: CheckImages) -> None:
    """`fp32` quantised to int8 at `out`: static QDQ, per-channel weights, calibrated on source training images."""
    quantization = require("onnxruntime.quantization")
    onnx = require("onnx")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # ONNX Runtime's symbolic shape inference fails on F.normalize's Expand (ADiP, SD); ONNX's own suffices
        quantization.shape_inference.quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        calibration = _spread(images.calibration, CALIBRATION_IMAGES)
        batches = (
            {INPUT_NAME: loaded.images.numpy()}
            for loaded in eval_loader(images.root, calibration, eval_transform(run.meta["image_size"]), BATCH, 0)
            if loaded.images is not None
        )
        quantization.quantize_static(
            str(prepared),
            str(out),
            _Reader(batches),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
        )
    model = onnx.load(str(out))
    source = json.loads(onnx.load(str(fp32), load_external_data=False).metadata_props[0].value)
    _replace_metadata(
        model, source | {"quantized": f"int8 (static, QDQ, per channel, {len(calibration)} source images)"}
    )
    onnx.save(model, str(out))


def agreement(run: TrainedRun, exported: Path, images: CheckImages, workers: int = 0) -> Agreement:
    """The export against the run's torch student on the run's evaluation images."""
    reference = TorchClassifier(Predictor(run.method).eval(), run.meta, torch.device("cpu"))
    export = OnnxClassifier(exported)
    tally = Tally()
    for role, samples in (("id", images.in_domain), ("ood", images.out_of_domain)):
        for images_batch, labels in _batches(images.root, samples, run.meta["image_size"], workers):
            tally.add(role, reference(images_batch), export(images_batch), labels)
    return tally.result()


def _batches(root: Path, samples: list[Sample], size: int, workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for loaded in eval_loader(root, samples, eval_transform(size), BATCH, workers):
        if loaded.images is not None:
            yield loaded.images, loaded.labels


def _reload(run: TrainedRun):
    from ..checkpoint import load_student

    return load_student(run.model_path)


def _spread(samples: list[Sample], n: int) -> list[Sample]:
    """At most `n` samples, evenly spaced through the list (every domain and class, deterministically)."""
    if len(samples) <= n:
        return samples
    step = len(samples) / n
    return [samples[int(i * step)] for i in range(n)]


class _Reader:
    """ONNX Runtime's `CalibrationDataReader` protocol over batches of inputs."""

    def __init__(self, batches: Iterator[dict[str, np.ndarray]]) -> None:
        self.batches = batches

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def _set_metadata(model, run: TrainedRun, provenance: dict) -> None:
    meta = run.meta
    _replace_metadata(
        model,
        {
            "format": ONNX_FORMAT,
            "input": INPUT | {"name": INPUT_NAME, "size": [meta["image_size"], meta["image_size"]]},
            "output": {"name": OUTPUT_NAME, "meaning": "logits over `classes`, in that order"},
            "mean": meta["mean"],
            "std": meta["std"],
            "image_size": meta["image_size"],
            "classes": meta["classes"],
            "dataset": meta["dataset"],
            "method": meta["method"],
            "student": meta["student"],
            "teacher": meta["teacher"],
        }
        | provenance,
    )


def _replace_metadata(model, values: dict) -> None:
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = "vl2v", json.dumps(values)
