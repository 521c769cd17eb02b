"""Training state as data: nested tensors and plain values in one safetensors file, never a pickle.

A resume checkpoint holds the model, the optimizer, the weight averager and the best snapshot so far: dictionaries,
lists and tuples of tensors, numbers, strings, booleans and None. `torch.save` would pickle them, and unpickling a
file runs whatever code it names, so a run folder someone else can write to would run their code as the next
user. Here the tensors go into safetensors (raw bytes behind a JSON header) and the structure into its metadata as
JSON, so reading one back builds nothing but tensors and plain values.

The structure is JSON with four tagged forms: `{"$tensor": "N"}` for the N-th tensor, `{"$tuple": [...]}`,
`{"$float": "inf"}` for a number JSON cannot hold, and `{"$dict": [[key, value], ...]}` for a dictionary whose keys
are not all strings (an optimizer's state is keyed by parameter index). Every other dictionary is a JSON object.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from cache.errors import UserError

FORMAT = "vl2v-state/1"
_TAGS = ("$tensor", "$tuple", "$dict", "$float")


class StateFileError(UserError):
    """A state file that cannot be read back: truncated, tampered with, of another format, or for another model."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def save_state(state: Any, path: Path) -> None:
    """Write `state` to `path` atomically (a kill never leaves half a file): its tensors and its structure."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(state, tensors)
    partial = path.with_name(path.name + ".part")
    save_file(tensors, str(partial), metadata={"format": FORMAT, "structure": json.dumps(structure)})
    os.replace(partial, path)


def load_state(path: Path) -> Any:
    """What `save_state` wrote, on the CPU.

    Raises:
        StateFileError: the file is missing, truncated, not a safetensors file, of another format, or its
            structure names tensors it does not hold; the message names the file.
    """
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise StateFileError(path, f"not a vl2v training state (format {metadata.get('format')!r})")
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open has no items)
        return _decode(json.loads(metadata["structure"]), tensors)
    except StateFileError:
        raise
    except FileNotFoundError:
        raise StateFileError(path, "missing") from None
    except (SafetensorError, OSError, RuntimeError) as e:  # RuntimeError: a size that does not match the header
        raise StateFileError(path, f"unreadable ({_first_line(e)}): truncated or not a safetensors file") from None
    except (KeyError, TypeError, ValueError) as e:  # json errors are ValueErrors
        raise StateFileError(path, f"damaged structure ({type(e).__name__}: {_first_line(e)})") from None


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        name = str(len(tensors))
        tensors[name] = value.detach().cpu().contiguous().clone()  # no shared storage: safetensors refuses it
        return {"$tensor": name}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and k not in _TAGS for k in value):
            return {k: _encode(v, tensors) for k, v in value.items()}
        return {"$dict": [[_key(k), _encode(v, tensors)] for k, v in value.items()]}
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    raise TypeError(f"cannot store a {type(value).__name__} in a training state (tensors and plain values only)")


def _key(key: Any) -> Any:
    if isinstance(key, bool) or not isinstance(key, int | str):
        raise TypeError(f"cannot store a dictionary key of type {type(key).__name__}")
    return key


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        if isinstance(value, bool | int | float | str) or value is None:
            return value
        raise TypeError(f"unexpected {type(value).__name__}")
    if "$tensor" in value:
        return tensors[value["$tensor"]]
    if "$float" in value:
        return float(value["$float"])  # inf, -inf, nan
    if "$tuple" in value:
        return tuple(_decode(v, tensors) for v in value["$tuple"])
    if "$dict" in value:
        return {_key(k): _decode(v, tensors) for k, v in value["$dict"]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
