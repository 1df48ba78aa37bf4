"""Fault detection as a state machine per (device, rule): thresholds held for a duration, recovery
held for a duration, device-reported codes. Pure: no I/O, so it is tested without a broker or database.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable
from dataclasses import dataclass

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le, "eq": operator.eq,
}


@dataclass(frozen=True, slots=True)
class Rule:
    """A telemetry rule as loaded from the ``telemetry_rules`` table."""

    id: int
    fault_code: str
    metric: str
    operator: str
    threshold: float
    hold_seconds: int
    recovery_seconds: int
    action: str

    @property
    def key(self) -> str:
        return f"rule:{self.id}"

    def breached(self, value: float | bool) -> bool:
        return OPERATORS[self.operator](float(value), self.threshold)


@dataclass(slots=True)
class RuleState:
    """Where one device stands on one rule. ``changed`` marks it for saving."""

    breach_since: dt.datetime | None = None
    active: bool = False
    normal_since: dt.datetime | None = None
    last_ts: dt.datetime | None = None
    changed: bool = False


@dataclass(frozen=True, slots=True)
class Raised:
    fault_code: str
    since: dt.datetime  # when the condition started
    at: dt.datetime  # when it had held long enough
    value: float | bool | None
    rule: Rule | None  # None for a fault code the device reported itself


@dataclass(frozen=True, slots=True)
class Recovered:
    fault_code: str
    at: dt.datetime
    rule: Rule | None


Transition = Raised | Recovered


def evaluate(rule: Rule, state: RuleState, ts: dt.datetime, value: float | bool) -> Transition | None:
    """Feeds one reading to a rule. The state moves forward in the device's time: a reading older than
    the last one seen (a duplicate, or out of order because two workers share the stream) changes only
    the start of a breach in progress, see :func:`_late`."""
    if state.last_ts is not None and ts <= state.last_ts:
        return _late(rule, state, ts, value)
    state.last_ts = ts
    if rule.breached(value):
        if state.normal_since is not None:
            state.normal_since, state.changed = None, True
        if state.breach_since is None:
            state.breach_since, state.changed = ts, True
        if not state.active and (ts - state.breach_since).total_seconds() >= rule.hold_seconds:
            state.active, state.changed = True, True
            return Raised(rule.fault_code, state.breach_since, ts, value, rule)
        return None
    if state.breach_since is not None:
        state.breach_since, state.changed = None, True
    if state.active:
        if state.normal_since is None:
            state.normal_since, state.changed = ts, True
        if (ts - state.normal_since).total_seconds() >= rule.recovery_seconds:
            state.active, state.normal_since, state.changed = False, None, True
            return Recovered(rule.fault_code, ts, rule)
    return None


def _late(rule: Rule, state: RuleState, ts: dt.datetime, value: float | bool) -> Transition | None:
    """A late breaching reading from before a breach in progress moves the breach's start back to it.

    With two workers sharing the stream, a burst of one device's readings is split between them and the
    later half may be evaluated first; without this the earlier half would be dropped and a breach held
    for the hold time could go unnoticed (a CO alarm lost). It assumes no normal reading lay between the
    late reading and the breach's start: missing a fault is worse than an early ticket."""
    if state.active or state.breach_since is None or ts >= state.breach_since or not rule.breached(value):
        return None
    state.breach_since, state.changed = ts, True
    assert state.last_ts is not None
    if (state.last_ts - ts).total_seconds() >= rule.hold_seconds:
        state.active = True
        return Raised(rule.fault_code, ts, state.last_ts, value, rule)
    return None


def device_fault(code: str, raised: bool, state: RuleState, ts: dt.datetime) -> Transition | None:
    """A fault code the device reported itself. "raised" while already active is a repeat report
    (returned again so the ticket records it); "cleared" is a device-verified recovery."""
    if state.last_ts is not None and ts < state.last_ts:
        return None
    state.last_ts = ts
    if raised:
        if not state.active:
            state.active, state.breach_since, state.changed = True, ts, True
        return Raised(code, state.breach_since or ts, ts, None, None)
    if state.active:
        state.active, state.breach_since, state.changed = False, None, True
        return Recovered(code, ts, None)
    return None
