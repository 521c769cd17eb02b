"""Using a saved student: accuracy on any dataset folder, and top-k predictions for image files."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from PIL import Image

from cache.data.datasets import DatasetError, open_dataset
from common.devices import resolve_device
from common.imaging import to_rgb

from .checkpoint import MODEL_FILE
from .data import Sample, eval_loader, eval_transform
from .deploy.classifier import open_classifier
from .results import Evaluation, Prediction

log = logging.getLogger("vl2v.evaluate")


def find_models(run: Path) -> list[Path]:
    """`run` itself if it is a model file (a `model.safetensors` or an exported `.onnx`), else every model under
    it (sorted)."""
    if run.is_file():
        return [run]
    models = sorted(run.rglob(MODEL_FILE))
    if not models:
        raise FileNotFoundError(f"no {MODEL_FILE} under {run} (is it a `vl2v distill --out` folder?)")
    return models


@torch.no_grad()
def evaluate_model(
    model_path: Path, data_dir: Path, *, device: str = "auto", workers: int = 2, batch_size: int = 64
) -> Evaluation:
    """Accuracy per domain of the dataset at `data_dir` (the one the student was trained on, or an imagefolder
    whose class folders carry the same names). `model_path` may be an exported `.onnx` (ONNX Runtime, CPU)."""
    classifier = open_classifier(model_path, resolve_device(device))
    meta = classifier.meta
    try:
        dataset = open_dataset(meta["dataset"], data_dir)
    except DatasetError:
        dataset = open_dataset("imagefolder", data_dir)
    label_of = {name: i for i, name in enumerate(meta["classes"])}
    unknown = sorted(set(dataset.classes) - set(label_of))
    if unknown:
        raise DatasetError(f"{data_dir}: classes {unknown[:5]} are not among the student's {meta['classes'][:5]}...")
    transform = eval_transform(meta["image_size"])
    accuracy, counts, unreadable = {}, {}, []
    for domain in dataset.domains:
        samples = [
            Sample(f.path, label_of[dataset.classes[f.label]], 0, None)
            for f in dataset.files
            if f.domain == domain and f.label is not None
        ]
        correct = total = 0
        for loaded in eval_loader(dataset.root, samples, transform, batch_size, workers):
            unreadable += [samples[i].path for i in loaded.unreadable]
            if loaded.images is not None:
                correct += int((classifier(loaded.images).argmax(1) == loaded.labels).sum())
                total += len(loaded.labels)
        accuracy[domain], counts[domain] = correct / max(total, 1), total
    if unreadable:
        log.warning(
            "%d image(s) cannot be read and were left out (e.g. %s)", len(unreadable), ", ".join(unreadable[:3])
        )
    return Evaluation(
        accuracy,
        counts,
        model=str(model_path),
        data_dir=str(dataset.root),
        unreadable={"count": len(unreadable), "examples": unreadable[:5]},
    )


@torch.no_grad()
def predict_images(model_path: Path, images: list[Path], *, top_k: int = 3, device: str = "auto") -> list[Prediction]:
    """The top-k classes of each image file, by the student in `model_path` (`.safetensors` or `.onnx`)."""
    classifier = open_classifier(model_path, resolve_device(device))
    meta = classifier.meta
    transform = eval_transform(meta["image_size"])
    out = []
    for path in images:
        try:
            with Image.open(path) as image:
                pixels = transform(to_rgb(image))[None]
        except Exception as e:  # noqa: BLE001 (one unreadable file must not cost the others their answer)
            out.append(Prediction(str(path), error=f"cannot read it ({type(e).__name__}: {e})"))
            continue
        probs = classifier(pixels).float().softmax(-1)[0]
        values, indices = probs.topk(min(top_k, len(probs)))
        top = tuple((meta["classes"][i], float(v)) for v, i in zip(values.tolist(), indices.tolist(), strict=True))
        out.append(Prediction(str(path), top))
    return out
