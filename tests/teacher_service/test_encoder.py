"""Loading the teacher through open_clip's own paths: name + checkpoint file, and local-dir: folders."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from common.errors import ConfigError
from common.weights import RandomWeightsRefused, resolve_source
from teacher_service.encoder import ClipEncoder

from ..conftest import TINY, make_tiny_checkpoint


def test_random_weights_are_refused_unless_allowed():
    with pytest.raises(RandomWeightsRefused, match="--pretrained"):
        resolve_source(TINY, None, allow_random=False)
    assert resolve_source(TINY, None, allow_random=True).kind == "random"


def test_unknown_names_and_tags_say_what_exists():
    with pytest.raises(ConfigError, match="did you mean"):
        resolve_source("ViT-B-33", "openai", allow_random=False)
    with pytest.raises(ConfigError, match="tags: .*openai"):
        resolve_source("ViT-B-32", "nonsense", allow_random=False)


def test_a_known_tag_resolves_without_downloading():
    assert resolve_source("ViT-B-32", "openai", allow_random=False).kind == "tag"


def test_checkpoint_file_loads_the_saved_weights(tiny_checkpoint):
    encoder = ClipEncoder.load(TINY, str(tiny_checkpoint), device="cpu")
    torch.manual_seed(0)
    reference = open_clip.create_model(TINY)  # the same seed the checkpoint was made with
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(encoder.model.state_dict()[name], tensor)
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.model.parameters())


def test_local_dir_loads_the_same_model_as_name_plus_file(tiny_checkpoint, tmp_path, jpeg_bytes):
    folder = tmp_path / "my-teacher"
    folder.mkdir()
    shutil.copy(tiny_checkpoint, folder / "open_clip_model.safetensors")
    config = {"model_cfg": open_clip.get_model_config(TINY), "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))

    by_file = ClipEncoder.load(TINY, str(tiny_checkpoint), device="cpu")
    by_dir = ClipEncoder.load(f"local-dir:{folder}", None, device="cpu")
    assert by_dir.info.fingerprint == by_file.info.fingerprint
    assert by_dir.info.architecture == "my-teacher"
    pixels = by_file.preprocess_image(Image.open(io.BytesIO(jpeg_bytes[0])).convert("RGB"))[None]
    np.testing.assert_allclose(by_dir.encode_images(pixels), by_file.encode_images(pixels), atol=1e-6)


def test_local_dir_without_weights_is_refused(tmp_path):
    (tmp_path / "open_clip_config.json").write_text("{}")
    with pytest.raises(RandomWeightsRefused, match="holds no weights"):
        resolve_source(f"local-dir:{tmp_path}", None, allow_random=False)
    with pytest.raises(ConfigError, match="open_clip_config.json"):
        resolve_source(f"local-dir:{tmp_path / 'missing'}", None, allow_random=False)


def test_outputs_are_unit_norm_and_fingerprints_tell_weights_apart(tiny_checkpoint, tmp_path):
    other = make_tiny_checkpoint(tmp_path / "other.safetensors", seed=1)
    a = ClipEncoder.load(TINY, str(tiny_checkpoint), device="cpu")
    b = ClipEncoder.load(TINY, str(other), device="cpu")
    assert a.info.fingerprint != b.info.fingerprint
    texts = a.encode_texts(a.tokenize(["a dog", "a cat", "a house"]))
    assert texts.shape == (3, 32) and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)


def test_half_precision_on_cpu_is_refused(tiny_checkpoint):
    with pytest.raises(ConfigError, match="autocast on CUDA only"):
        ClipEncoder.load(TINY, str(tiny_checkpoint), device="cpu", precision="bf16")
