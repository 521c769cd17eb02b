"""The shipped nginx.conf is the first wall: bodies over the vendor's cap are refused at the door, bodies under it
stream to the vendor (whose early 401 then stops the upload), and nothing is spooled to nginx's disk."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from teacher_service.settings import Settings

from ..conftest import REPO, run_service
from ..test_compose import _start_nginx, wait_until

MB = 1 << 20


def _folder_bytes(root: Path) -> int:
    """What nginx holds on disk under `root`: its files, and the temporary files it opened and unlinked at once
    (as nginx does with request bodies), found through its processes' open descriptors."""
    held = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    for fd in (fd for proc in Path("/proc").glob("[0-9]*") for fd in _descriptors(proc)):
        try:
            if os.readlink(fd).startswith(str(root)) and os.readlink(fd).endswith(" (deleted)"):
                held += os.stat(fd).st_size
        except OSError:  # closed or gone meanwhile
            continue
    return held


def _descriptors(proc: Path) -> list[Path]:
    try:
        if "nginx" not in (proc / "comm").read_text():
            return []
        return list((proc / "fd").iterdir())
    except OSError:
        return []


def _upload(port: int, size: int, *, chunked: bool, key: str = "sk-wrong", watch: Path | None = None) -> dict:
    """POST a `size`-byte body 1 MiB at a time, as fast as the socket takes it; stop when an answer arrives.
    Returns the status, the bytes sent before the answer, the seconds it took, and the most `watch` held meanwhile."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=60)
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    conn.sendall(
        (
            f"POST /v1/embeddings HTTP/1.1\r\nHost: vendor\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\n{length}\r\n\r\n"
        ).encode()
    )
    sent, answered, peak = [0], threading.Event(), [0]
    chunk = b"x" * MB

    def send() -> None:
        try:
            while sent[0] < size and not answered.is_set():
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                sent[0] += len(chunk)
                if watch is not None:
                    peak[0] = max(peak[0], _folder_bytes(watch))
            if chunked and not answered.is_set():
                conn.sendall(b"0\r\n\r\n")
        except OSError:  # the server closed the connection: the upload is over
            pass

    started = time.monotonic()
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    head = b""
    while b"\r\n" not in head:
        data = conn.recv(4096)
        if not data:
            break
        head += data
    answered.set()
    elapsed, uploaded = time.monotonic() - started, sent[0]
    sender.join(30)
    conn.close()
    status = int(head.split()[1]) if head.startswith(b"HTTP/") else None
    return {"status": status, "sent": uploaded, "seconds": elapsed, "peak": peak[0]}


@pytest.mark.slow
def test_a_huge_body_with_a_bad_key_is_refused_early_and_nothing_is_spooled_to_disk(make_settings, tmp_path):
    settings = make_settings()
    nginx = None
    with run_service(settings) as vendor:
        port = int(vendor.url.rsplit(":", 1)[1])
        listen = _free_port()
        root = tmp_path / "nginx"
        nginx = _start_nginx(root, [port], listen)
        try:
            wait_until(lambda: _answers(listen), what="nginx to answer", timeout=30)
            declared = _upload(listen, 300 * MB, chunked=False, watch=root)
            streamed = _upload(listen, 300 * MB, chunked=True, watch=root)
            under_cap = _upload(listen, 24 * MB, chunked=False, watch=root)
            left = _folder_bytes(root)
        finally:
            nginx.terminate()
            nginx.communicate(timeout=30)

    # Declared over the cap: nginx answers 413 before a byte of the body is read.
    assert declared["status"] == 413 and declared["sent"] < 32 * MB, declared
    # Chunked, with no length to judge by: the vendor's 401 comes before nginx reads the body at all.
    assert streamed["status"] in (401, 413) and streamed["sent"] < 64 * MB, streamed
    # Under the cap: streamed to the vendor, whose 401 arrives before the upload is done.
    assert under_cap["status"] == 401 and under_cap["sent"] < 24 * MB, under_cap
    for upload in (declared, streamed, under_cap):
        assert upload["peak"] < MB, f"nginx spooled {upload['peak']} bytes to disk"
    assert left < MB


def test_the_balancer_caps_bodies_at_the_vendors_limit_and_sets_every_timeout():
    conf = (REPO / "nginx.conf").read_text()
    cap = re.search(r"^\s*client_max_body_size (\d+)m;", conf, re.M)
    default = Settings.model_fields["max_request_bytes"].default
    assert cap is not None and int(cap.group(1)) * MB == default, "nginx's cap is the vendor's request limit"
    assert f"larger than {default} bytes" in conf, "nginx's 413 names the same limit"
    assert re.search(r"^\s*proxy_request_buffering off;", conf, re.M), "bodies stream to the vendor"
    for directive in ("client_header_timeout", "client_body_timeout", "send_timeout", "proxy_send_timeout"):
        assert re.search(rf"^\s*{directive} \d+s;", conf, re.M), directive


def _free_port() -> int:
    from teacher_service.local import free_port

    return free_port()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
