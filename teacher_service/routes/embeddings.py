"""`POST /v1/embeddings`: validate, check limits and balance, embed through the batchers, charge, answer."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse

from ..billing import NANOS, Account, Charge, StoredResponse, check_affordable, to_nanos
from ..deps import AccountDep, StateDep, TeacherDep
from ..errors import InvalidInput, InvalidRequest, NotFound
from ..faults import cut_off
from ..runtime import ServiceState, Teacher
from ..schema import (
    BALANCE_HEADER,
    COST_HEADER,
    IDEMPOTENCY_HEADER,
    REPLAYED_HEADER,
    REQUEST_ID_HEADER,
    EmbeddingRequest,
    EmbeddingResponse,
    ImageInput,
    encode_vector,
    error_responses,
)

router = APIRouter(prefix="/v1", tags=["embeddings"])

_ERRORS = error_responses(400, 401, 402, 404, 409, 413, 422, 429, 503)


@router.post("/embeddings", response_model=EmbeddingResponse, responses=_ERRORS)
async def create_embeddings(
    body: EmbeddingRequest,
    request: Request,
    state: StateDep,
    account: AccountDep,
    teacher: TeacherDep,
    idempotency_key: Annotated[str | None, Header(alias=IDEMPOTENCY_HEADER, max_length=255)] = None,
) -> Response:
    """Embed texts and images; L2-normalised vectors in input order. Charged only when it succeeds."""
    await state.faults.before_work()
    texts, images = _split_inputs(body, teacher, state)
    if idempotency_key is None:
        return await _embed_and_charge(body, texts, images, request, state, account, teacher, None)

    body_hash = hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    stored = await asyncio.to_thread(state.store.claim, account, idempotency_key, body_hash)
    if stored is not None:
        headers = {**stored.headers, REPLAYED_HEADER: "true", COST_HEADER: "0"}
        return Response(stored.body, status_code=stored.status, media_type="application/json", headers=headers)
    try:
        return await _embed_and_charge(
            body, texts, images, request, state, account, teacher, (idempotency_key, body_hash)
        )
    finally:
        state.store.release(account, idempotency_key)


def _split_inputs(
    body: EmbeddingRequest, teacher: Teacher, state: ServiceState
) -> tuple[dict[int, tuple[str, int]], dict[int, str]]:
    """Check the request as a whole and per item: texts {index: (text, tokens)}, images {index: data URL}."""
    info, settings = teacher.encoder.info, state.settings
    served = settings.served_model_id or info.architecture
    if body.model != served:
        raise NotFound(
            f"model {body.model!r} does not exist; this service serves {served!r}",
            param="model",
            code="model_not_found",
        )
    if body.dimensions is not None and body.dimensions != info.embedding_dim:
        raise InvalidRequest(f"dimensions must be {info.embedding_dim} for {served!r} (or omitted)", param="dimensions")
    items = body.items()
    if not items:
        raise InvalidRequest("input is empty", param="input")
    if len(items) > settings.max_inputs:
        raise InvalidRequest(
            f"input has {len(items)} items; at most {settings.max_inputs} per request",
            param="input",
            code="too_many_inputs",
        )
    texts: dict[int, tuple[str, int]] = {}
    images: dict[int, str] = {}
    for i, item in enumerate(items):
        if isinstance(item, ImageInput):
            images[i] = item.image
            continue
        text = item if isinstance(item, str) else item.text
        param = f"input[{i}]"
        if not text.strip():
            raise InvalidInput("text is empty", param=param)
        if len(text) > settings.max_text_chars:
            raise InvalidInput(
                f"text has {len(text)} characters; at most {settings.max_text_chars}",
                param=param,
                code="text_too_long",
            )
        tokens = teacher.encoder.count_tokens(text)
        if tokens + 2 > info.context_length:  # +2: the start and end markers
            raise InvalidInput(
                f"text has {tokens} tokens; the model reads at most {info.context_length - 2}",
                param=param,
                code="text_too_long",
            )
        texts[i] = (text, tokens)
    return texts, images


async def _embed_and_charge(
    body: EmbeddingRequest,
    texts: dict[int, tuple[str, int]],
    images: dict[int, str],
    request: Request,
    state: ServiceState,
    account: Account,
    teacher: Teacher,
    idempotency: tuple[str, str] | None,
) -> Response:
    settings = state.settings
    request_id = request.state.request_id
    headers = state.limiter.check(account.id, len(images))
    tokens = sum(n for _, n in texts.values())
    charge = Charge(
        images=len(images),
        texts=len(texts),
        tokens=tokens,
        cost=len(images) * to_nanos(settings.price_per_image)
        + (tokens * to_nanos(settings.price_per_1k_tokens) + 500) // 1000,
    )
    check_affordable(charge.cost, await asyncio.to_thread(state.store.balance, account))

    pixels = await _prepare_images(teacher, images)
    image_vectors, text_vectors = await asyncio.gather(
        teacher.images.submit(pixels), teacher.embed_texts([t for t, _ in texts.values()])
    )
    vectors = dict(zip(images, image_vectors, strict=True)) | dict(zip(texts, text_vectors, strict=True))
    payload = EmbeddingResponse(
        data=[{"index": i, "embedding": encode_vector(vectors[i], body.encoding_format)} for i in sorted(vectors)],
        model=body.model,
        usage={
            "prompt_tokens": tokens,
            "total_tokens": tokens,
            "images": charge.images,
            "texts": charge.texts,
            "cost": charge.cost / NANOS,
            "currency": settings.currency,
        },
    )
    content = payload.model_dump_json().encode()
    replay_headers = {"x-original-request-id": request_id}
    balance = await asyncio.to_thread(
        state.store.charge,
        account,
        request_id,
        charge,
        idempotency=idempotency,
        response=StoredResponse(200, replay_headers, content) if idempotency else None,
    )
    state.metrics.images.inc(charge.images)
    state.metrics.texts.inc(charge.texts)
    headers |= {
        COST_HEADER: f"{charge.cost / NANOS:.9f}",
        BALANCE_HEADER: f"{balance / NANOS:.9f}",
        REQUEST_ID_HEADER: request_id,
    }
    if state.faults.drop_after_charge():
        return StreamingResponse(cut_off(content), media_type="application/json", headers=headers)
    return Response(content, media_type="application/json", headers=headers)


async def _prepare_images(teacher: Teacher, images: dict[int, str]) -> list:
    """Decode every image concurrently; on failure, report the first bad item in input order."""
    results = await asyncio.gather(
        *(teacher.prepare_image(url, f"input[{i}]") for i, url in images.items()), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results
