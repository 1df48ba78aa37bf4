"""Devices' secrets as the CRM keeps them: only hashes (``device_hooks.broker`` makes the tokens and the
hashes; this module stores and finds them)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.models import Device, DeviceCredential, utcnow


def store_credential(session: Session, *, device_id: int, token_sha256: str, mqtt_password_hash: str) -> DeviceCredential:
    """Sets the device's current secret (hex SHA-256 of the token for the HTTP API, Mosquitto's PBKDF2
    form for the broker), replacing and un-revoking any earlier one; ``created_at`` is now. Flushed in the
    caller's transaction (``sqlalchemy.exc.IntegrityError`` if there is no device ``device_id``)."""
    credential = session.get(DeviceCredential, device_id)
    if credential is None:
        credential = DeviceCredential(device_id=device_id)
        session.add(credential)
    credential.token_sha256 = token_sha256
    credential.mqtt_password_hash = mqtt_password_hash
    credential.created_at, credential.revoked_at = utcnow(), None
    session.flush()
    return credential


def active_credential(session: Session, *, serial: str) -> tuple[Device, str] | None:
    """``(device, token_sha256)`` of the device with this exact serial if it has an unrevoked secret;
    None otherwise. The caller compares the digest in constant time."""
    row = session.execute(
        select(Device, DeviceCredential)
        .join(DeviceCredential, DeviceCredential.device_id == Device.id)
        .where(Device.serial == serial, DeviceCredential.revoked_at.is_(None))
    ).first()
    return None if row is None else (row.Device, row.DeviceCredential.token_sha256)


def devices_without_credential(session: Session) -> list[Device]:
    """Devices that have never been given a secret, in id order (a revoked one still counts as given)."""
    stmt = select(Device).outerjoin(DeviceCredential).where(DeviceCredential.device_id.is_(None)).order_by(Device.id)
    return list(session.scalars(stmt))


def broker_passwords(session: Session) -> list[tuple[str, str]]:
    """``(serial, Mosquitto password hash)`` of every device with an unrevoked secret, by serial: the
    lines of the broker's password file."""
    rows = session.execute(
        select(Device.serial, DeviceCredential.mqtt_password_hash)
        .join(DeviceCredential, DeviceCredential.device_id == Device.id)
        .where(DeviceCredential.revoked_at.is_(None))
        .order_by(Device.serial)
    )
    return [(serial, pw_hash) for serial, pw_hash in rows]
