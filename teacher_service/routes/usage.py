"""`GET /v1/usage`: the caller's own balance, spend and counts."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from common.schema import API_PREFIX, UsageReport, error_responses

from ..billing import NANOS
from ..deps import AccountDep, StateDep

router = APIRouter(prefix=API_PREFIX, tags=["usage"])


@router.get("/usage", response_model=UsageReport, responses=error_responses(401))
async def usage(state: StateDep, account: AccountDep) -> UsageReport:
    """Balance and spend of the key that asks; no key can see another's."""
    totals = await asyncio.to_thread(state.store.usage, account)
    return UsageReport(
        key=account.name,
        balance=totals.balance / NANOS,
        spent=totals.spent / NANOS,
        images=totals.images,
        texts=totals.texts,
        tokens=totals.tokens,
        requests=totals.requests,
        currency=state.settings.currency,
    )
