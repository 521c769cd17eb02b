"""The shared math of every method (docs/methods.md, "Building blocks"), written once."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cache.store import CacheError


def cosine_distill(a: Tensor, b: Tensor) -> Tensor:
    """mean over the batch of 1 - cos(a_i, b_i); a, b: (B, D)."""
    return (1 - F.cosine_similarity(a, b, dim=-1)).mean()


def kd_loss(teacher_logits: Tensor, student_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), batch mean; the textbook form (log-probabilities in)."""
    t = temperature
    teacher = F.log_softmax(teacher_logits / t, dim=-1)
    student = F.log_softmax(student_logits / t, dim=-1)
    return t * t * F.kl_div(student, teacher, reduction="batchmean", log_target=True)


def cosine_logits(v: Tensor, classes: Tensor, scale: Tensor | float) -> Tensor:
    """scale * cos(v_i, t_c): (B, D) x (C, D) -> (B, C)."""
    return scale * F.normalize(v, dim=-1) @ F.normalize(classes, dim=-1).T


def projector(d_in: int, d_out: int, bias: bool = True) -> nn.Linear:
    """The one projector all three methods use: a single linear map into the teacher's space (no MLP)."""
    return nn.Linear(d_in, d_out, bias=bias)


def image_text_distill(
    z: Tensor, teacher_image: Tensor, classes: Tensor, labels: Tensor, labelled: Tensor, lam: float
) -> dict[str, Tensor]:
    """VL2V's loss: lam * mean(1 - cos(z, I(x))) + (1 - lam) * mean(1 - cos(z, t_y)), with its two parts; the
    image term over the whole batch, the text term over its `labelled` rows (an unlabelled image has no t_y)."""
    image = cosine_distill(z, teacher_image)
    text = cosine_distill(z[labelled], classes[labels[labelled]])
    return {"loss": lam * image + (1 - lam) * text, "image_distill": image, "text_distill": text}


class TextHead(nn.Module):
    """Classifier whose weights are the teacher's class text embeddings: logits = scale * cos(v, t_c).

    The embeddings and the scale are frozen buffers (SCMD, whose scale learns, keeps its own parameter).
    """

    classes: Tensor  # (C, D), unit rows
    fixed_log_scale: Tensor

    def __init__(self, class_embeddings: Tensor, scale: float) -> None:
        super().__init__()
        self.register_buffer("classes", F.normalize(class_embeddings.float(), dim=-1))
        self.register_buffer("fixed_log_scale", torch.tensor(float(scale)).log())  # the name saved students carry

    @property
    def scale(self) -> Tensor:
        return self.fixed_log_scale.exp()

    def forward(self, v: Tensor) -> Tensor:
        return cosine_logits(v, self.classes, self.scale)


def prompt_embedding(texts: dict[str, Tensor], prompts: list[str]) -> Tensor:
    """Normalise each prompt's embedding, average them, normalise again: (D,)."""
    missing = [p for p in prompts if p not in texts]
    if missing:
        raise CacheError(f"the cache has no embedding for prompts {missing[:3]}; re-run `vl2v query` to buy them")
    stacked = torch.stack([F.normalize(texts[p].float(), dim=-1) for p in prompts])
    return F.normalize(stacked.mean(0), dim=-1)
