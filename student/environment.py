"""The machine and software a run computed on, recorded beside its results.

Training on a CPU is deterministic for one seed on one kind of machine, and moves when the floating-point sums are
ordered differently: another instruction set's kernels, another thread count, another torch build. A result that
names these can be told apart from a different result; `vl2v distill` writes them into the run folder
(`environment.json`), `vl2v demo` into demo.json, and the measuring tools into every results file.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from importlib import metadata
from pathlib import Path

from .results import RunFolderError, read_json

# What makes one machine compute another's sums, where set: the kernels torch and oneDNN pick, and the thread count.
# Set, they let one machine compute as an older instruction set would (ATEN_CPU_CAPABILITY=avx2, ...).
KERNEL_SETTINGS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS")
LIBRARIES = ("torchvision", "timm", "numpy")
FILE = "environment.json"


def cpu_name() -> str:
    """The CPU's model name, with "(AVX-512)" where it has those instructions (torch then picks other kernels)."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = cpuinfo.read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        flags = next((line for line in lines if line.startswith("flags")), "")
        name = (names[0] if names else name) + (" (AVX-512)" if "avx512f" in flags.split() else "")
    return name


def environment(device: str = "cpu") -> dict:
    """The CPU, its threads, the torch build and the libraries a result depends on; the GPU where `device` (as
    `--device` takes it: auto, cpu, cuda, cuda:N) is one."""
    import torch  # here, not above: `describe` serves the command line, which starts without torch

    from common.devices import resolve_device

    kernels = {name: os.environ[name] for name in KERNEL_SETTINGS if name in os.environ}
    resolved = resolve_device(device)
    gpu = torch.cuda.get_device_name(resolved) if resolved.type == "cuda" else None
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **{name: _version(name) for name in LIBRARIES},
        "python": platform.python_version(),
        **({"gpu": gpu} if gpu else {}),
        **({"kernels": kernels} if kernels else {}),
    }


def record_environment(folder: Path, device: str, resumed: bool) -> None:
    """Add this process's environment to `folder`/environment.json: one entry per start or resume of a run, so a
    run resumed on another machine says so."""
    path = folder / FILE
    entries = read_json(path, "the run's machine of each start (a JSON list)") if path.is_file() else []
    if not isinstance(entries, list):
        raise RunFolderError(f"{path} should be a JSON list, one entry per start of the run; move it away to go on")
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    entries.append({"started": started, "resumed": resumed, **environment(device)})
    path.write_text(json.dumps(entries, indent=2))


def describe(machine: dict) -> str:
    """One line: "AMD EPYC (AVX-512), 2 threads, torch 2.14.1"."""
    kernels = "".join(f", {k}={v}" for k, v in machine.get("kernels", {}).items())
    threads = f"{machine['torch_threads']} thread{'' if machine['torch_threads'] == 1 else 's'}"
    return f"{machine['cpu']}, {threads}{kernels}, torch {machine['torch']}"


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
