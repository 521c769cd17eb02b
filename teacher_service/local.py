"""A vendor on this machine: `python -m teacher_service` as a child process on a free loopback port, always stopped
after. For the demo, benchmarks and tests; settings travel as `VL2V_*` variables, so keys never appear in argv."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import requests


@dataclass
class LocalVendor:
    url: str
    process: subprocess.Popen
    log: Path

    def peak_rss_mb(self) -> float:
        """The service's peak resident memory (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_vendor(
    settings: Mapping[str, object],
    state_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 300.0,
    port: int | None = None,
) -> Iterator[LocalVendor]:
    """Serve `settings` (`Settings` field names: {"model": "demo", "api_keys": "..."}) until the block ends.

    `env` adds other variables (faults for tests). `port` (default: a free one) lets a restarted vendor come back
    where its clients expect it. The log in `state_dir/vendor.log` is appended to, so restarts keep one history.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / "vendor.log"
    port = port or free_port()
    fields = {
        "host": "127.0.0.1",
        "port": port,
        "state_dir": state_dir,
        "create_billing": True,  # a vendor of our own: its first start creates its books
        **settings,
    }
    variables = {f"VL2V_{name.upper()}": _env_value(value) for name, value in fields.items()}
    command = [sys.executable, "-m", "teacher_service"]
    with log.open("a") as out:
        process = subprocess.Popen(
            command, env={**os.environ, **(env or {}), **variables}, stdout=out, stderr=subprocess.STDOUT
        )
        vendor = LocalVendor(f"http://127.0.0.1:{port}", process, log)
        try:
            _wait_ready(vendor, timeout)
            yield vendor
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(vendor: LocalVendor, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if vendor.process.poll() is not None:
            raise RuntimeError(f"the vendor exited with {vendor.process.returncode}: {vendor.log.read_text()[-500:]}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{vendor.url}/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"the vendor was not ready after {timeout:.0f}s (see {vendor.log})")


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
