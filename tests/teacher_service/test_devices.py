"""One device resolver for the vendor and the student."""

import pytest
import torch
import typer

from cli import exit_codes
from cli.errors import reports_errors
from common.devices import resolve_device
from common.errors import ConfigError


def test_auto_is_the_gpu_when_there_is_one_and_the_cpu_otherwise(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_where_there_is_none_is_a_user_error_naming_the_device(monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=f"device '{device}' was asked for, but CUDA is not available"):
        resolve_device(device)

    @reports_errors
    def command() -> None:
        resolve_device(device)

    with pytest.raises(typer.Exit) as exited:  # one red line, not a traceback
        command()
    assert exited.value.exit_code == exit_codes.ERROR


def test_a_misspelt_device_says_what_devices_are():
    with pytest.raises(ConfigError, match="'gpu' is not a device; use auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
