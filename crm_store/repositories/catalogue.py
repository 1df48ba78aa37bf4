"""The fault catalogue: what a device's fault code or a customer's symptom means."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm_store.models import FaultDefinition, TelemetryRule

ERROR_CODE_RE = re.compile(r"\b([EF])\s?-?(\d{2})\b", re.IGNORECASE)


def get_fault(session: Session, *, model_id: int, code: str) -> FaultDefinition | None:
    return session.scalar(
        select(FaultDefinition).where(
            FaultDefinition.model_id == model_id, func.upper(FaultDefinition.code) == code.strip().upper()
        )
    )


def list_faults(session: Session, *, model_id: int) -> list[FaultDefinition]:
    return list(
        session.scalars(select(FaultDefinition).where(FaultDefinition.model_id == model_id).order_by(FaultDefinition.code))
    )


def match_fault(session: Session, *, model_id: int, text: str) -> FaultDefinition | None:
    """The catalogue entry that best fits a customer's description of a problem, or None.

    An error code quoted by the customer wins; otherwise the entry with the most keyword hits.
    """
    for letter, digits in ERROR_CODE_RE.findall(text):
        fault = get_fault(session, model_id=model_id, code=f"{letter.upper()}{digits}")
        if fault is not None:
            return fault
    lowered = text.lower()
    best: FaultDefinition | None = None
    best_hits = 0
    for fault in list_faults(session, model_id=model_id):
        hits = sum(1 for keyword in fault.keyword_list if keyword in lowered)
        if hits > best_hits:
            best, best_hits = fault, hits
    return best


def list_enabled_rules(session: Session) -> list[TelemetryRule]:
    """Every enabled telemetry rule (all models), in no particular order: metric, operator, threshold (in
    the metric's unit), hold and recovery times (seconds) and the action a breach takes."""
    return list(session.scalars(select(TelemetryRule).where(TelemetryRule.enabled.is_(True))))
