"""`create_app(settings)`: the vendor service. The model loads in the background; /ready says when it has."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from common.schema import EmbeddingRequest

from .billing import BillingStore, open_billing
from .errors import ApiError, invalid_body
from .metrics import Metrics
from .middleware import RequestContext
from .routes import embeddings, health, models, usage
from .runtime import EncoderFactory, ServiceState, Teacher, load_encoder
from .settings import Settings

log = logging.getLogger("vl2v.teacher")


def create_app(
    settings: Settings,
    *,
    store: BillingStore | None = None,
    encoder_factory: EncoderFactory = load_encoder,
    on_load_failure: Callable[[Exception], None] | None = None,
) -> FastAPI:
    """Build the service. Nothing heavy happens until the app starts (its lifespan).

    Args:
        settings: every option of the service.
        store: the billing database, already opened (`open_billing`); opened at startup when not given.
        encoder_factory: builds the encoder from the settings; called on a worker thread at startup.
        on_load_failure: called if the model cannot be loaded (the CLI uses it to stop the server).
    """
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        books = store or open_billing(settings)
        state = app.state.service = ServiceState(settings, books, metrics)
        loading = asyncio.create_task(_load(state, encoder_factory, on_load_failure))
        try:
            yield
        finally:
            loading.cancel()
            if state.teacher is not None:
                await state.teacher.stop()
            books.close()

    app = FastAPI(
        title="vl2v teacher",
        summary="CLIP image and text embeddings behind a keyed, billed, rate-limited API (wire protocol v1).",
        version="1",
        lifespan=lifespan,
    )
    for router in (embeddings.router, models.router, usage.router, health.router):
        app.include_router(router)
    _install_error_handlers(app, metrics)
    _document_request_bodies(app)
    app.add_middleware(RequestContext, max_body=settings.max_request_bytes, metrics=metrics)
    return app


def _document_request_bodies(app: FastAPI) -> None:
    """Add the schemas of bodies that routes parse themselves (`EmbeddingRequest`) to the OpenAPI document."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            document = build()
            schema = EmbeddingRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = document.setdefault("components", {}).setdefault("schemas", {})
            components.update(schema.pop("$defs", {}))
            components["EmbeddingRequest"] = schema
            return document  # FastAPI's own openapi() keeps it as app.openapi_schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _load(state: ServiceState, factory: EncoderFactory, on_failure: Callable[[Exception], None] | None) -> None:
    try:
        encoder = await asyncio.to_thread(factory, state.settings)
    except Exception as e:
        state.load_error = f"{type(e).__name__}: {e}"
        log.error("could not load the model: %s", state.load_error)
        if on_failure is not None:
            on_failure(e)
        return
    teacher = Teacher(encoder, state.settings, state.metrics)
    teacher.start()
    state.teacher = teacher
    info = encoder.info
    log.info(
        "ready: %s (%s) dim=%d on %s, fingerprint %s",
        info.architecture,
        info.pretrained,
        info.embedding_dim,
        encoder.device,
        info.fingerprint[:12],
    )


def _install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Every error leaves as one envelope, bad input as a 4xx, never as a 500."""

    def respond(error: ApiError) -> JSONResponse:
        metrics.errors.inc(status=str(error.status), code=str(error.code))
        return JSONResponse(error.envelope(), status_code=error.status, headers=error.headers)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return respond(error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return respond(invalid_body(error.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        generic = ApiError(
            str(error.detail),
            code={404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error"),
            headers=dict(error.headers or {}),
        )
        generic.status = error.status_code
        return respond(generic)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("%s: unexpected error", request.state.request_id)
        failure = ApiError("internal error; the request was not charged", code="internal_error")
        failure.status, failure.type = 500, "server_error"
        return respond(failure)
