"""Customers and their 360° view (profile, devices, purchases, tickets)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, Query, status

from crm_store.repositories.customers import get_customer, list_customers
from crm_store.repositories.devices import list_devices_for_customer
from crm_store.repositories.tickets import list_tickets
from web_service import errors
from web_service.deps import SessionDep, StaffUser
from web_service.routes.privacy import audit
from web_service.settings import WebSettings, get_settings
from web_service.schemas import Customer360, CustomerPublic, DevicePublic, PurchasePublic, TicketPublic

router = APIRouter(prefix="/api/customers", tags=["customers"])
Settings = Annotated[WebSettings, Depends(get_settings)]


@router.get("", response_model=list[CustomerPublic])
def read_customers(
    session: SessionDep,
    _user: StaffUser,
    q: Annotated[str | None, Query(max_length=100)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[CustomerPublic]:
    return [CustomerPublic.model_validate(c) for c in list_customers(session, offset=offset, limit=limit, query=q)]


@router.get("/{customer_id}", response_model=Customer360)
def read_customer(customer_id: int, session: SessionDep, user: StaffUser, settings: Settings,
                  background: BackgroundTasks) -> Customer360:
    """The customer's 360° view; every read is recorded in the access audit (who, when, which customer)."""
    customer = get_customer(session, customer_id=customer_id)
    if customer is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, errors.CUSTOMER_NOT_FOUND)
    # Written right after the answer, in a unit of work of its own: a read never waits for SQLite's write lock.
    background.add_task(audit, settings, actor=user.username, action="view_360", customer_id=customer_id)
    return Customer360(
        customer=CustomerPublic.model_validate(customer),
        devices=[DevicePublic.model_validate(d) for d in list_devices_for_customer(session, customer_id=customer_id)],
        purchases=[PurchasePublic.model_validate(p) for p in customer.purchases],
        tickets=[TicketPublic.model_validate(t) for t in list_tickets(session, customer_id=customer_id, limit=200)],
    )
