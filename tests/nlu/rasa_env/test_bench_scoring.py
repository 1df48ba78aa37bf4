"""The NLU benchmark's out-of-scope threshold is chosen on validation data by the documented rule."""

from __future__ import annotations

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("bench_nlu", ROOT / "bench" / "bench_nlu.py")
bench_nlu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_nlu)


def test_threshold_keeps_the_most_in_scope_answers_that_still_decline_enough_out_of_scope():
    # In scope: right answers at 0.9, 0.8, 0.6, 0.4; out of scope: confidences 0.3, 0.5, 0.7, 0.95.
    val = [("a", 0.9, "a"), ("b", 0.8, "b"), ("c", 0.6, "c"), ("d", 0.4, "d")]
    oos = [("a", 0.3, "oos"), ("b", 0.5, "oos"), ("c", 0.7, "oos"), ("d", 0.95, "oos")]
    # Declining 3 of 4 (>= 0.75) needs a threshold above 0.7; 0.8 keeps the most right answers.
    assert bench_nlu.choose_threshold(val, oos, min_oos_recall=0.75) == 0.8
    # Asking for half: 0.6 declines 0.3 and 0.5 and keeps three right answers.
    assert bench_nlu.choose_threshold(val, oos, min_oos_recall=0.5) == 0.6


def test_threshold_falls_back_to_accuracy_plus_recall_when_no_threshold_declines_enough():
    val = [("a", 0.9, "a")]
    oos = [("a", 0.99, "oos"), ("b", 0.2, "oos")]
    # No threshold declines all; 0.9 keeps the answer and declines the 0.2 one (sum 1.5).
    assert bench_nlu.choose_threshold(val, oos, min_oos_recall=1.01) == 0.9


def test_clinc_scoring_counts_a_fallback_on_in_scope_text_as_an_error():
    preds = {
        "val": [("a", 0.9, "a"), ("b", 0.2, "b")],
        "oos_val": [("a", 0.1, "oos"), ("b", 0.3, "oos"), ("b", 0.95, "oos"), ("a", 0.05, "oos")],
        "test": [("a", 0.9, "a"), ("b", 0.1, "b"), ("c", 0.95, "d")],
        "oos_test": [("a", 0.1, "oos"), ("a", 0.99, "oos")],
    }
    figures = bench_nlu.score("clinc150", preds)
    assert figures["oos_threshold"] == 0.9  # declines 3 of 4 oos_val and keeps the right 0.9 answer
    assert figures["accuracy"] == round(1 / 3, 4)
    assert figures["oos_recall"] == 0.5
