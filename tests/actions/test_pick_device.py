"""Which of the customer's devices a message means: serial, model (also via the NLU's canonical name), ..."""

from __future__ import annotations

from types import SimpleNamespace

from actions.tickets import _pick_device


def device(serial: str, model: str, category: str, location: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(serial=serial, location=location,
                           model=SimpleNamespace(name=model, category=SimpleNamespace(label=category)))


DEVICES = [device("BL30-23000777", "ThermaCore 30 Combi", "boiler", "basement"),
           device("FR50-21000101", "FrostLine 500", "fridge", "kitchen"),
           device("FR70-22000202", "FrostLine 700 Smart", "fridge", "garage")]


def test_a_short_model_name_resolves_through_the_product_model_entity():
    entities = [{"entity": "product_model", "value": "FrostLine 700 Smart", "start": 7, "end": 20}]
    assert _pick_device(DEVICES, "it's my frostline 700", entities) is DEVICES[2]
    # Without the entity the short name matches no full name, and "fridge" is ambiguous.
    assert _pick_device(DEVICES, "it's my frostline 700 fridge", []) is None


def test_serial_entity_wins_and_an_unknown_model_is_ignored():
    entities = [{"entity": "product_model", "value": "WashPro 8"},
                {"entity": "serial_number", "value": "FR50-21000101"}]
    assert _pick_device(DEVICES, "serial fr50 21000101", entities) is DEVICES[1]
    assert _pick_device(DEVICES, "the one in the basement", [{"entity": "product_model", "value": "WashPro 8"}]) is DEVICES[0]
