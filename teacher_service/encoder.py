"""The teacher: an open_clip model loaded the way users load one, with its own preprocessing and tokenizer."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from .settings import ConfigError

log = logging.getLogger("vl2v.teacher")

LOCAL_DIR = "local-dir:"
# What open_clip looks for inside a local-dir folder, in its order of preference.
LOCAL_DIR_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


DEMO = "demo"  # `--model demo`: the small CLIP shipped with vl2v, trained on the demo world


def verified_demo_weights() -> Path:
    """The packaged demo teacher's folder, after checking its weights against the shipped sha256."""
    folder = Path(str(resources.files("teacher_service") / "demo" / "vl2v-demo"))
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
    open_clip.add_model_config(Path(str(resources.files("teacher_service") / "model_configs")))


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
        self.model = model.eval().requires_grad_(False)
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
        source = resolve_source(model, pretrained, allow_random)
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but CUDA is not available")
        if precision != "fp32" and device != "cuda":
            raise ConfigError(f"precision {precision!r} is autocast on CUDA only; use fp32 on {device}")
        if source.kind == "random":
            log.warning("serving RANDOMLY INITIALISED weights for %s (allowed for tests)", source.model)
        clip = open_clip.create_model(source.model, pretrained=source.pretrained, load_weights=source.kind != "random")
        return cls(clip, source, device, precision)

    def _describe(self, model: torch.nn.Module) -> EncoderInfo:
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
            embedding_dim=self._probe_dim(model, preprocess["size"]),
            image_size=tuple(int(s) for s in preprocess["size"]),
            context_length=int(self.tokenizer.context_length),
            logit_scale=float(model.logit_scale.exp().item()),
            preprocess=preprocess,
            precision=self.precision,
        )

    @staticmethod
    @torch.inference_mode()
    def _probe_dim(model: torch.nn.Module, size: list[int]) -> int:
        # One blank image through the tower: works for every architecture open_clip can build.
        return int(model.encode_image(torch.zeros(1, 3, *size)).shape[-1])

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
