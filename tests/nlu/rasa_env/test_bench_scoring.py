"""The NLU benchmark's out-of-scope threshold is chosen on validation data by the documented rule."""

from __future__ import annotations

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("bench_nlu", ROOT / "bench" / "bench_nlu.py")
bench_nlu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_nlu)


def test_threshold_declines_the_most_out_of_scope_while_keeping_in_scope_accuracy():
    # In scope: right answers at 0.9, 0.8, 0.6, 0.4; out of scope: confidences 0.3, 0.5, 0.7, 0.95.
    val = [("a", 0.9, "a"), ("b", 0.8, "b"), ("c", 0.6, "c"), ("d", 0.4, "d")]
    oos = [("a", 0.3, "oos"), ("b", 0.5, "oos"), ("c", 0.7, "oos"), ("d", 0.95, "oos")]
    # Keeping 3 of 4 in-scope answers allows thresholds up to 0.6 (a confidence equal to it is answered);
    # 0.6 declines 0.3 and 0.5, any lower candidate fewer.
    assert bench_nlu.choose_threshold(val, oos, min_accuracy=0.75) == 0.6
    # Keeping every answer allows only thresholds up to 0.4, which declines 0.3.
    assert bench_nlu.choose_threshold(val, oos, min_accuracy=1.0) == 0.4
    # Keeping half allows 0.8, which declines three.
    assert bench_nlu.choose_threshold(val, oos, min_accuracy=0.5) == 0.8


def test_threshold_is_zero_when_even_answering_everything_misses_the_accuracy():
    val = [("a", 0.9, "a"), ("b", 0.9, "c")]
    oos = [("a", 0.2, "oos")]
    assert bench_nlu.choose_threshold(val, oos, min_accuracy=0.9) == 0.0


def test_clinc_scoring_counts_a_fallback_on_in_scope_text_as_an_error():
    preds = {
        "val": [("a", 0.9, "a"), ("b", 0.2, "b")],
        "oos_val": [("a", 0.1, "oos"), ("b", 0.3, "oos"), ("b", 0.95, "oos"), ("a", 0.05, "oos")],
        "test": [("a", 0.9, "a"), ("b", 0.1, "b"), ("c", 0.95, "d")],
        "oos_test": [("a", 0.1, "oos"), ("a", 0.99, "oos")],
    }
    figures = bench_nlu.score("clinc150", preds)
    # Every threshold up to 0.2 keeps val at 1.0 (>= 0.945); 0.2 declines the most oos_val (0.1 and 0.05).
    assert figures["oos_threshold"] == 0.2
    assert figures["val_accuracy"] == 1.0 and figures["oos_val_recall"] == 0.5
    assert figures["accuracy"] == round(1 / 3, 4)  # the 0.1 answer is declined, the 0.95 one is wrong
    assert figures["oos_recall"] == 0.5
    curve = {row["threshold"]: row for row in figures["threshold_curve"]}
    assert curve[0.0]["oos_test_recall"] == 0.0 and curve[0.5]["val_accuracy"] == 0.5


def test_clinc_out_of_scope_intent_declines_even_when_confident():
    # The out-of-scope intent ("oos") declines whatever its confidence; the threshold adds low-confidence ones.
    preds = {
        "val": [("a", 0.9, "a"), ("b", 0.8, "b")],
        "oos_val": [("oos", 0.99, "oos"), ("oos", 0.6, "oos"), ("a", 0.5, "oos"), ("b", 0.95, "oos")],
        "test": [("a", 0.9, "a"), ("oos", 0.97, "b"), ("b", 0.4, "b")],
        "oos_test": [("oos", 0.99, "oos"), ("a", 0.3, "oos"), ("a", 0.99, "oos"), ("oos", 0.2, "oos")],
    }
    figures = bench_nlu.score("clinc150", preds)
    # Keeping both val answers allows thresholds up to 0.8; the lowest that declines the most oos_val (three:
    # two as oos, 0.5 below it) is 0.6.
    assert figures["oos_threshold"] == 0.6
    assert figures["oos_recall"] == 0.75
    assert figures["oos_recall_without_threshold"] == 0.5
    # An in-scope question classified oos is a wrong answer, and so is one below the threshold.
    assert figures["accuracy"] == round(1 / 3, 4)


def test_clinc_training_split_holds_the_out_of_scope_intent_but_never_its_evaluation_questions(tmp_path):
    import json

    raw = {
        "train": [["set an alarm", "alarm"], ["what's the weather", "weather"]],
        "val": [["wake me at 7", "alarm"]],
        "test": [["is it raining", "weather"]],
        "oos_train": [["how do i bake bread", "oos"]],
        "oos_val": [["who won the cup", "oos"]],
        "oos_test": [["tell me about mars", "oos"]],
    }
    (tmp_path / "data_full.json").write_text(json.dumps(raw))
    layout, splits = bench_nlu.load_dataset(tmp_path)
    assert layout == "clinc150"
    assert ("how do i bake bread", "oos") in splits["train"]
    train_texts = {t for t, _ in splits["train"]}
    assert "who won the cup" not in train_texts and "tell me about mars" not in train_texts
    assert splits["oos_test"] == [("tell me about mars", "oos")]


def load_tune_nlu():
    spec = importlib.util.spec_from_file_location("tune_nlu", ROOT / "bench" / "tune_nlu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tuning_holds_out_a_seeded_stratified_share_of_each_intent_and_trains_on_the_rest():
    tune_nlu = load_tune_nlu()
    train = [(f"{intent} text {i}", intent) for intent in ("card_lost", "refund") for i in range(20)]
    train += [("top up once", "top_up")]
    rest, held = tune_nlu.carve_validation(train, share=0.15, seed=0)
    assert sorted(rest + held) == sorted(train) and not set(rest) & set(held)
    counts = {intent: sum(l == intent for _, l in held) for intent in ("card_lost", "refund", "top_up")}
    assert counts == {"card_lost": 3, "refund": 3, "top_up": 0}
    assert tune_nlu.carve_validation(train, share=0.15, seed=0) == (rest, held)
    # A data set with a validation split is tuned on it, without its out-of-scope questions.
    splits = {"train": train, "val": [("a", "refund"), ("b", "oos")]}
    assert tune_nlu.split_for_tuning("clinc150", splits) == (train, [("a", "refund")])


def test_ablation_drops_one_featurizers_features_and_leaves_the_messages_untouched():
    import numpy as np
    import scipy.sparse
    from rasa.shared.nlu.training_data.features import Features
    from rasa.shared.nlu.training_data.message import Message

    tune_nlu = load_tune_nlu()
    message = Message.build(text="my card is lost", intent="card_lost")
    message.add_features(Features(np.ones((1, 4)), "sentence", "text", "frozen"))
    message.add_features(Features(np.ones((1, 4)), "sentence", "text", "tuned"))
    message.add_features(Features(scipy.sparse.coo_matrix(np.ones((1, 3))), "sentence", "text", "counts"))

    (copy,) = tune_nlu.without_origin([message], "frozen")
    assert sorted(f.origin for f in copy.features) == ["counts", "tuned"]
    assert copy.get("text") == "my card is lost" and copy.get("intent") == "card_lost"
    assert sorted(f.origin for f in message.features) == ["counts", "frozen", "tuned"]
    assert tune_nlu.without_origin([message], None) == [message]
