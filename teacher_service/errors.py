"""Typed API errors. Each carries what the one error envelope needs; the app translates them at the edge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ApiError(Exception):
    """An error answered as `{"error": {"message", "type", "param", "code"}}` with an HTTP status."""

    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.code
        self.headers = headers or {}

    def envelope(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(ApiError):
    status = 400
    code = "invalid_request"


class InvalidInput(InvalidRequest):
    """One input item is unusable; `param` names it as `input[i]`."""

    code = "invalid_input"


class Unauthorized(ApiError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class InsufficientQuota(ApiError):
    status = 402
    type = "insufficient_quota"
    code = "insufficient_quota"

    def __init__(self, message: str, **kwargs) -> None:
        super().__init__(message, **kwargs)
        # Retrying cannot help until someone tops the balance up; tell SDKs not to.
        self.headers.setdefault("x-should-retry", "false")


class NotFound(ApiError):
    status = 404
    code = "not_found"


class IdempotencyConflict(ApiError):
    """A request with the same idempotency key is still being processed."""

    status = 409
    type = "idempotency_error"
    code = "idempotency_key_in_use"


class RequestTimeout(ApiError):
    """The client took too long to send its body (a slow or half-sent request)."""

    status = 408
    code = "request_timeout"

    def __init__(self, message: str, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("connection", "close")


class PayloadTooLarge(ApiError):
    status = 413
    code = "request_too_large"


class IdempotencyMismatch(ApiError):
    """The idempotency key was used before with a different request body."""

    status = 422
    type = "idempotency_error"
    code = "idempotency_key_reused"


class RateLimited(ApiError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.headers["retry-after"] = str(max(1, int(-(-retry_after_s // 1))))
        self.headers["retry-after-ms"] = str(max(1, int(retry_after_s * 1000)))


class NotReady(ApiError):
    status = 503
    type = "service_unavailable"
    code = "model_not_ready"

    def __init__(self, message: str, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("retry-after", "5")


class BillingUnavailable(ApiError):
    """The billing database cannot be written: nothing is charged or embedded until an operator fixes it."""

    status = 503
    type = "service_unavailable"
    code = "billing_unavailable"

    def __init__(self, message: str, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("retry-after", "30")


def invalid_body(errors: Sequence[Any]) -> ApiError:
    """The most specific pydantic error of a request body, located the way clients name it (`input[3]`)."""
    if any(e["type"] == "json_invalid" for e in errors):
        return InvalidRequest("request body is not valid JSON", code="invalid_json")
    first = max(errors, key=lambda e: len(e["loc"]))
    param = _param(first["loc"])
    where = f"{param}: " if param else ""
    return InvalidRequest(f"{where}{first['msg']}", param=param)


def _param(loc: tuple) -> str | None:
    """('body', 'input', 3, 'tagged-union[...]', 'image', 'image') -> 'input[3].image'."""
    parts = list(loc[1:]) if loc and loc[0] in ("body", "header", "query") else list(loc)
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or part in ("str", "list", "int", "float", "bool"):
            continue  # pydantic's name for a union branch, not a field
        elif part not in out.rsplit(".", 1)[-1:]:
            out += f".{part}" if out else part
    return out or None
