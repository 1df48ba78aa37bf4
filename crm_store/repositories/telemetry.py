"""What the devices said: latest readings, health of a device, metric names for people."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.enums import DeviceMessageKind
from crm_store.models import Device, DeviceMessage, Ticket, utcnow
from crm_store.repositories.tickets import list_tickets

# metric -> (how the bot names it, unit). Unknown metrics are shown with their raw name.
METRICS: dict[str, tuple[str, str]] = {
    "compartment_temp_c": ("fridge compartment", "°C"),
    "freezer_temp_c": ("freezer", "°C"),
    "door_open": ("door open", ""),
    "leak_sensor_wet": ("leak sensor wet", ""),
    "drum_rpm": ("drum speed", "rpm"),
    "water_temp_c": ("water temperature", "°C"),
    "pressure_bar": ("water pressure", "bar"),
    "flow_temp_c": ("flow temperature", "°C"),
    "co_ppm": ("carbon monoxide", "ppm"),
    "room_temp_c": ("room temperature", "°C"),
    "refrigerant_pressure_bar": ("refrigerant pressure", "bar"),
    "power_w": ("power use", "W"),
    "cargo_temp_c": ("cargo temperature", "°C"),
}

# A device that has not reported for this long is shown as offline.
OFFLINE_AFTER = dt.timedelta(minutes=15)


def describe_reading(metric: str, value: object) -> str:
    """``("pressure_bar", 1.2)`` → ``"water pressure 1.2 bar"``; booleans as yes/no."""
    label, unit = METRICS.get(metric, (metric.replace("_", " "), ""))
    if isinstance(value, bool):
        return f"{label}: {'yes' if value else 'no'}"
    if isinstance(value, float):
        value = round(value, 1)
    return f"{label} {value} {unit}".rstrip()


def latest_message(session: Session, *, device_id: int, kind: DeviceMessageKind = DeviceMessageKind.TELEMETRY) -> DeviceMessage | None:
    """The device's most recent message of that kind (by the device's own timestamp)."""
    stmt = (
        select(DeviceMessage)
        .where(DeviceMessage.device_id == device_id, DeviceMessage.kind == kind)
        .order_by(DeviceMessage.ts.desc(), DeviceMessage.id.desc())
        .limit(1)
    )
    return session.scalar(stmt)


def telemetry_series(session: Session, *, device_id: int, since: dt.datetime, limit: int = 500) -> list[DeviceMessage]:
    """Telemetry of one device since a time, oldest first (for charts)."""
    stmt = (
        select(DeviceMessage)
        .where(DeviceMessage.device_id == device_id, DeviceMessage.kind == DeviceMessageKind.TELEMETRY, DeviceMessage.ts >= since)
        .order_by(DeviceMessage.ts.desc())
        .limit(limit)
    )
    return list(reversed(list(session.scalars(stmt))))


@dataclass
class DeviceHealth:
    """A device's latest readings, whether it is online, and its open tickets."""

    device: Device
    readings: dict[str, object] = field(default_factory=dict)
    reported_at: dt.datetime | None = None
    online: bool = False
    open_tickets: list[Ticket] = field(default_factory=list)

    @property
    def has_telemetry(self) -> bool:
        return self.reported_at is not None


def device_health(session: Session, device: Device, *, now: dt.datetime | None = None) -> DeviceHealth:
    now = now or utcnow()
    latest = latest_message(session, device_id=device.id)
    health = DeviceHealth(device=device, open_tickets=list_tickets(session, device_id=device.id, only_open=True))
    if latest is not None:
        health.readings = dict(latest.body.get("readings", {}))
        health.reported_at = latest.ts
    seen = device.last_seen_at or health.reported_at
    health.online = seen is not None and now - seen <= OFFLINE_AFTER
    return health
