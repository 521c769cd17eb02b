"""Where a model runs: `auto`, `cpu`, `cuda` or `cuda:N`, resolved the same way for the vendor and the student."""

from __future__ import annotations

import torch

from common.errors import ConfigError


def resolve_device(device: str) -> torch.device:
    """`auto` is the first GPU when there is one, else the CPU; asking for CUDA where there is none is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for, but CUDA is not available on this machine")
    return resolved
