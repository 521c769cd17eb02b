"""Typed API errors. Each carries what the one error envelope needs; the app translates them at the edge."""

from __future__ import annotations


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
