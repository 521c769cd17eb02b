"""The vendor client: what it retries (with the vendor's Retry-After), what it types, when it gives up."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cache.client import (
    QuotaExhausted,
    RetryPolicy,
    TeacherClient,
    VendorAuthError,
    VendorError,
    VendorUnreachable,
    request_body,
)


class Scripted:
    """A stand-in vendor answering a fixed script of (status, headers, body), then 200s."""

    def __init__(self, script):
        self.script, self.calls, self.seen_keys = list(script), [], []
        parent = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parent.seen_keys.append(self.headers.get("Authorization"))
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                parent.seen_keys.append(self.headers.get("Authorization"))
                parent.calls.append(self.headers.get("Idempotency-Key"))
                self.rfile.read(int(self.headers["Content-Length"]))
                status, headers, body = parent.script.pop(0) if parent.script else (200, {}, OK)
                payload = json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"


OK = {
    "object": "list",
    "model": "m",
    "data": [{"object": "embedding", "index": 0, "embedding": [1.0, 0.0]}],
    "usage": {"prompt_tokens": 2, "total_tokens": 2, "images": 0, "texts": 1, "cost": 0.5, "currency": "USD"},
}


def error(status, code, param=None):
    return {"error": {"message": f"{code} happened", "type": "x", "param": param, "code": code}}


@pytest.fixture
def sleeps():
    return []


def client_for(vendor, sleeps, attempts=5):
    return TeacherClient(
        vendor.url, "sk", retry=RetryPolicy(attempts=attempts, base_s=0.1), sleep=sleeps.append, seed=0
    )


def test_429_and_5xx_are_retried_honouring_retry_after_with_the_same_idempotency_key(sleeps):
    vendor = Scripted(
        [
            (429, {"retry-after-ms": "1500", "retry-after": "2"}, error(429, "rate_limit_exceeded")),
            (503, {}, error(503, "model_not_ready")),
            (500, {}, {"oops": 1}),
        ]
    )
    answer = client_for(vendor, sleeps).embed(request_body("m", ["a"]), "key-1", count=1, dim=2)
    assert answer.cost == 0.5 and answer.texts == 1
    assert sleeps[0] == 1.5  # retry-after-ms wins over retry-after
    assert 0.05 <= sleeps[2] <= 0.6  # then exponential backoff with jitter
    assert vendor.calls == ["key-1"] * 4


def test_a_vendor_that_never_answered_fails_fast_and_one_that_did_gets_patient_retries(sleeps):
    client = TeacherClient("http://127.0.0.1:9", "sk", retry=RetryPolicy(attempts=8, base_s=0.01), sleep=sleeps.append)
    with pytest.raises(VendorUnreachable, match="cannot connect to http://127.0.0.1:9 .connection refused.; is the"):
        client.embed(request_body("m", ["a"]), "k", count=1, dim=2)
    assert sleeps == [0.5, 0.5], "three quick tries, not eight patient ones"

    sleeps.clear()
    vendor = Scripted([])
    client = TeacherClient(vendor.url, "sk", retry=RetryPolicy(attempts=3, base_s=0.01), sleep=sleeps.append)
    client.embed(request_body("m", ["a"]), "k", count=1, dim=2)  # it answers once...
    vendor.server.shutdown()
    vendor.server.server_close()  # ...then goes away: perhaps restarting
    with pytest.raises(VendorUnreachable, match="gave up after 3 attempts .connection refused."):
        client.embed(request_body("m", ["a"]), "k", count=1, dim=2)
    assert len(sleeps) == 2, "a wait between attempts, none after the last"


@pytest.mark.parametrize(("status", "kind"), [(401, VendorAuthError), (402, QuotaExhausted), (400, VendorError)])
def test_refusals_are_typed_and_not_retried(sleeps, status, kind):
    headers = {"x-should-retry": "false"} if status == 402 else {}
    vendor = Scripted([(status, headers, error(status, "nope", "input[3]"))])
    with pytest.raises(kind) as raised:
        client_for(vendor, sleeps).embed(request_body("m", ["a"]), "k", count=1, dim=2)
    assert raised.value.status == status and raised.value.item == 3 and sleeps == []


def test_a_refusal_that_says_do_not_retry_is_not_retried_even_if_5xx(sleeps):
    vendor = Scripted([(503, {"x-should-retry": "false"}, error(503, "down"))])
    with pytest.raises(VendorError):
        client_for(vendor, sleeps).embed(request_body("m", ["a"]), "k", count=1, dim=2)
    assert sleeps == []
