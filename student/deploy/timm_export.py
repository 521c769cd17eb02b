"""The student as a folder in the Hugging Face Hub layout that plain timm loads, and its upload to the Hub.

`timm.create_model("local-dir:FOLDER", pretrained=True)` builds the architecture named in `config.json` with its
`num_classes` and loads `model.safetensors`; `timm.data.resolve_data_config({}, model=m)` and `create_transform`
then rebuild vl2v's own preprocessing from `pretrained_cfg` (squash-resize to the run's size, bilinear, no crop,
the student's mean and std). The method's head becomes timm's ordinary linear classifier (`linear_classifier`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from .predictor import linear_classifier
from .run_folder import TrainedRun


def timm_model(run: TrainedRun, features: torch.Tensor) -> tuple[Any, str]:
    """A plain timm model with the run's weights and its head folded into the classifier; and how it was folded.

    `features` are the backbone's features of some of the run's images (ADiP's fold is scaled by them).

    Raises:
        NotLinear: the method's student is not a timm model (VL2V-SD).
    """
    weight, bias, how = linear_classifier(run.method, features)
    model: Any = timm.create_model(run.meta["student"], pretrained=False, num_classes=len(run.meta["classes"]))
    backbone = run.method.backbone.model.state_dict()
    classifier = model.get_classifier()
    assert isinstance(classifier, nn.Linear), f"{run.meta['student']} ends in {type(classifier).__name__}"
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    head = {name for name, p in model.named_parameters() if any(p is q for q in classifier.parameters())}
    assert set(missing) == head and not unexpected, (missing, unexpected)
    with torch.no_grad():
        classifier.weight.copy_(weight)
        classifier.bias.copy_(bias)
    return model.eval(), how


def save_timm(model: Any, run: TrainedRun, out: Path) -> None:
    """`config.json` (architecture, num_classes, label_names, pretrained_cfg) and `model.safetensors` in `out`."""
    meta = run.meta
    size = meta["image_size"]
    # The architecture's own config names ImageNet weights (tag "in1k") and their licence: not these weights.
    inherited = {k: v for k, v in model.pretrained_cfg.items() if k not in ("tag", "license", "hf_hub_id", "url")}
    model.pretrained_cfg = inherited | {"tag": f"vl2v-{meta['method']}"}
    timm.models.save_for_hf(
        model,
        str(out),
        model_config={"label_names": list(meta["classes"])},
        safe_serialization=True,
        data_config={
            "input_size": (3, size, size),
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "squash",
            "mean": tuple(meta["mean"]),
            "std": tuple(meta["std"]),
        },
    )


def push_to_hub(folder: Path, repo: str, token: str | None = None) -> str:
    """Upload `folder` (weights, config, model card) to the Hub repository `repo`; returns the commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token, library_name="vl2v")
    repo_id = api.create_repo(repo, exist_ok=True).repo_id
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="Add a vl2v student")
    return str(getattr(commit, "commit_url", commit))
