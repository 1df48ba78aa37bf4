"""The customer's appliances."""

from __future__ import annotations

from sqlalchemy.orm import Session

from crm_store.enums import ApplianceCategory
from crm_store.models import Device
from crm_store.repositories.customers import CustomerProfile
from crm_store.repositories.devices import list_devices_for_customer
from crm_store.repositories.tickets import list_tickets


def device_line(device: Device) -> str:
    installed = f", installed {device.installed_on:%b %Y}" if device.installed_on else ""
    return f"- {sentence_case(device.label)}, serial {device.serial}{installed}"


def sentence_case(text: str) -> str:
    """Upper-cases the first letter only (``str.capitalize`` would lower-case model names)."""
    return text[:1].upper() + text[1:]


def describe_devices(session: Session, customer: CustomerProfile) -> str:
    """A reply listing the customer's registered devices and which of them have open tickets."""
    devices = list_devices_for_customer(session, customer_id=customer.id)
    if not devices:
        return (
            "I don't see any appliances registered to you yet. You can register one with the serial number "
            "from its rating plate on our website."
        )
    open_by_device = {t.device_id for t in list_tickets(session, customer_id=customer.id, only_open=True)}
    lines = []
    for device in devices:
        line = device_line(device)
        if device.id in open_by_device:
            line += " (open ticket)"
        lines.append(line)
    noun = "appliance" if len(devices) == 1 else "appliances"
    return f"You have {len(devices)} {noun} registered with us:\n" + "\n".join(lines)


def parse_category(value: object) -> ApplianceCategory | None:
    """The appliance category named by an entity value such as ``washing_machine``."""
    try:
        return ApplianceCategory(str(value).strip().lower().replace(" ", "_"))
    except ValueError:
        return None
