"""The teacher: an open_clip model loaded the way users load one, with its own preprocessing and tokenizer."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from common.devices import resolve_device
from common.errors import ConfigError
from common.weights import WeightsSource, create_clip, embedding_dim_of, image_size_of

log = logging.getLogger("vl2v.teacher")


@dataclass(frozen=True)
class EncoderInfo:
    """The facts about the teacher that change an embedding, as `/v1/models` publishes them."""

    architecture: str
    pretrained: str | None
    fingerprint: str
    embedding_dim: int
    image_size: tuple[int, int]
    context_length: int
    logit_scale: float
    preprocess: dict
    precision: str


class ClipEncoder:
    """An open_clip model in eval mode that maps preprocessed images and tokens to L2-normalised embeddings."""

    def __init__(self, model: torch.nn.Module, source: WeightsSource, device: str, precision: str) -> None:
        self.model: Any = model.eval().requires_grad_(False)  # an open_clip CLIP: encode_image, encode_text
        self.source = source
        self.device = torch.device(device)
        self.precision = precision  # autocast dtype on CUDA; part of the fingerprint
        self.preprocess = image_transform_v2(PreprocessCfg(**open_clip.get_model_preprocess_cfg(model)), is_train=False)
        self.tokenizer = open_clip.get_tokenizer(source.model)
        self.info = self._describe(model)
        self.model.to(self.device)

    @classmethod
    def load(
        cls,
        model: str,
        pretrained: str | None,
        *,
        device: str = "auto",
        precision: str = "fp32",
        allow_random: bool = False,
    ) -> ClipEncoder:
        """Load by name + tag, name + checkpoint file, or `local-dir:FOLDER`, through open_clip's own loader."""
        where = resolve_device(device)
        if precision != "fp32" and where.type != "cuda":
            raise ConfigError(f"precision {precision!r} is autocast on CUDA only; use fp32 on {where}")
        clip, source = create_clip(model, pretrained, allow_random=allow_random)
        return cls(clip, source, str(where), precision)

    def _describe(self, model: Any) -> EncoderInfo:
        preprocess = {
            k: list(v) if isinstance(v, tuple) else v for k, v in open_clip.get_model_preprocess_cfg(model).items()
        }
        digest = hashlib.sha256()
        digest.update(json.dumps({"preprocess": preprocess, "precision": self.precision}, sort_keys=True).encode())
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return EncoderInfo(
            architecture=self.source.architecture,
            pretrained=self.source.pretrained if self.source.kind == "tag" else self.source.kind,
            fingerprint=digest.hexdigest(),
            embedding_dim=embedding_dim_of(model),
            image_size=image_size_of(model),
            context_length=int(self.tokenizer.context_length),
            logit_scale=float(model.logit_scale.exp().item()),
            preprocess=preprocess,
            precision=self.precision,
        )

    def preprocess_image(self, image: Image.Image) -> torch.Tensor:
        """(3, H, W) float tensor, exactly as the model was trained to see images."""
        return self.preprocess(image)

    def count_tokens(self, text: str) -> int:
        """BPE tokens of `text` without the start/end markers (what billing counts)."""
        return len(self.tokenizer.encode(text)) if hasattr(self.tokenizer, "encode") else len(text.split())

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)  # (N, context_length)

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        """(N, 3, H, W) -> (N, D) float32, unit L2 norm."""
        with self._autocast():
            features = self.model.encode_image(pixels.to(self.device, non_blocking=True))
        return _normalise(features)

    @torch.inference_mode()
    def encode_texts(self, tokens: torch.Tensor) -> np.ndarray:
        """(N, context_length) -> (N, D) float32, unit L2 norm."""
        with self._autocast():
            features = self.model.encode_text(tokens.to(self.device, non_blocking=True))
        return _normalise(features)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)


def _normalise(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    return torch.nn.functional.normalize(features, dim=-1).cpu().numpy()
