"""Rasa's own checks on the bot: data validation and conversation tests (bot/tests) on the trained model."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
RASA = ROOT / ".venv-rasa" / "bin" / "rasa"
# Rasa's validator does not see that forms ask with utter_ask_<slot>; these warnings are false positives.
FORM_QUESTIONS = {"utter_ask_verify_email", "utter_ask_verify_reference", "utter_ask_symptom",
                  "utter_ask_csat_score", "utter_ask_csat_comment"}
# Intents the device worker triggers through Rasa's HTTP API: nobody types them, so they have no NLU
# examples (examples would teach the classifier to predict them for customers' messages).
EXTERNAL_INTENTS = {"EXTERNAL_device_fault", "EXTERNAL_device_recovered", "EXTERNAL_ticket_update"}
# The validator merges the domain with one derived from the NLU data, where the retrieval intent `faq` appears
# again: a false positive (Rasa requires `faq` in the domain's intents).
RETRIEVAL_INTENT_ECHO = "duplicated intents have been found across multiple domain files: faq"


def _rasa(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RASA_TELEMETRY_ENABLED="false", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([str(RASA), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _rasa_python(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RASA_TELEMETRY_ENABLED="false", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    python = ROOT / ".venv-rasa" / "bin" / "python"
    return subprocess.run([str(python), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_rasa_data_validate_is_clean():
    result = _rasa("data", "validate", "--config", "config.yml", "--domain", "bot/domain.yml",
                   "--data", "bot/data", "nlu/data")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    warnings = [line for line in output.splitlines() if "UserWarning" in line]
    unexpected = [w for w in warnings if not any(f"'{name}'" in w for name in FORM_QUESTIONS | EXTERNAL_INTENTS)
                  and not w.rstrip().endswith(RETRIEVAL_INTENT_ECHO)]
    assert unexpected == []


def test_conversation_tests_pass(tmp_path):
    model = os.environ.get("BOT_MODEL")
    if not model:
        pytest.fail("BOT_MODEL is not set: run the suite through `make test`")
    result = _rasa("test", "core", "--model", model, "--stories", "bot/tests", "--out", str(tmp_path),
                   "--fail-on-prediction-errors")
    output = result.stdout + result.stderr
    failed = tmp_path / "failed_test_stories.yml"
    detail = failed.read_text() if failed.exists() else output[-4000:]
    assert result.returncode == 0, detail
    stories = len(re.findall(r"^\s*- story:", (ROOT / "bot" / "tests" / "test_stories.yml").read_text(), re.M))
    assert stories >= 9


def test_understanding_on_the_held_out_test_set_does_not_regress(tmp_path):
    """The bot's own held-out NLU examples (nlu/test_data, never trained on) keep a floor."""
    import json

    model = os.environ.get("BOT_MODEL")
    if not model:
        pytest.fail("BOT_MODEL is not set: run the suite through `make test`")
    # Scored on what the bot acts on: the final intent (a fallback counts as an error) and the merged entities
    # of every extractor, matched exactly by type and span, with their canonical values.
    result = _rasa_python("scripts/eval_nlu.py", model, "nlu/test_data/nlu_test.yml")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    scores = json.loads(result.stdout)
    assert scores["examples"] >= 150
    # Floors measured with the current pipeline (0.90 intent accuracy with fallbacks counted as errors,
    # 0.98 entity F1, every canonical value right), minus a margin.
    assert scores["intent_accuracy"] >= 0.85, scores["errors"]
    assert scores["entity_micro_f1"] >= 0.90, scores["errors"]
    assert scores["entity_value_accuracy"] == 1.0, scores["errors"]
    # Product questions: the intent and the topic's answer must both be right.
    assert scores["faq_examples"] >= 10
    assert scores["faq_answer_accuracy"] >= 0.8, scores["errors"]


def test_cross_validated_understanding_of_the_training_data_does_not_regress(tmp_path):
    """3-fold cross-validation of the intent pipeline on nlu/data: guards the training data itself (a
    mislabelled or contradictory batch of examples drops it) where the held-out file may not notice."""
    import json

    out = tmp_path / "cv.json"
    result = _rasa_python("scripts/tune_fallback.py", "--folds", "3", "--out", str(out), timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    scores = json.loads(out.read_text())
    assert scores["examples"] >= 800
    # Measured with the current pipeline: 0.856 accuracy, 0.854 handled well at the configured threshold.
    assert scores["accuracy_without_threshold"] >= 0.80, scores
    assert scores["handled_well_at_configured"] >= 0.80, scores
