"""Request dependencies: the service state, the authenticated account, the loaded teacher."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .billing import Account
from .errors import Unauthorized
from .runtime import ServiceState, Teacher

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


def get_account(
    request: Request,
    state: Annotated[ServiceState, Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Account:
    """The caller named by `Authorization: Bearer <key>`; 401 for a missing, malformed or unknown key."""
    if credentials is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    account = state.store.authenticate(credentials.credentials)
    if account is None:
        raise Unauthorized("invalid API key")
    request.state.account = account
    return account


def get_teacher(state: Annotated[ServiceState, Depends(get_state)]) -> Teacher:
    """The loaded teacher; 503 while the model loads or after it failed to."""
    return state.require_teacher()


StateDep = Annotated[ServiceState, Depends(get_state)]
AccountDep = Annotated[Account, Depends(get_account)]
TeacherDep = Annotated[Teacher, Depends(get_teacher)]
