"""Pure-ASGI middleware: a request id on every response and log line, a cap on body size, latency metrics."""

from __future__ import annotations

import json
import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import PayloadTooLarge
from .metrics import Metrics
from .schema import REQUEST_ID_HEADER

log = logging.getLogger("vl2v.teacher.access")


class RequestContext:
    """Gives each request an id, refuses bodies over `max_body` bytes with 413, and records metrics.

    The body is read here, up to the cap, before the app sees it: a chunked upload without Content-Length
    is refused as early as one that declares its size.
    """

    def __init__(self, app: ASGIApp, *, max_body: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body = max_body
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req_{uuid.uuid4().hex[:24]}"
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message["headers"] = [*headers, (REQUEST_ID_HEADER.encode(), request_id.encode())]
            await send(message)

        try:
            body = await self._read_body(scope, receive)
            if body is None:
                await _send_error(PayloadTooLarge(f"request body is larger than {self.max_body} bytes"), send_with_id)
                self.metrics.errors.inc(status="413", code=PayloadTooLarge.code)
            else:
                await self.app(scope, _replay(body, receive), send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.inc(route=route, status=str(status))
            self.metrics.latency.observe(elapsed)
            account = scope["state"].get("account")
            log.info(
                "%s %s %s %d %.1fms key=%s",
                request_id,
                scope["method"],
                scope["path"],
                status,
                elapsed * 1000,
                account.fingerprint if account else "-",
            )

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it is known to exceed the cap."""
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The buffered body first, then whatever the connection says next (a disconnect, eventually)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _send_error(error: PayloadTooLarge, send: Send) -> None:
    content = json.dumps(error.envelope()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})
