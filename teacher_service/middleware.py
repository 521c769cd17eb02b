"""Pure-ASGI middleware: a request id on every response and log line, a cap on declared body size, metrics."""

from __future__ import annotations

import json
import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.schema import REQUEST_ID_HEADER

from .errors import PayloadTooLarge
from .metrics import Metrics

log = logging.getLogger("vl2v.teacher.access")


class RequestContext:
    """Gives each request an id, refuses a declared body over `max_body` bytes with 413 before anything else, and
    records metrics. Bodies are not read here: the route reads its own, after the cheaper checks, within the cap
    and a deadline (a chunked upload without Content-Length is refused by that reader)."""

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
            declared = dict(scope.get("headers", [])).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                await _send_error(PayloadTooLarge(f"request body is larger than {self.max_body} bytes"), send_with_id)
                self.metrics.errors.inc(status="413", code=PayloadTooLarge.code)
            else:
                await self.app(scope, receive, send_with_id)
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
