"""Registered devices."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from crm_store.repositories.devices import get_device_by_serial, list_devices
from web_service import errors
from web_service.deps import SessionDep, StaffUser
from web_service.schemas import DevicePublic

router = APIRouter(prefix="/api/devices", tags=["devices"])


@router.get("", response_model=list[DevicePublic])
def read_devices(
    session: SessionDep,
    _user: StaffUser,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[DevicePublic]:
    return [DevicePublic.model_validate(d) for d in list_devices(session, offset=offset, limit=limit)]


@router.get("/{serial}", response_model=DevicePublic)
def read_device(serial: str, session: SessionDep, _user: StaffUser) -> DevicePublic:
    device = get_device_by_serial(session, serial=serial)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, errors.DEVICE_NOT_FOUND)
    return DevicePublic.model_validate(device)
