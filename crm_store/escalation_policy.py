"""Escalation policy from ``escalation.yml``: triggers, first-response targets, staffed hours.

Helpdesk data, not chat logic: the actions decide escalations with it and the device notifier
(device_hooks) its safety-fault callbacks, so it lives in the CRM store both depend on, not in actions.

Path: ``ESCALATION_CONFIG`` (environment), else ``escalation.yml`` at the project root. Loaded once per
process; a wrong file stops the action server at start with a clear message, not at the first escalation.
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import zoneinfo
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, field_validator
from ruamel.yaml import YAML

from crm_store.enums import PRIORITY_RANK, LoyaltyTier, TicketPriority

DEFAULT_PATH = pathlib.Path(__file__).resolve().parent.parent / "escalation.yml"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Trigger(_Strict):
    enabled: bool = True
    priority: TicketPriority = TicketPriority.NORMAL


class CountTrigger(Trigger):
    count: int = Field(default=2, ge=1)


class FrustrationTrigger(Trigger):
    threshold: int = Field(default=2, ge=1)
    phrases: list[str] = []


class VipTrigger(Trigger):
    tiers: list[LoyaltyTier] = [LoyaltyTier.GOLD, LoyaltyTier.PLATINUM]
    ticket_priorities: list[TicketPriority] = [TicketPriority.URGENT]


class RepeatContactTrigger(CountTrigger):
    days: int = Field(default=3, ge=1)


class Triggers(_Strict):
    customer_request: Trigger = Trigger()
    repeated_fallback: CountTrigger = CountTrigger()
    frustration: FrustrationTrigger = FrustrationTrigger(priority=TicketPriority.HIGH)
    safety_fault: Trigger = Trigger(priority=TicketPriority.URGENT)
    vip_critical: VipTrigger = VipTrigger(priority=TicketPriority.URGENT)
    repeat_contact: RepeatContactTrigger = RepeatContactTrigger(priority=TicketPriority.HIGH, count=3)


class StaffedHours(_Strict):
    timezone: str = "UTC"
    always: bool = False
    days: dict[str, str] = {}

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        zoneinfo.ZoneInfo(value)  # raises for an unknown zone
        return value

    @field_validator("days")
    @classmethod
    def _parse_days(cls, value: dict[str, str]) -> dict[str, str]:
        for day, span in value.items():
            if day not in WEEKDAYS:
                raise ValueError(f"unknown weekday {day!r} (use {', '.join(WEEKDAYS)})")
            _span(span)
        return value

    def is_open(self, when: dt.datetime) -> bool:
        if self.always:
            return True
        local = when.astimezone(zoneinfo.ZoneInfo(self.timezone))
        span = self.days.get(WEEKDAYS[local.weekday()])
        if not span:
            return False
        start, end = _span(span)
        return start <= local.time() < end

    def next_opening(self, when: dt.datetime) -> dt.datetime | None:
        """The next time the team is staffed, in the team's time zone (None when never)."""
        zone = zoneinfo.ZoneInfo(self.timezone)
        local = when.astimezone(zone)
        for offset in range(8):
            day = local.date() + dt.timedelta(days=offset)
            span = self.days.get(WEEKDAYS[day.weekday()])
            if not span:
                continue
            opening = dt.datetime.combine(day, _span(span)[0], tzinfo=zone)
            if opening > local:
                return opening
        return None


def _span(text: str) -> tuple[dt.time, dt.time]:
    try:
        start, end = (dt.time.fromisoformat(part.strip()) for part in text.split("-"))
    except ValueError as exc:
        raise ValueError(f"staffed hours must look like 08:00-20:00, not {text!r}") from exc
    if end <= start:
        raise ValueError(f"staffed hours {text!r} end before they start")
    return start, end


class EscalationConfig(_Strict):
    triggers: Triggers = Triggers()
    cooldown_hours: int = Field(default=24, ge=0)
    tier_boost: list[LoyaltyTier] = [LoyaltyTier.GOLD, LoyaltyTier.PLATINUM]
    first_response_minutes: dict[TicketPriority, int] = {
        TicketPriority.URGENT: 2, TicketPriority.HIGH: 5, TicketPriority.NORMAL: 15, TicketPriority.LOW: 60,
    }
    minutes_per_conversation: int = Field(default=6, ge=1)
    staffed_hours: StaffedHours = StaffedHours(always=True)

    @field_validator("first_response_minutes")
    @classmethod
    def _every_priority(cls, value: dict[TicketPriority, int]) -> dict[TicketPriority, int]:
        missing = set(TicketPriority) - set(value)
        if missing:
            raise ValueError(f"first_response_minutes lacks {', '.join(sorted(m.value for m in missing))}")
        return value

    def priority_for(self, base: TicketPriority, tier: LoyaltyTier | None) -> TicketPriority:
        """The trigger's priority, one step higher for the boosted tiers."""
        if tier in self.tier_boost:
            order = sorted(PRIORITY_RANK, key=PRIORITY_RANK.__getitem__)
            return order[min(PRIORITY_RANK[base] + 1, len(order) - 1)]
        return base


def load_config(path: str | os.PathLike[str]) -> EscalationConfig:
    data = YAML(typ="safe").load(pathlib.Path(path).read_text(encoding="utf-8")) or {}
    return EscalationConfig.model_validate(data)


@lru_cache
def get_escalation_config() -> EscalationConfig:
    return load_config(os.environ.get("ESCALATION_CONFIG") or DEFAULT_PATH)
