"""`POST /v1/embeddings`: cheap checks first, then parse, count, charge-check, decode, embed, charge, answer.

Order of work, each step refusing before the next one's cost is paid:
1. the key (401), the model being loaded (503), the billing database being there (503), the request rate (429),
   and a balance that cannot pay for anything (402; a replay, which is free, still passes);
2. the body, read with a size cap (413) and a deadline (408), parsed and validated on a worker thread (400);
3. a replay of an idempotency key is answered here, free (it counted against the request rate above);
4. the image rate (429); texts counted on a worker thread (400); the exact price against the balance (402);
5. every image's data URL and header (400 naming the first bad item), before any image is decoded;
6. decoding and embedding; the charge, its ledger row and the replay record in one transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from common.schema import (
    API_PREFIX,
    BALANCE_HEADER,
    COST_HEADER,
    IDEMPOTENCY_HEADER,
    REPLAYED_HEADER,
    REQUEST_ID_HEADER,
    EmbeddingRequest,
    EmbeddingResponse,
    ImageInput,
    decode_vector,
    encode_vector,
    error_responses,
)

from ..batcher import Ticket
from ..billing import NANOS, Account, Charge, StoredResponse, check_affordable, replica_name, to_nanos
from ..deps import AccountDep, StateDep, TeacherDep
from ..errors import InvalidInput, InvalidRequest, NotFound, PayloadTooLarge, RequestTimeout, invalid_body
from ..faults import cut_off
from ..runtime import ServiceState, Teacher

router = APIRouter(prefix=API_PREFIX, tags=["embeddings"])

SMALL_BODY = 64 << 10  # bytes; larger bodies are parsed on a thread, one at a time
_ERRORS = error_responses(400, 401, 402, 404, 408, 409, 413, 422, 429, 503)
# The body is read and parsed by the route itself (capped, with a deadline, off the event loop), so its schema
# is declared here for the OpenAPI document rather than inferred from a parameter.
_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EmbeddingRequest"}}},
    }
}


@router.post("/embeddings", response_model=EmbeddingResponse, responses=_ERRORS, openapi_extra=_BODY)
async def create_embeddings(
    request: Request,
    state: StateDep,
    account: AccountDep,
    teacher: TeacherDep,
    idempotency_key: Annotated[str | None, Header(alias=IDEMPOTENCY_HEADER, max_length=255)] = None,
) -> Response:
    """Embed texts and images; L2-normalised vectors in input order. Charged only when it succeeds."""
    # These checks are a stat() and one indexed read: done inline, since every hop to a thread is a wait for the
    # GIL when another request's large body is being parsed.
    store = state.store
    store.check_present()
    headers = state.limiter.check(account.id, images=0)  # every request counts, replays included
    balance, replay = store.standing(account, idempotency_key)
    if not replay:
        check_affordable(_cheapest_charge(state), balance)
    await state.faults.before_work()
    body = await _parse(request, state)
    # From here on the request may bring images: the next image batch waits for them (up to --batch-admit-ms), so
    # requests that arrived together share one model call instead of trickling into several small ones.
    with teacher.images.admission() as ticket:
        if idempotency_key is None:
            texts, images = _split_inputs(body, teacher, state)
            return await _embed_and_charge(
                body, texts, images, request, state, account, teacher, headers, ticket, idempotency=None
            )

        # A stored answer is replayed before anything else is checked: what was charged is always delivered, even
        # after the model was renamed or a limit lowered.
        body_hash = request_digest(body, teacher.encoder.info.fingerprint)
        owner = f"{replica_name()}/{request.state.request_id}"  # which replica holds the key, for operators
        stored = store.claim(account, idempotency_key, body_hash, owner)
        if stored is not None:
            return _replay(stored, body, headers)
        try:
            texts, images = _split_inputs(body, teacher, state)
            return await _embed_and_charge(
                body, texts, images, request, state, account, teacher, headers, ticket, (idempotency_key, body_hash)
            )
        except BaseException:  # failed or cancelled before charging: the key is free again (a charge completes it)
            store.release(account, idempotency_key, owner)
            raise


def _replay(stored: StoredResponse, body: EmbeddingRequest, headers: dict[str, str]) -> Response:
    """A completed answer again, free."""
    replay = {**stored.headers, **headers, REPLAYED_HEADER: "true", COST_HEADER: "0"}
    content = _as_requested(stored.body, body)
    return Response(content, status_code=stored.status, media_type="application/json", headers=replay)


def request_digest(body: EmbeddingRequest, fingerprint: str) -> str:
    """What an idempotency key is bound to: the inputs, in order, and the weights that embed them. Not the
    served name, the encoding or `user`: renaming the model or asking for base64 does not change the bill."""
    digest = hashlib.sha256(f"v1:{fingerprint}".encode())
    for item in body.items():
        kind, content = ("image", item.image) if isinstance(item, ImageInput) else ("text", _text(item))
        digest.update(f"\n{kind}:{len(content)}:".encode())
        digest.update(content.encode())
    return digest.hexdigest()


def _as_requested(stored: bytes, body: EmbeddingRequest) -> bytes:
    """A stored answer in the encoding this retry asked for, under the name it used (usually the same: as is)."""
    answer = json.loads(stored)
    rows = answer["data"]
    encoding = "base64" if rows and isinstance(rows[0]["embedding"], str) else "float"
    if answer["model"] == body.model and encoding == body.encoding_format:
        return stored
    answer["model"] = body.model
    for row in rows:
        row["embedding"] = encode_vector(decode_vector(row["embedding"]), body.encoding_format)
    return json.dumps(answer).encode()


def _cheapest_charge(state: ServiceState) -> int:
    """The least any request can cost (one token or one image): a balance below it can buy nothing."""
    settings = state.settings
    return min(to_nanos(settings.price_per_image), (to_nanos(settings.price_per_1k_tokens) + 500) // 1000)


async def _parse(request: Request, state: ServiceState) -> EmbeddingRequest:
    """The body, read within the deadline and the size cap, then parsed and validated on a worker thread."""
    max_bytes, timeout_s = state.settings.max_request_bytes, state.settings.body_timeout_s

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        raw = await asyncio.wait_for(read(), timeout_s)
    except asyncio.TimeoutError:  # noqa: UP041 (distinct from TimeoutError before 3.11)
        raise RequestTimeout(f"the request body did not arrive within {timeout_s:g}s") from None
    except ClientDisconnect:
        raise InvalidRequest("the client disconnected before its body arrived", code="client_disconnected") from None
    try:
        if len(raw) <= SMALL_BODY:
            return EmbeddingRequest.model_validate_json(raw)  # microseconds: not worth a thread
        # Parsing holds the GIL whatever thread does it: one large body at a time, off the event loop, so however
        # many a client sends, another client's request waits for at most one of them.
        async with state.large_bodies:
            return await asyncio.to_thread(EmbeddingRequest.model_validate_json, raw)
    except ValidationError as e:
        raise invalid_body(e.errors()) from None


def _text(item: object) -> str:
    return item if isinstance(item, str) else item.text  # type: ignore[attr-defined]


def _split_inputs(
    body: EmbeddingRequest, teacher: Teacher, state: ServiceState
) -> tuple[dict[int, str], dict[int, str]]:
    """Check the request as a whole and each text's length: texts {index: text}, images {index: data URL}."""
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
    texts: dict[int, str] = {}
    images: dict[int, str] = {}
    for i, item in enumerate(items):
        if isinstance(item, ImageInput):
            images[i] = item.image
            continue
        text = _text(item)
        if not text.strip():
            raise InvalidInput("text is empty", param=f"input[{i}]")
        if len(text) > settings.max_text_chars:
            raise InvalidInput(
                f"text has {len(text)} characters; at most {settings.max_text_chars}",
                param=f"input[{i}]",
                code="text_too_long",
            )
        texts[i] = text
    return texts, images


async def _count_tokens(teacher: Teacher, texts: dict[int, str]) -> int:
    """The billed tokens of every text, on a worker thread; stops at the first text the model cannot read."""
    limit = teacher.encoder.info.context_length - 2  # the start and end markers
    counted = await teacher.count_tokens(list(texts.values()), limit)
    if isinstance(counted, tuple):
        position, tokens = counted
        raise InvalidInput(
            f"text has {tokens} tokens; the model reads at most {limit}",
            param=f"input[{list(texts)[position]}]",
            code="text_too_long",
        )
    return counted


async def _embed_and_charge(
    body: EmbeddingRequest,
    texts: dict[int, str],
    images: dict[int, str],
    request: Request,
    state: ServiceState,
    account: Account,
    teacher: Teacher,
    headers: dict[str, str],
    ticket: Ticket,
    idempotency: tuple[str, str] | None,
) -> Response:
    settings = state.settings
    request_id = request.state.request_id
    if images:
        headers = state.limiter.check(account.id, len(images), requests=0)
    tokens = await _count_tokens(teacher, texts)
    charge = Charge(
        images=len(images),
        texts=len(texts),
        tokens=tokens,
        cost=len(images) * to_nanos(settings.price_per_image)
        + (tokens * to_nanos(settings.price_per_1k_tokens) + 500) // 1000,
    )
    check_affordable(charge.cost, state.store.balance(account))

    if not images:
        ticket.withdraw()
    pixels = await teacher.prepare_images(await teacher.read_headers(images))
    image_vectors, text_vectors = await asyncio.gather(
        teacher.images.submit(pixels, ticket), teacher.embed_texts(list(texts.values()))
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
    charged = await asyncio.to_thread(
        state.store.charge,
        account,
        request_id,
        charge,
        idempotency=idempotency,
        response=StoredResponse(200, replay_headers, content) if idempotency else None,
    )
    if charged.replay is not None:  # another replica completed this key first: its answer, and no charge
        return _replay(charged.replay, body, headers)
    state.metrics.images.inc(charge.images)
    state.metrics.texts.inc(charge.texts)
    headers = headers | {
        COST_HEADER: f"{charge.cost / NANOS:.9f}",
        BALANCE_HEADER: f"{charged.balance / NANOS:.9f}",
        REQUEST_ID_HEADER: request_id,
    }
    if state.faults.drop_after_charge():
        return StreamingResponse(cut_off(content), media_type="application/json", headers=headers)
    return Response(content, media_type="application/json", headers=headers)
