"""Deterministic demo data: product models with fault catalogues, hundreds of customers, devices, purchases.

``python -m crm_store.demo_data [--url URL] [--customers N] [--if-empty]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import random
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm_store.db import DEFAULT_DATABASE_URL, session_scope
from crm_store.enums import (
    ApplianceCategory,
    FaultSeverity,
    JourneyStage,
    LotStatus,
    LoyaltyTier,
    RuleAction,
    TicketPriority,
    TicketSource,
    TicketStatus,
)
from crm_store.models import (
    Customer,
    Device,
    FaultDefinition,
    Interaction,
    ProductLot,
    ProductModel,
    Purchase,
    TelemetryRule,
)
from crm_store.repositories.tickets import change_ticket_status, open_ticket

logger = logging.getLogger(__name__)

SERIAL_PREFIX = {
    ApplianceCategory.FRIDGE: "FR",
    ApplianceCategory.WASHING_MACHINE: "WM",
    ApplianceCategory.DISHWASHER: "DW",
    ApplianceCategory.BOILER: "BL",
    ApplianceCategory.AIR_CONDITIONER: "AC",
}

# (code, name, price in cents) per category; the code's digits become the serial prefix digits.
MODELS: dict[ApplianceCategory, list[tuple[str, str, int]]] = {
    ApplianceCategory.FRIDGE: [("FR50", "FrostLine 500", 89900), ("FR70", "FrostLine 700 Smart", 139900)],
    ApplianceCategory.WASHING_MACHINE: [("WM80", "WashPro 8", 64900), ("WM90", "WashPro 9 Steam", 79900)],
    ApplianceCategory.DISHWASHER: [("DW60", "CleanWave 60", 54900), ("DW45", "CleanWave Slim 45", 49900)],
    ApplianceCategory.BOILER: [("BL30", "ThermaCore 30 Combi", 189900), ("BL24", "ThermaCore 24", 159900)],
    ApplianceCategory.AIR_CONDITIONER: [("AC12", "BreezeAir 12k", 74900), ("AC18", "BreezeAir 18k Inverter", 99900)],
}


@dataclass(frozen=True)
class Fault:
    code: str
    title: str
    severity: FaultSeverity
    safety_critical: bool
    needs_technician: bool
    self_help: tuple[str, ...]
    keywords: tuple[str, ...]


W, C, I = FaultSeverity.WARNING, FaultSeverity.CRITICAL, FaultSeverity.INFO

FAULTS: dict[ApplianceCategory, list[Fault]] = {
    ApplianceCategory.FRIDGE: [
        Fault("E01", "Compartment temperature too high", W, False, False,
              ("Check that the door closes fully and the seal is clean.", "Keep the vents at the back free; do not overload the shelves.",
               "Set the thermostat to 4 °C and wait two hours."),
              ("warm", "not cooling", "not cold", "temperature", "spoil", "too hot")),
        Fault("E02", "Door open alarm", I, False, False,
              ("Close the door firmly; the alarm stops within a minute.", "Check nothing blocks the door."),
              ("door open", "beeping", "alarm", "door")),
        Fault("E05", "Defrost heater failure", W, False, True,
              ("Switch the fridge off for 4 hours with the door open to defrost.",),
              ("ice", "frost", "iced", "frozen over")),
        Fault("E09", "Compressor fault", C, False, True,
              ("Move perishable food to a cool place.", "Unplug the fridge for 10 minutes and plug it back in."),
              ("compressor", "clicking", "not running", "humming", "dead")),
        Fault("F10", "Water leak detected", W, False, False,
              ("Check the drain hole at the back of the fridge compartment is not blocked.", "Wipe up the water and check the door seal."),
              ("leak", "water on the floor", "puddle", "dripping")),
    ],
    ApplianceCategory.WASHING_MACHINE: [
        Fault("E21", "Drain pump blocked", W, False, False,
              ("Switch the machine off and unplug it.", "Open the small flap at the bottom front and clean the pump filter (have a towel ready).",
               "Check the drain hose is not kinked."),
              ("not draining", "won't drain", "wont drain", "water left", "drain", "standing water")),
        Fault("E24", "Door lock fault", W, False, False,
              ("Wait two minutes after the programme ends; the lock releases when the drum is empty.", "Switch off and on again."),
              ("door won't open", "door locked", "door stuck", "door", "lock")),
        Fault("E31", "Water inlet problem", W, False, False,
              ("Check the tap is fully open.", "Clean the inlet hose filter.", "Check the hose is not kinked."),
              ("not filling", "no water", "fill", "inlet")),
        Fault("E41", "Unbalanced load", I, False, False,
              ("Redistribute the laundry evenly in the drum.", "Avoid washing a single heavy item alone."),
              ("shaking", "vibrating", "banging", "noisy", "spin", "jumping", "loud")),
        Fault("F05", "Leak detected near electrical parts", C, True, True,
              ("Switch the machine off at the socket if it is safe to do so.", "Turn off the water tap.", "Do not touch the machine with wet hands."),
              ("leak", "leaking", "water on the floor", "flood", "puddle")),
    ],
    ApplianceCategory.DISHWASHER: [
        Fault("E15", "Leak protection triggered", W, False, True,
              ("Switch off and unplug the dishwasher.", "Tilt it slightly forward to drain the base tray.", "Use only dishwasher detergent (no hand soap)."),
              ("leak", "leaking", "water under", "foam", "suds")),
        Fault("E22", "Filter blocked", W, False, False,
              ("Remove and rinse the filter under the tap.", "Check the spray arms turn freely."),
              ("dirty", "not cleaning", "filter", "residue", "smell")),
        Fault("E24", "Drain hose kinked or blocked", W, False, False,
              ("Check the drain hose behind the appliance is not kinked.", "Clean the sink trap the hose drains into."),
              ("not draining", "water at the bottom", "won't drain", "standing water", "drain")),
        Fault("E09", "Heating element fault", W, False, True,
              ("Check the water supply is connected to the cold tap.",),
              ("not drying", "cold", "not heating", "wet dishes")),
    ],
    ApplianceCategory.BOILER: [
        Fault("F22", "Low water pressure", W, False, False,
              ("Check the pressure gauge: it should read 1.0-1.5 bar when cold.", "Open the filling loop slowly until it reads 1.2 bar, then close it.",
               "If pressure keeps dropping, look for leaks on radiators."),
              ("pressure", "losing pressure", "low pressure", "pressure drop")),
        Fault("F28", "Ignition failure", W, False, False,
              ("Check the gas supply to other appliances.", "Press reset once; do not repeat more than twice."),
              ("no hot water", "no heating", "won't ignite", "not igniting", "cold radiators", "ignition")),
        Fault("F75", "Pressure sensor fault", W, False, True,
              ("Note the code and switch the boiler off; a technician must replace the sensor.",),
              ("sensor", "f75")),
        Fault("E99", "Gas or carbon monoxide alarm", C, True, True,
              ("Leave the building now and do not use switches or flames.", "Open windows and doors if you can do so safely.",
               "Call the gas emergency number from outside."),
              ("gas smell", "smell of gas", "carbon monoxide", "co alarm", "gas")),
    ],
    ApplianceCategory.AIR_CONDITIONER: [
        Fault("E01", "Air filter clogged", I, False, False,
              ("Switch off the unit and open the front panel.", "Wash the filters in lukewarm water and let them dry.", "Refit them and restart."),
              ("weak airflow", "filter", "dusty", "not cooling well")),
        Fault("E05", "Refrigerant pressure low", W, False, True,
              ("Keep doors and windows closed while cooling.", "Set the unit to fan only until the technician comes."),
              ("warm air", "not cold", "not cooling", "blowing warm", "hot air")),
        Fault("E07", "Condensate pump fault", W, False, True,
              ("Switch off the unit and place a towel under the indoor unit.",),
              ("dripping", "leaking", "water", "leak")),
        Fault("F12", "Fan motor fault", W, False, True,
              ("Switch off the unit; do not run it with a faulty fan.",),
              ("noisy", "rattling", "fan", "grinding", "loud")),
    ],
}

FIRST = ["Anna", "Ben", "Clara", "David", "Elif", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kiana", "Liam", "Maria",
         "Nadia", "Omar", "Paula", "Quentin", "Rana", "Sven", "Tara", "Uma", "Viktor", "Wei", "Ximena", "Yusuf", "Zoe",
         "Dariush", "Leila", "Mei", "Sofia", "Lukas", "Amira", "Noah", "Emma", "Mateo", "Aylin", "Chen", "Sara"]
LAST = ["Schmidt", "Müller", "Rossi", "García", "Yilmaz", "Rahimi", "Nguyen", "Kowalski", "Tanaka", "Johnson", "Dubois",
        "Haddad", "Karimi", "Zhang", "Silva", "Novak", "Jensen", "O'Brien", "Moreau", "Petrov", "Ali", "Lindqvist"]
CITIES = ["Berlin", "Hamburg", "Munich", "Vienna", "Zurich", "Amsterdam", "Lyon", "Milan", "Madrid", "London"]
LOCATIONS = ["kitchen", "utility room", "basement", "bathroom", "living room", "bedroom", "garage", None]
LANGUAGES = ["en"] * 7 + ["de", "fr", "fa", "ar", "zh"]

# One fixed customer documented in the README, so that a person can try the verification flow.
DEMO_CUSTOMER = {
    "full_name": "Anna Schmidt",
    "email": "anna.schmidt@example.com",
    "orders": ["ORD-2021-000101", "ORD-2023-000102", "ORD-2024-000103"],
    "serials": ["FR50-21000101", "WM80-23000102", "DW60-24000103"],
}


def seed_catalogue(session: Session) -> dict[str, ProductModel]:
    """Product models and their fault catalogues."""
    models: dict[str, ProductModel] = {}
    for category, entries in MODELS.items():
        for code, name, _price in entries:
            model = ProductModel(code=code, name=name, category=category, launched_on=dt.date(2019, 1, 1))
            for fault in FAULTS[category]:
                model.faults.append(
                    FaultDefinition(
                        code=fault.code,
                        title=fault.title,
                        severity=fault.severity,
                        safety_critical=fault.safety_critical,
                        needs_technician=fault.needs_technician,
                        self_help="\n".join(fault.self_help),
                        keywords=", ".join(fault.keywords),
                    )
                )
            session.add(model)
            models[code] = model
    session.flush()
    for model in models.values():
        for fcode, metric, op, threshold, hold, recovery in RULES.get(model.category, []):
            session.add(TelemetryRule(model_id=model.id, fault_code=fcode, metric=metric, operator=op,
                                      threshold=threshold, hold_seconds=hold, recovery_seconds=recovery))
    session.flush()
    return models


# Telemetry rules per category: (fault code, metric, operator, threshold, hold s, recovery s).
# Booleans compare as 1.0/0.0, so "leak sensor wet" is ``eq 1``.
RULES: dict[ApplianceCategory, list[tuple[str, str, str, float, int, int]]] = {
    ApplianceCategory.FRIDGE: [("E01", "compartment_temp_c", "gt", 8.0, 900, 600),
                               ("F10", "leak_sensor_wet", "eq", 1.0, 0, 300)],
    ApplianceCategory.WASHING_MACHINE: [("F05", "leak_sensor_wet", "eq", 1.0, 0, 600)],
    ApplianceCategory.DISHWASHER: [("E15", "leak_sensor_wet", "eq", 1.0, 0, 600)],
    ApplianceCategory.BOILER: [("F22", "pressure_bar", "lt", 0.8, 300, 300),
                               ("E99", "co_ppm", "gt", 50.0, 60, 900)],
    ApplianceCategory.AIR_CONDITIONER: [("E05", "refrigerant_pressure_bar", "lt", 4.0, 600, 600)],
}

# Shipment loggers travel with refrigerated lots; an excursion held for 30 minutes marks the lot.
LOGGER_MODEL = ("CL01", "ColdTrack Shipment Logger")
LOGGER_FAULTS = [
    Fault("X01", "Shipment temperature above range", W, False, False, (), ("too warm",)),
    Fault("X02", "Shipment temperature below range", W, False, False, (), ("too cold",)),
]
LOGGER_RULES = [("X01", "cargo_temp_c", "gt", 8.0, 1800, 1800), ("X02", "cargo_temp_c", "lt", -10.0, 1800, 1800)]


def seed_device_catalogue(session: Session) -> None:
    """Telemetry rules, the shipment-logger model, product lots and their loggers.

    Idempotent, so that a CRM created before device telemetry existed gains them on the next start.
    """
    models = {m.code: m for m in session.scalars(select(ProductModel))}
    if not models:
        return
    if session.scalar(select(func.count(TelemetryRule.id))) == 0:
        for model in models.values():
            for code, metric, op, threshold, hold, recovery in RULES.get(model.category, []):
                session.add(TelemetryRule(model_id=model.id, fault_code=code, metric=metric, operator=op,
                                          threshold=threshold, hold_seconds=hold, recovery_seconds=recovery))
    if LOGGER_MODEL[0] not in models:
        logger_model = ProductModel(code=LOGGER_MODEL[0], name=LOGGER_MODEL[1],
                                    category=ApplianceCategory.COLD_CHAIN_LOGGER, launched_on=dt.date(2024, 1, 1))
        for fault in LOGGER_FAULTS:
            logger_model.faults.append(FaultDefinition(code=fault.code, title=fault.title, severity=fault.severity,
                                                       keywords=", ".join(fault.keywords)))
        session.add(logger_model)
        session.flush()
        for code, metric, op, threshold, hold, recovery in LOGGER_RULES:
            session.add(TelemetryRule(model_id=logger_model.id, fault_code=code, metric=metric, operator=op,
                                      threshold=threshold, hold_seconds=hold, recovery_seconds=recovery,
                                      action=RuleAction.QUARANTINE_LOT))
        # One lot per model and purchase quarter; each lot shipped with its own logger.
        lots: dict[str, ProductLot] = {}
        for purchase in session.scalars(select(Purchase).where(Purchase.lot_id.is_(None)).order_by(Purchase.id)):
            model_code = next(code for code, m in models.items() if m.id == purchase.model_id)
            lot_code = f"LOT-{model_code}-{purchase.purchased_at:%y}Q{(purchase.purchased_at.month - 1) // 3 + 1}"
            if lot_code not in lots:
                lots[lot_code] = ProductLot(code=lot_code, model_id=purchase.model_id, status=LotStatus.OK)
                session.add(lots[lot_code])
                session.flush()
                session.add(Device(serial=f"CL01-{lots[lot_code].id:06d}", model=logger_model,
                                   monitors_lot_id=lots[lot_code].id))
            purchase.lot_id = lots[lot_code].id
    session.flush()


def _at(day: dt.date, rng: random.Random) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(rng.randint(8, 20), rng.randint(0, 59)), tzinfo=dt.timezone.utc)


def generate(session: Session, *, customers: int = 300, seed: int = 7) -> None:
    """Fill an empty CRM with a realistic, reproducible data set."""
    rng = random.Random(seed)
    models = seed_catalogue(session)
    prices = {code: price for entries in MODELS.values() for code, _n, price in entries}
    today = dt.date(2026, 11, 1)
    order_seq = 200
    serial_seq = 200

    def add_purchase(customer: Customer, model: ProductModel, day: dt.date, order: str | None = None,
                     serial: str | None = None) -> Device:
        nonlocal order_seq, serial_seq
        order_seq += 1
        serial_seq += 1
        serial = serial or f"{model.code}-{day:%y}{serial_seq:06d}"
        device = Device(
            serial=serial, model=model, owner=customer, location=rng.choice(LOCATIONS),
            installed_on=day + dt.timedelta(days=rng.randint(1, 14)),
            firmware_version=f"{rng.randint(1, 3)}.{rng.randint(0, 9)}.{rng.randint(0, 20)}",
            last_seen_at=_at(today - dt.timedelta(days=rng.randint(0, 3)), rng),
        )
        session.add(device)
        session.flush()
        session.add(Purchase(
            order_number=order or f"ORD-{day:%Y}-{order_seq:06d}", customer=customer, model_id=model.id,
            device_id=device.id, purchased_at=_at(day, rng), price_cents=prices[model.code],
            sales_channel=rng.choice(["online", "online", "store", "partner"]),
        ))
        session.add(Interaction(customer_id=customer.id, stage=JourneyStage.REGISTER,
                                event="device_registered", channel="web", data={"serial": serial},
                                occurred_at=_at(day, rng)))
        return device

    anna = Customer(full_name=DEMO_CUSTOMER["full_name"], email=DEMO_CUSTOMER["email"], phone="+49 30 1234567",
                    preferred_language="en", loyalty_tier=LoyaltyTier.GOLD, customer_since=dt.date(2021, 3, 14),
                    city="Berlin", timezone="Europe/Berlin")
    session.add(anna)
    session.flush()
    for order, serial, year in zip(DEMO_CUSTOMER["orders"], DEMO_CUSTOMER["serials"], (2021, 2023, 2024)):
        add_purchase(anna, models[serial[:4]], dt.date(year, 3 + year % 5, 14), order=order, serial=serial)

    all_models = list(models.values())
    used_emails = {anna.email}
    for _ in range(customers - 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        base = f"{first}.{last}".lower().replace("'", "").replace("ü", "ue").replace("í", "i")
        email = f"{base}@example.com"
        n = 2
        while email in used_emails:
            email, n = f"{base}{n}@example.com", n + 1
        used_emails.add(email)
        since = today - dt.timedelta(days=rng.randint(30, 8 * 365))
        n_purchases = rng.choices([1, 2, 3, 4, 5], weights=[45, 27, 15, 9, 4])[0]
        tier = (LoyaltyTier.PLATINUM if n_purchases >= 5 else LoyaltyTier.GOLD if n_purchases >= 4
                else LoyaltyTier.SILVER if n_purchases >= 2 and rng.random() < 0.6 else LoyaltyTier.STANDARD)
        customer = Customer(
            full_name=f"{first} {last}", email=email, phone=f"+49 {rng.randint(100, 999)} {rng.randint(100000, 9999999)}",
            preferred_language=rng.choice(LANGUAGES), loyalty_tier=tier, customer_since=since,
            city=rng.choice(CITIES), consent_proactive=rng.random() < 0.9, consent_marketing=rng.random() < 0.4,
            quiet_hours_start=dt.time(22, 0) if rng.random() < 0.5 else None,
            quiet_hours_end=dt.time(7, 0),
        )
        session.add(customer)
        session.flush()
        for _ in range(n_purchases):
            day = since + dt.timedelta(days=rng.randint(0, max(1, (today - since).days)))
            add_purchase(customer, rng.choice(all_models), day)
    session.flush()

    # Ticket history: mostly resolved, some still open.
    devices = list(session.scalars(select(Device).order_by(Device.id)))
    for device in rng.sample(devices, k=min(len(devices), customers // 3)):
        fault = rng.choice(device.model.faults)
        ticket, _ = open_ticket(
            session, customer_id=device.customer_id, device_id=device.id,
            source=rng.choice([TicketSource.CHAT, TicketSource.DEVICE, TicketSource.AGENT]),
            category=fault.code, title=f"{fault.title} ({device.model.name})", dedup_key=f"fault:{fault.code}",
            author="demo-data", description=f"{fault.title} reported.", fault_code=fault.code,
            priority=TicketPriority.HIGH if fault.severity is FaultSeverity.CRITICAL else TicketPriority.NORMAL,
        )
        created = _at(today - dt.timedelta(days=rng.randint(1, 400)), rng)
        ticket.created_at = created
        if rng.random() < 0.8:
            change_ticket_status(session, ticket=ticket, status=TicketStatus.RESOLVED, author="demo-data",
                                 note="Fixed by technician visit.")
            ticket.resolved_at = created + dt.timedelta(days=rng.randint(1, 10))
        elif rng.random() < 0.5:
            change_ticket_status(session, ticket=ticket, status=TicketStatus.IN_PROGRESS, author="demo-data",
                                 note="Technician visit being scheduled.")
    session.flush()
    seed_device_catalogue(session)


def is_empty(session: Session) -> bool:
    return (session.scalar(select(func.count(Customer.id))) or 0) == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--if-empty", action="store_true", help="do nothing when customers exist")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("crm_store.repositories").setLevel(logging.WARNING)  # one line per demo ticket is noise
    with session_scope(args.url) as session:
        if not is_empty(session):
            if args.if_empty:
                seed_device_catalogue(session)
                logger.info("demo data already present; nothing to do")
                return
            raise SystemExit("the CRM already has customers; demo data is only loaded into an empty database")
        generate(session, customers=args.customers)
        logger.info("loaded demo data: %d customers", args.customers)


if __name__ == "__main__":
    main()
