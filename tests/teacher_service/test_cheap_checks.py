"""Cheap checks before expensive work: a hostile or broken client is refused before its body is read, parsed,
tokenized or decoded, and cannot hold up another key's request."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from ..conftest import run_service
from .test_api_contract import embed, image
from .test_errors import assert_error, png_header_only


def raw_request(url: str, headers: dict[str, str], body: bytes, *, read_timeout: float) -> tuple[bytes, float]:
    """Send a POST's headers and `body` (perhaps less than Content-Length says) and read what comes back."""
    parts = urlsplit(url)
    started = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=read_timeout) as sock:
        lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.hostname}", *(f"{k}: {v}" for k, v in headers.items())]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        answer, seconds = b"", None
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                seconds = seconds or time.monotonic() - started  # when the answer began
                if b"\r\n\r\n" in answer and b'"}}' in answer:  # the whole error envelope is in
                    break
        except TimeoutError:
            pass
    return answer, seconds if seconds is not None else time.monotonic() - started


def unsent_body(key: str, length: int = 20 * 2**20) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Content-Length": str(length)}


@pytest.fixture
def guarded(make_settings):
    keys = "alice:sk-alice-secret:10,empty:sk-empty:0,limited:sk-limited:10"
    with run_service(make_settings(api_keys=keys, body_timeout_s=1.0)) as service:
        yield service


@pytest.mark.parametrize(
    ("key", "status"),
    [("sk-wrong", b"401"), ("sk-empty", b"402")],
)
def test_a_bad_key_or_an_empty_balance_is_refused_before_the_body_is_read(guarded, key, status):
    answer, _ = raw_request(f"{guarded.url}/v1/embeddings", unsent_body(key), b"", read_timeout=5)
    # Answered without the 20 MiB the client announced and never sends: a server that waited for the body would
    # have answered 408 at the 1 s body deadline (the test below), never this status.
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]


def test_the_request_rate_is_checked_before_the_body_is_read(make_settings):
    with run_service(make_settings(rate_limit_requests=1)) as service:
        assert embed(service, ["a dog"]).status_code == 200
        answer, _ = raw_request(f"{service.url}/v1/embeddings", unsent_body("sk-alice-secret"), b"", read_timeout=5)
    # 429, not the 408 of a server that waited for the announced body (as above).
    assert answer.startswith(b"HTTP/1.1 429") and b"retry-after" in answer.lower(), answer[:200]


def test_a_slow_or_half_sent_body_gets_408_after_the_deadline(guarded):
    answer, seconds = raw_request(
        f"{guarded.url}/v1/embeddings", unsent_body("sk-alice-secret", 1000), b'{"model": "vl2v', read_timeout=10
    )
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, answer[:300]
    assert 0.9 <= seconds < 5
    assert guarded.state.store.ledger() == []


def test_a_balance_that_cannot_pay_is_refused_before_texts_are_tokenized(guarded, monkeypatch):
    counted = []
    original = guarded.state.teacher.encoder.count_tokens
    monkeypatch.setattr(guarded.state.teacher.encoder, "count_tokens", lambda t: counted.append(t) or original(t))
    assert_error(embed(guarded, ["a dog"] * 100, key="sk-empty"), 402, "insufficient_quota")
    assert counted == []


def test_one_bad_image_header_fails_the_request_before_any_image_is_decoded(guarded, jpeg_bytes, monkeypatch):
    decoded = []
    teacher = guarded.state.teacher
    original = teacher._prepare
    monkeypatch.setattr(teacher, "_prepare", lambda item: decoded.append(item.param) or original(item))
    good = [image(jpeg_bytes[i % len(jpeg_bytes)]) for i in range(30)]
    for bad, code in [
        (image(png_header_only(30_000, 30_000), "image/png"), "image_too_many_pixels"),  # a bomb, by its header
        (image(b"GIF89a" + b"\0" * 40, "image/gif"), "invalid_input"),  # a corrupt header
        (image(jpeg_bytes[0], "image/png"), "invalid_input"),  # JPEG bytes declared as PNG
    ]:
        assert_error(embed(guarded, [*good, bad]), 400, code, "input[30]")
    assert decoded == [], "no image of a request with a bad header is decoded"
    assert embed(guarded, good[:2]).status_code == 200 and decoded == ["input[0]", "input[1]"]


_ATTACKER = """
import os, sys, requests
url, path = sys.argv[1:]
body = open(path, "rb").read()
session = requests.Session()
session.headers.update({"Authorization": "Bearer " + os.environ["VL2V_API_KEY"], "Content-Type": "application/json"})
while True:
    print(session.post(url + "/v1/embeddings", data=body, timeout=120).status_code, flush=True)
"""


def test_a_hostile_clients_requests_are_refused_without_expensive_work_while_another_key_is_served(
    make_settings, jpeg_bytes, tmp_path, monkeypatch
):
    """One key sends, from four processes at once, huge texts, a 24 MB body, images of 27 MB the last of which is a
    bomb by its header, and 255 texts with one too long: every one of its requests is refused with 400 before any
    of its images is decoded or any of its texts is tokenized for the model, and another key's one-image requests
    are served meanwhile.
    What that is worth in latency is a benchmark's question (`bench/hostile.py`), not a test's."""
    large = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), dtype=np.uint8)).save(large, "PNG")
    hostile = {
        "huge texts": ["a dog " * 680] * 256,
        "huge body": ["x" * 4000] * 6000,
        "large images, one corrupt": [image(large.getvalue(), "image/png")] * 3
        + [image(png_header_only(20_000, 20_000), "image/png")],
        "many texts, one too long": ["a photo of a small dog"] * 255 + ["a dog " * 680],
    }
    keys = "victim:sk-victim:100,mallory:sk-mallory:100"
    with run_service(make_settings(api_keys=keys, rate_limit_requests=0)) as service:
        teacher = service.state.teacher
        decoded, tokenized = [], []
        prepare, tokenize = teacher._prepare, teacher.encoder.tokenize
        monkeypatch.setattr(teacher, "_prepare", lambda item: decoded.append(item.param) or prepare(item))
        monkeypatch.setattr(teacher.encoder, "tokenize", lambda texts: tokenized.append(texts) or tokenize(texts))
        attackers = []
        for i, inputs in enumerate(hostile.values()):
            body = tmp_path / f"hostile-{i}.json"
            body.write_text(json.dumps({"model": "vl2v-tiny", "input": inputs}))
            attackers.append(
                subprocess.Popen(
                    [sys.executable, "-c", _ATTACKER, service.url, str(body)],
                    env={**os.environ, "VL2V_API_KEY": "sk-mallory"},
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        try:
            statuses = [attacker.stdout.readline().strip() for attacker in attackers]  # every attacker under way
            victim, one_image = service.session("sk-victim"), {"model": "vl2v-tiny", "input": [image(jpeg_bytes[0])]}
            served = [victim.post(f"{service.url}/v1/embeddings", json=one_image) for _ in range(10)]
        finally:
            for attacker in attackers:
                attacker.kill()
        statuses += [line.strip() for a in attackers for line in a.communicate()[0].splitlines()]
    assert set(statuses) == {"400"} and len(statuses) >= 8, statuses
    assert [r.status_code for r in served] == [200] * 10, served[-1].text
    assert decoded == ["input[0]"] * 10, "only the victim's images are decoded"
    assert tokenized == [], "no hostile text is tokenized for the model (only counted, up to the first too long)"


def test_an_image_over_the_byte_cap_is_413_from_the_data_url_length(guarded):
    payload = base64.b64encode(b"\xff\xd8\xff" + b"\0" * (9 * 2**20)).decode()
    item = {"type": "image", "image": f"data:image/jpeg;base64,{payload}"}
    assert_error(embed(guarded, [item]), 413, "image_too_large", "input[0]")
