"""`vl2v query` as a real child process, a deliberately slow teacher, and the check that every bill adds up."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from cache.inspect import verify_cache
from cache.store import EmbeddingCache
from teacher_service.billing import BILLING_DB
from teacher_service.runtime import EncoderFactory, load_encoder


def pacs_args(pacs_mini: Path, cache: Path, *extra: str) -> list[str]:
    return ["--dataset", "pacs", "--data-dir", str(pacs_mini), "--cache", str(cache), *extra]


def spawn_query(url: str, pacs_mini: Path, cache: Path, *extra: str, key: str = "sk-carol") -> subprocess.Popen:
    """The console script's code path (`python -m cli query ... --json`) in its own process."""
    env = {**os.environ, "VL2V_API_KEY": key, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "cli", "query", *pacs_args(pacs_mini, cache, *extra), "--teacher-url", url]
    return subprocess.Popen([*command, "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def slow_encoder(seconds_per_batch: float, gate: threading.Event | None = None) -> EncoderFactory:
    """The real tiny teacher, made to spend `seconds_per_batch` on every image batch (and, with `gate`, to hold
    every image batch until the gate is set)."""

    def factory(settings):
        encoder = load_encoder(settings)
        encode = encoder.encode_images

        def slow(pixels):
            if gate is not None:
                gate.wait()
            time.sleep(seconds_per_batch)
            return encode(pixels)

        encoder.encode_images = slow
        return encoder

    return factory


def read_until(stream, text: str, timeout: float) -> str:
    """Lines of a child's `stream` up to and including the first that contains `text` (or all it wrote in time)."""
    lines: list[str] = []

    def read() -> None:
        for line in stream:
            lines.append(line)
            if text in line:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return "".join(lines)


def _vendor_db(state_dir: Path) -> sqlite3.Connection:
    """The vendor's billing database, read-only: the service may still be running."""
    db = sqlite3.connect(f"file:{state_dir / BILLING_DB}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    return db


def read_vendor_ledger(state_dir: Path) -> list[dict]:
    """The vendor's ledger rows, as its own `BillingStore.ledger()` gives them, read from the file."""
    with _vendor_db(state_dir) as db:
        rows = db.execute("SELECT l.*, k.name AS key_name FROM ledger l JOIN keys k ON k.id = l.key_id ORDER BY l.id")
        return [dict(r) for r in rows]


def read_vendor_balances(state_dir: Path) -> dict[str, tuple[int, int]]:
    """Each key's (balance, spent) in nanos, from the vendor's SQLite file."""
    with _vendor_db(state_dir) as db:
        return {r["name"]: (r["balance"], r["spent"]) for r in db.execute("SELECT name, balance, spent FROM keys")}


def paid_images(vendor_ledger: list[dict], key_name: str = "carol") -> int:
    return sum(r["images"] for r in vendor_ledger if r["key_name"] == key_name)


def assert_paid_once(cache_dir: Path, vendor_ledger: list[dict], key_name: str = "carol") -> int:
    """`cache verify` passes, nothing is left pending, paid images = unique images (views included), and the
    vendor's ledger equals the cache's, row for row. Returns the number of images."""
    mine = [r for r in vendor_ledger if r["key_name"] == key_name]
    with EmbeddingCache.open(cache_dir) as cache:
        assert verify_cache(cache) == []
        assert cache.pending() == {}, "a finished run leaves no request pending"
        unique = cache.counts()["image"] + cache.counts()["views"]  # augmented views are paid images too
        cache_rows = {r.request_id: (r.images, r.texts, r.tokens, round(r.cost * 1e9)) for r in cache.ledger()}
    vendor_rows = {r["request_id"]: (r["images"], r["texts"], r["tokens"], r["cost"]) for r in mine}
    assert paid_images(vendor_ledger, key_name) == unique, "paid images = unique images"
    assert cache_rows == vendor_rows, "the vendor's ledger = the cache's ledger, row for row"
    return unique


class RewritingProxy:
    """An HTTP proxy in front of a vendor that rewrites what the vendor answers: `rewrite(path, status, headers,
    body) -> (status, headers, body)`. What a misbehaving vendor or a careless proxy can do to a client."""

    def __init__(self, upstream: str, rewrite) -> None:
        session = requests.Session()
        self.bodies: list[bytes] = []  # every request body forwarded, in order
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if body:
                    bodies.append(body)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = session.request(method, upstream + self.path, data=body, headers=headers, timeout=60)
                kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
                status, kept, content = rewrite(self.path, answer.status_code, kept, answer.content)
                self.send_response(status)
                for key, value in kept.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding", "date", "server"}
