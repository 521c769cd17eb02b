"""`GET /v1/models`: what the service serves, and at what price."""

from __future__ import annotations

from fastapi import APIRouter

from common.schema import API_PREFIX, ModelCard, ModelList, Pricing, error_responses

from ..deps import AccountDep, StateDep, TeacherDep

router = APIRouter(prefix=API_PREFIX, tags=["models"])


@router.get("/models", response_model=ModelList, responses=error_responses(401, 503))
def list_models(state: StateDep, teacher: TeacherDep, _: AccountDep) -> ModelList:
    """The served model: id, embedding dim, image size, logit scale, preprocessing, fingerprint, prices."""
    info, settings = teacher.encoder.info, state.settings
    card = ModelCard(
        id=settings.served_model_id or info.architecture,
        architecture=info.architecture,
        pretrained=info.pretrained,
        fingerprint=info.fingerprint,
        embedding_dim=info.embedding_dim,
        image_size=list(info.image_size),
        context_length=info.context_length,
        logit_scale=info.logit_scale,
        preprocess=info.preprocess,
        precision=info.precision,
        pricing=Pricing(
            per_image=settings.price_per_image,
            per_1k_tokens=settings.price_per_1k_tokens,
            currency=settings.currency,
        ),
        idempotency_ttl_s=settings.idempotency_ttl_s,
    )
    return ModelList(data=[card])
