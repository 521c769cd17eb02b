"""A trained student as one `model.safetensors`: weights plus what prediction needs, and loading it back."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from cache.data.prompts import all_prompts
from cache.errors import UserError

from .knowledge import TeacherKnowledge
from .methods import get_method
from .methods.base import Context, Method

MODEL_FILE = "model.safetensors"
# What a student's metadata holds and how its tensors are named. Students saved before the field was written are
# of the first format, which this version reads.
FORMAT = "vl2v-student/1"


class StudentFormatError(UserError):
    """A student file this version of vl2v cannot read: not a student, or written in another format."""


def save_student(method: Method, path: Path, meta: dict) -> None:
    """Every tensor of the method (backbone, projector, heads, text embeddings) and, as metadata, how to rebuild it."""
    state = {k: v.detach().cpu().contiguous() for k, v in method.state_dict().items()}
    meta = meta | {
        "format": FORMAT,
        "method": method.name,
        "hparams": asdict(method.hparams),
        "context": asdict(method.context),
        "image_size": method.backbone.image_size,
        "mean": list(method.backbone.mean),
        "std": list(method.backbone.std),
    }
    save_file(state, str(path), metadata={"vl2v": json.dumps(meta)})


def read_meta(path: Path) -> dict:
    """The metadata `save_student` wrote.

    Raises:
        StudentFormatError: `path` is not a vl2v student, or one of a format this version does not read.
    """
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {})["vl2v"])
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        raise StudentFormatError(f"{path} is not a vl2v student ({type(e).__name__}: {e})") from None
    found = meta.get("format", FORMAT)
    if found != FORMAT:
        raise StudentFormatError(
            f"{path} was written by another version of vl2v (format {found}; this one reads {FORMAT}): "
            "export it with the vl2v that trained it"
        )
    return meta


def load_student(path: Path, device: str = "cpu") -> tuple[Method, dict]:
    """Rebuild the method from `model.safetensors` alone: no cache, no teacher, no hub."""
    meta = read_meta(path)
    cls = get_method(meta["method"])
    fields = {f.name for f in dataclasses.fields(Context)}  # students saved before a field went still load
    saved: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["context"].items()}
    context = Context(**{k: v for k, v in saved.items() if k in fields})
    hparams = cls.Hparams(**meta["hparams"])
    backbone = cls.rebuild_backbone(meta["student"], meta.get("student_weights"), meta["image_size"])
    method = cls(backbone, _placeholder_knowledge(meta, context), hparams, context)
    with safe_open(str(path), "pt") as f:
        method.load_state_dict({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118 (safe_open has no items)
    return method.to(device).eval(), meta


def _placeholder_knowledge(meta: dict, context: Context) -> TeacherKnowledge:
    """Shapes only: every text embedding the constructor reads is overwritten by the saved tensors."""
    dim, classes = int(meta["teacher_dim"]), list(meta["class_prompts"])
    texts = {p: torch.ones(dim) for p in all_prompts(classes, context.anchors)}
    return TeacherKnowledge(torch.zeros(0, dim), {}, texts, classes, float(meta["logit_scale"]), {})
