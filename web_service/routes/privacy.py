"""Privacy: a customer's data exported and erased, consent with its history, the staff access audit.

Exports and erasures need the ``privacy`` (or ``admin``) role; every export is recorded in the access
audit. An erasure answers 202 with its request at once and runs in the background (resumable: the web
service's privacy job finishes one whose runner died); asking again returns the same request.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, Path, Query, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from crm_store.db import session_scope
from crm_store.enums import UserRole
from crm_store.models import User
from crm_store.repositories.customers import get_customer
from crm_store.repositories.erasure import erasure_public, get_erasure, request_erasure, run_erasure
from crm_store.repositories.privacy import consent_history, current_consent, export_customer, list_access, record_access, set_consent
from crm_store.retention import RetentionSettings
from web_service import errors
from web_service.deps import STAFF, SessionDep, require_roles
from web_service.privacy_jobs import erasure_hooks, tracker_for
from web_service.settings import WebSettings, get_settings

router = APIRouter(tags=["privacy"])
PrivacyUser = Annotated[User, Depends(require_roles(UserRole.PRIVACY, UserRole.ADMIN))]
ConsentUser = Annotated[User, Depends(require_roles(*STAFF, UserRole.PRIVACY))]
Settings = Annotated[WebSettings, Depends(get_settings)]
ERASURE_NOT_FOUND = "Erasure request not found"


class ErasurePublic(BaseModel):
    """An erasure request and its audit record: who asked, when, per store whether it is done and how many rows."""

    id: int
    customer_id: int
    requested_by: str
    source: str
    status: Literal["pending", "running", "done"]
    created_at: dt.datetime
    completed_at: dt.datetime | None
    runs: int
    steps: dict[str, dict[str, Any]]


class ConsentEventPublic(BaseModel):
    kind: str
    granted: bool
    source: str
    actor: str
    at: dt.datetime


class ConsentPublic(BaseModel):
    customer_id: int
    consent: dict[str, bool]
    history: list[ConsentEventPublic]


class ConsentUpdate(BaseModel):
    """Consent to change (omitted kinds stay as they are) and where the change was made."""

    telemetry: bool | None = None
    proactive: bool | None = None
    marketing: bool | None = None
    source: Literal["api", "console"] = "api"


class AccessPublic(BaseModel):
    actor: str
    action: str
    customer_id: int | None
    created_at: dt.datetime


def audit(settings: WebSettings, *, actor: str, action: str, customer_id: int | None) -> None:
    """Records a staff access in a unit of work of its own (the request's session may be read-only)."""
    with session_scope(settings.database_url) as session:
        record_access(session, actor=actor, action=action, customer_id=customer_id)


@router.get("/api/customers/{customer_id}/export", responses={404: {"description": errors.CUSTOMER_NOT_FOUND}})
def export(customer_id: int, session: SessionDep, user: PrivacyUser, settings: Settings) -> JSONResponse:
    """Everything held about the customer as one JSON archive (schema ``crm-customer-export/1``, see
    crm_store.repositories.privacy). Recorded in the access audit."""
    retention = RetentionSettings().raw_telemetry_days
    doc = export_customer(session, customer_id=customer_id, tracker=tracker_for(settings),
                          telemetry_retention=dt.timedelta(days=retention) if retention > 0 else None)
    if doc is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, errors.CUSTOMER_NOT_FOUND)
    audit(settings, actor=user.username, action="export", customer_id=customer_id)
    return JSONResponse(jsonable(doc), headers={"Content-Disposition": f'attachment; filename="customer-{customer_id}.json"',
                                                "Cache-Control": "no-store"})


def jsonable(doc: Any) -> Any:
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(doc)


@router.delete("/api/customers/{customer_id}", status_code=status.HTTP_202_ACCEPTED, response_model=ErasurePublic,
               responses={404: {"description": errors.CUSTOMER_NOT_FOUND}})
def erase(customer_id: int, session: SessionDep, user: PrivacyUser, settings: Settings,
          background: BackgroundTasks) -> ErasurePublic:
    """Right to erasure: 202 with the erasure request, which runs in the background. Idempotent: asking
    again (even after the customer is gone) returns the same request."""
    from crm_store.repositories.erasure import get_erasure_for_customer

    existing = get_erasure_for_customer(session, customer_id=customer_id)
    if existing is None and get_customer(session, customer_id=customer_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, errors.CUSTOMER_NOT_FOUND)
    req, created = request_erasure(session, customer_id=customer_id, requested_by=user.username, source="api")
    if created:
        record_access(session, actor=user.username, action="erase", customer_id=customer_id)
    session.commit()
    if req.status != "done":
        background.add_task(run_erasure, settings.database_url, req.id, **erasure_hooks(settings))
    return ErasurePublic(**erasure_public(req))


@router.get("/api/erasures/{request_id}", response_model=ErasurePublic)
def read_erasure(request_id: Annotated[int, Path(ge=1, le=2**63 - 1)], session: SessionDep,
                 _user: PrivacyUser) -> ErasurePublic:
    req = get_erasure(session, request_id=request_id)
    if req is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, ERASURE_NOT_FOUND)
    return ErasurePublic(**erasure_public(req))


def _consent(session: Any, customer_id: int) -> ConsentPublic:
    customer = get_customer(session, customer_id=customer_id)
    if customer is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, errors.CUSTOMER_NOT_FOUND)
    return ConsentPublic(customer_id=customer_id, consent=current_consent(customer), history=[
        ConsentEventPublic(kind=e.kind, granted=e.granted, source=e.source, actor=e.actor, at=e.created_at)
        for e in consent_history(session, customer_id=customer_id)])


@router.get("/api/customers/{customer_id}/consent", response_model=ConsentPublic)
def read_consent(customer_id: int, session: SessionDep, _user: ConsentUser) -> ConsentPublic:
    """Current consent (telemetry, proactive, marketing) and every change with time, source and actor."""
    return _consent(session, customer_id)


@router.put("/api/customers/{customer_id}/consent", response_model=ConsentPublic)
def update_consent(customer_id: int, body: ConsentUpdate, session: SessionDep, user: ConsentUser) -> ConsentPublic:
    """Changes consent; each real change is recorded. A revoked telemetry consent refuses the customer's
    devices' next messages (``no_consent``) within the device worker's cache period (≤ 5 s)."""
    customer = get_customer(session, customer_id=customer_id)
    if customer is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, errors.CUSTOMER_NOT_FOUND)
    changes = {k: v for k, v in body.model_dump(exclude={"source"}).items() if v is not None}
    events = set_consent(session, customer=customer, changes=changes, source=body.source, actor=user.username)
    if events:
        record_access(session, actor=user.username, action="consent", customer_id=customer_id)
    session.commit()
    return _consent(session, customer_id)


@router.get("/api/privacy/access-audit", response_model=list[AccessPublic])
def read_access_audit(session: SessionDep, _user: PrivacyUser, customer_id: int | None = None,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[AccessPublic]:
    """Staff reads of 360 views, exports, erasures and consent changes, newest first."""
    return [AccessPublic(actor=a.actor, action=a.action, customer_id=a.customer_id, created_at=a.created_at)
            for a in list_access(session, customer_id=customer_id, limit=limit)]
