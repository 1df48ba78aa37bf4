"""Lock-outs of sign-in and chat verification: supervisors see them and lift them."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from crm_store.repositories.lockouts import SIGN_IN, SIGN_IN_CLIENT, VERIFY_CLIENT, VERIFY_IDENTITY, lift_lockout, list_lockouts
from web_service import errors
from web_service.deps import SessionDep, SupervisorUser

router = APIRouter(prefix="/api/lockouts", tags=["lockouts"])
Scope = Literal["sign_in", "sign_in_client", "verify_identity", "verify_client"]
assert set(Scope.__args__) == {SIGN_IN, SIGN_IN_CLIENT, VERIFY_IDENTITY, VERIFY_CLIENT}  # type: ignore[attr-defined]


class LockoutPublic(BaseModel):
    """A locked key: which kind, a hash of the key (never the key), its failures and the lock's end."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    scope: str
    key_hash: str
    failures: int
    last_failure_at: dt.datetime
    locked_until: dt.datetime | None


class LockoutLift(BaseModel):
    """Lift the lock of a known key: a user name, an e-mail address or a client address."""

    scope: Scope
    key: str = Field(min_length=1, max_length=320)


@router.get("", response_model=list[LockoutPublic])
def read_lockouts(session: SessionDep, _user: SupervisorUser) -> list[LockoutPublic]:
    """Keys locked now, longest lock first."""
    return [LockoutPublic.model_validate(row) for row in list_lockouts(session)]


@router.delete("/{lockout_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_lockout(lockout_id: int, session: SessionDep, _user: SupervisorUser) -> None:
    if not lift_lockout(session, lockout_id=lockout_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, errors.LOCKOUT_NOT_FOUND)
    session.commit()


@router.post("/lift", status_code=status.HTTP_204_NO_CONTENT)
def lift_by_key(body: LockoutLift, session: SessionDep, _user: SupervisorUser) -> None:
    """Lift by the key itself (e.g. the customer's e-mail after they called in)."""
    if not lift_lockout(session, scope=body.scope, key=body.key):
        raise HTTPException(status.HTTP_404_NOT_FOUND, errors.LOCKOUT_NOT_FOUND)
    session.commit()
