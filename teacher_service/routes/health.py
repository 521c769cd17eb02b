"""Probes and metrics: `GET /health` (process up), `GET /ready` (model loaded), `GET /metrics`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from ..deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health(state: StateDep) -> dict:
    """Liveness: answers as long as the process serves HTTP."""
    status = "ready" if state.teacher else ("failed" if state.load_error else "loading")
    return {"status": "ok", "model": status}


@router.get("/ready")
def ready(state: StateDep) -> dict:
    """Readiness: 200 once the model is loaded and the billing database is in place; 503 otherwise."""
    state.require_teacher()
    state.store.check_present()
    return {"status": "ready"}


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(state: StateDep) -> PlainTextResponse:
    """Prometheus text format: requests, errors, images, texts, latency, batch sizes."""
    return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")
