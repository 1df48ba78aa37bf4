"""SpacyRuleEntityExtractor: identifier rules and catalogue phrases -> entities with canonical values."""

from __future__ import annotations

import pathlib

import pytest

from rasa.engine.storage.resource import Resource
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData
from rasa.shared.exceptions import RasaException

from nlu import SpacyRuleEntityExtractor

ROOT = pathlib.Path(__file__).resolve().parents[3]


def training_data() -> TrainingData:
    """A little of what nlu/data holds: an annotated appliance, a synonym, a lookup table of model names."""
    annotated = Message.build(text="my washer is broken", intent="report_problem",
                              entities=[{"entity": "appliance", "start": 3, "end": 9, "value": "washing_machine"}])
    return TrainingData(
        [annotated],
        entity_synonyms={"dish washer": "dishwasher", "washer": "washing_machine"},
        lookup_tables=[{"name": "appliance", "elements": ["dishwasher", "dish washer", "fridge"]},
                       {"name": "product_model", "elements": ["FrostLine 700 Smart", "WashPro 8"]},
                       {"name": "colour", "elements": ["blue"]}],
    )


@pytest.fixture()
def trained(model_storage, context):
    resource = Resource("rules")
    extractor = SpacyRuleEntityExtractor.create(SpacyRuleEntityExtractor.get_default_config(), model_storage,
                                                resource, context)
    extractor.train(training_data())
    return extractor, resource


@pytest.mark.parametrize(
    "text, expected",
    [
        ("my order is ord 2021 000101", [("order_number", "ord 2021 000101", "ORD-2021-000101")]),
        ("ORD-2021-000101", [("order_number", "ORD-2021-000101", "ORD-2021-000101")]),
        ("order #2024/000123 please", [("order_number", "2024/000123", "ORD-2024-000123")]),
        ("serial fr50 21000101", [("serial_number", "fr50 21000101", "FR50-21000101")]),
        ("order number ORD 2021 000101", [("order_number", "ORD 2021 000101", "ORD-2021-000101")]),
        ("WM80-23000102 and dw60-24000103", [("serial_number", "WM80-23000102", "WM80-23000102"),
                                             ("serial_number", "dw60-24000103", "DW60-24000103")]),
        ("status of ticket no. 000101?", [("ticket_number", "000101", "T-000101")]),
        ("t-000042", [("ticket_number", "t-000042", "T-000042")]),
        ("the display says e05", [("error_code", "e05", "E05")]),
        ("it shows error 21", [("error_code", "21", "E21")]),
        ("mail me at anna.schmidt@example.com", [("email", "anna.schmidt@example.com", "anna.schmidt@example.com")]),
        # Phrases from the training data: synonyms give the canonical value, plurals and case are tolerated.
        ("My Dish Washer leaks", [("appliance", "Dish Washer", "dishwasher")]),
        ("both washers are broken", [("appliance", "washers", "washing_machine")]),
        ("the frostline 700 smart is warm", [("product_model", "frostline 700 smart", "FrostLine 700 Smart")]),
        # Nothing that only looks a bit like an identifier, and no entity types that were not configured.
        ("I paid 2024 euros for 123456 things", []),
        ("a blue one, 12 of them", []),
        ("", []),
    ],
)
def test_extracts_rule_and_phrase_entities_with_canonical_values(trained, text, expected):
    extractor, _ = trained
    found = [(e["entity"], text[e["start"]:e["end"]], e["value"]) for e in extractor.extract(text)]
    assert found == expected


def test_rule_entities_replace_overlapping_learned_ones_and_keep_the_rest(trained):
    extractor, _ = trained
    message = Message.build(text="my washer has error 21")
    message.set("entities", [
        {"entity": "appliance", "start": 3, "end": 9, "value": "washer", "extractor": "DIETClassifier"},
        {"entity": "error_code", "start": 14, "end": 19, "value": "error", "extractor": "DIETClassifier"},
        {"entity": "mood", "start": 0, "end": 2, "value": "my", "extractor": "DIETClassifier"},
    ])
    extractor.process([message])
    entities = {(e["entity"], e["value"], e["extractor"]) for e in message.get("entities")}
    assert entities == {
        ("mood", "my", "DIETClassifier"),
        ("appliance", "washing_machine", "SpacyRuleEntityExtractor"),
        ("error_code", "E21", "SpacyRuleEntityExtractor"),
    }


def test_patterns_survive_persist_and_load(trained, model_storage, context):
    extractor, resource = trained
    loaded = SpacyRuleEntityExtractor.load(SpacyRuleEntityExtractor.get_default_config(), model_storage, resource,
                                           context)
    text = "my washer, serial wm80 23000102, order 2021-000101"
    assert loaded.extract(text) == extractor.extract(text)
    assert {e["value"] for e in loaded.extract(text)} == {"washing_machine", "WM80-23000102", "ORD-2021-000101"}


def test_an_untrained_extractor_finds_nothing(model_storage, context):
    extractor = SpacyRuleEntityExtractor.load(SpacyRuleEntityExtractor.get_default_config(), model_storage,
                                              Resource("never-trained"), context)
    assert extractor.extract("ORD-2021-000101") == []


def test_a_broken_rules_file_is_a_clear_error(tmp_path, model_storage, context):
    rules = tmp_path / "rules.yml"
    rules.write_text("order_number:\n  canonical: 'ORD-{0}'\n")
    config = {**SpacyRuleEntityExtractor.get_default_config(), "rules_file": str(rules)}
    extractor = SpacyRuleEntityExtractor.create(config, model_storage, Resource("bad"), context)
    with pytest.raises(RasaException, match="needs `patterns`"):
        extractor.train(training_data())


def test_editing_the_rules_file_changes_the_fingerprint(tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text((ROOT / "nlu" / "entity_rules.yml").read_text())
    config = {"rules_file": str(rules)}
    before = SpacyRuleEntityExtractor.fingerprint_addon(config)
    rules.write_text(rules.read_text() + "\n# edited\n")
    assert SpacyRuleEntityExtractor.fingerprint_addon(config) != before
