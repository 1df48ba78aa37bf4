"""Thresholds held for a duration, recovery held for a duration, out-of-order and repeated readings."""

from __future__ import annotations

import datetime as dt

from device_hooks.rules import Raised, Recovered, Rule, RuleState, device_fault, evaluate

T0 = dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.timezone.utc)
WARM = Rule(1, "E01", "compartment_temp_c", "gt", 8.0, hold_seconds=900, recovery_seconds=600, action="ticket")
LEAK = Rule(2, "F10", "leak_sensor_wet", "eq", 1.0, hold_seconds=0, recovery_seconds=300, action="ticket")


def feed(rule: Rule, state: RuleState, points: list[tuple[int, float | bool]]) -> list[object]:
    out = []
    for minute, value in points:
        t = evaluate(rule, state, T0 + dt.timedelta(minutes=minute), value)
        if t is not None:
            out.append((minute, t))
    return out


def test_a_breach_fires_only_after_it_has_held_for_the_hold_time():
    state = RuleState()
    fired = feed(WARM, state, [(0, 4.0), (1, 9.0), (10, 9.5), (15, 9.4), (16, 9.6), (20, 9.9)])
    assert len(fired) == 1
    minute, raised = fired[0]
    assert minute == 16 and isinstance(raised, Raised)
    assert raised.since == T0 + dt.timedelta(minutes=1) and raised.value == 9.6


def test_a_short_breach_does_not_fire():
    assert feed(WARM, RuleState(), [(0, 9.0), (10, 9.0), (12, 5.0), (20, 9.0), (30, 9.0)]) == []


def test_recovery_needs_normal_readings_for_the_recovery_time_and_a_new_breach_is_a_new_episode():
    state = RuleState()
    fired = feed(WARM, state, [(0, 9), (15, 9), (20, 5), (25, 9), (26, 5), (35, 5), (36, 5), (50, 9), (65, 9)])
    kinds = [(m, type(t).__name__) for m, t in fired]
    assert kinds == [(15, "Raised"), (36, "Recovered"), (65, "Raised")]


def test_out_of_order_and_repeated_readings_do_not_move_the_state():
    state = RuleState()
    assert feed(WARM, state, [(0, 9), (20, 9)])[0][0] == 20
    assert feed(WARM, state, [(20, 9), (5, 4), (19, 4)]) == []  # a duplicate and two late readings
    assert state.active and state.normal_since is None


def test_zero_hold_fires_on_the_first_wet_reading_and_booleans_compare_as_numbers():
    state = RuleState()
    fired = feed(LEAK, state, [(0, False), (1, True), (2, True), (3, False), (8, False)])
    assert [(m, type(t)) for m, t in fired] == [(1, Raised), (8, Recovered)]


def test_state_changes_are_flagged_for_saving():
    state = RuleState()
    evaluate(WARM, state, T0, 4.0)
    assert not state.changed  # nothing to save: normal and was normal
    evaluate(WARM, state, T0 + dt.timedelta(minutes=1), 9.0)
    assert state.changed and state.breach_since == T0 + dt.timedelta(minutes=1)


def test_device_reported_codes_repeat_while_raised_and_clear_once():
    state = RuleState()
    first = device_fault("E21", True, state, T0)
    again = device_fault("E21", True, state, T0 + dt.timedelta(minutes=1))
    assert isinstance(first, Raised) and isinstance(again, Raised) and again.since == T0
    assert isinstance(device_fault("E21", False, state, T0 + dt.timedelta(minutes=2)), Recovered)
    assert device_fault("E21", False, state, T0 + dt.timedelta(minutes=3)) is None
    assert device_fault("E21", True, state, T0) is None  # older than what was seen: ignored


def test_a_breach_split_between_two_workers_still_fires_once_when_its_later_half_comes_first():
    state = RuleState()
    assert feed(WARM, state, [(10, 9), (12, 9), (16, 9)]) == []  # the later half: 6 minutes, not yet
    fired = feed(WARM, state, [(0, 9), (2, 9), (4, 9)])  # the earlier half arrives late
    assert [(m, type(t).__name__) for m, t in fired] == [(0, "Raised")]
    assert fired[0][1].since == T0 and state.active
    assert feed(WARM, state, [(17, 9), (1, 9)]) == []  # already raised: once per episode


def test_a_late_normal_reading_or_a_late_reading_without_a_breach_in_progress_changes_nothing():
    state = RuleState()
    feed(WARM, state, [(10, 4), (12, 9)])
    assert feed(WARM, state, [(11, 4), (5, 4)]) == [] and state.breach_since == T0 + dt.timedelta(minutes=12)
    quiet = RuleState()
    feed(WARM, quiet, [(10, 4)])
    assert feed(WARM, quiet, [(0, 9)]) == [] and quiet.breach_since is None
