"""nlu/model_inference.py: the same features and the same predictions as Rasa's own code, and Rasa's errors."""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import numpy as np
import pytest
import scipy.sparse

import nlu  # noqa: F401  (applies the changes, as Rasa's import of the components does)
from nlu import model_inference
from rasa.shared.nlu.training_data.features import Features
from rasa.shared.nlu.training_data.message import Message
from rasa.utils.tensorflow.models import RasaModel

ORIGIN = ["regex", "lexical", "words", "chars"]


@contextlib.contextmanager
def rasas_own_code() -> Iterator[None]:
    """Rasa's `_combine_features` and `_rasa_predict` for the duration (both kept by functools.wraps)."""
    combine, predict = Message.__dict__["_combine_features"], RasaModel._rasa_predict
    Message._combine_features = staticmethod(combine.__func__.__wrapped__)
    RasaModel._rasa_predict = predict.__wrapped__
    try:
        yield
    finally:
        Message._combine_features, RasaModel._rasa_predict = combine, predict


def sparse(rows: int, cols: int, nnz: int, dtype: str, seed: int) -> scipy.sparse.coo_matrix:
    rng = np.random.default_rng(seed)
    return scipy.sparse.coo_matrix(
        ((rng.random(nnz) * 5).astype(dtype), (rng.integers(0, max(rows, 1), nnz), rng.integers(0, cols, nnz))),
        shape=(rows, cols))


def joined_by_rasa(features: list[Features]) -> Features:
    with rasas_own_code():
        return Message._combine_features(copy.deepcopy(features), ORIGIN)


def test_the_changes_are_the_ones_in_use():
    assert Message.__dict__["_combine_features"].__func__.__code__.co_filename.endswith("model_inference.py")
    assert RasaModel._rasa_predict.__code__.co_filename.endswith("model_inference.py")


@pytest.mark.parametrize("dtypes", [("float32",) * 4, ("float64", "float32", "int64", "float32"), ("int64", "int64"),
                                    ("int8", "uint16", "float32")])  # float64 pair by pair, float32 all at once
@pytest.mark.parametrize("rows", [0, 1, 7])
def test_sparse_features_are_joined_exactly_as_rasa_joins_them(dtypes, rows):
    features = [Features(sparse(rows, 3 + i * 40, 0 if rows == 0 or i == 1 else 5 + i, dtype, seed=i), "sequence",
                         "text", name) for i, (dtype, name) in enumerate(zip(dtypes, ORIGIN))]
    expected, got = joined_by_rasa(features), model_inference.join_features(features, ORIGIN)
    assert type(got.features) is type(expected.features) is scipy.sparse.coo_matrix
    assert got.features.shape == expected.features.shape and got.features.dtype == expected.features.dtype
    for part in ("data", "row", "col"):  # the same entries in the same order, with the same index dtype
        assert getattr(got.features, part).dtype == getattr(expected.features, part).dtype
        assert np.array_equal(getattr(got.features, part), getattr(expected.features, part))
    assert (got.type, got.attribute, got.origin) == (expected.type, expected.attribute, ORIGIN)
    assert got.fingerprint() == expected.fingerprint()


@pytest.mark.parametrize("dtypes", [("float32",) * 3, ("int8", "uint16", "float32")])
def test_dense_features_are_joined_as_rasa_joins_them(dtypes):
    rng = np.random.default_rng(3)
    features = [Features((rng.random((4, n)) * 9).astype(dtype), "sequence", "text", name)
                for n, dtype, name in zip((8, 3, 5), dtypes, ORIGIN)]
    expected, got = joined_by_rasa(features), model_inference.join_features(features, ORIGIN)
    assert got.features.dtype == expected.features.dtype and np.array_equal(got.features, expected.features)
    assert got.fingerprint() == expected.fingerprint()


def test_a_single_feature_is_rasas_copy_and_mismatches_raise_rasas_errors():
    one = Features(sparse(2, 4, 3, "float32", 1), "sentence", "text", "words")
    copied = model_inference.join_features([one], ORIGIN)
    assert copied is not one and copied.origin == ORIGIN and (copied.features != one.features).nnz == 0
    cases = [
        [one, Features(sparse(3, 4, 3, "float32", 2), "sentence", "text", "chars")],  # rows differ
        [one, Features(np.zeros((2, 4), "float32"), "sentence", "text", "dense")],  # sparse with dense
        [Features(np.zeros((2, 4)), "sequence", "text", "a"), Features(np.zeros((2, 4, 1)), "sequence", "text", "b")],
        [Features(np.zeros((4, 8)), "sequence", "text", n) for n in "ab"]
        + [Features(np.zeros((5, 5)), "sequence", "text", "c")],  # the third has a token more
    ]
    for features in cases:
        with pytest.raises(ValueError) as rasas:
            joined_by_rasa(features)
        with pytest.raises(ValueError) as ours:
            model_inference.join_features(features, ORIGIN)
        assert str(ours.value) == str(rasas.value)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """A DIET for intents and entities and its featurizers (regex, lexical, word and character counts), trained on a
    few messages for a few epochs: enough for predictions to depend on every input."""
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.engine.storage.local_model_storage import LocalModelStorage
    from rasa.engine.storage.resource import Resource
    from rasa.nlu.classifiers.diet_classifier import DIETClassifier
    from rasa.nlu.featurizers.sparse_featurizer.count_vectors_featurizer import CountVectorsFeaturizer
    from rasa.nlu.featurizers.sparse_featurizer.lexical_syntactic_featurizer import LexicalSyntacticFeaturizer
    from rasa.nlu.featurizers.sparse_featurizer.regex_featurizer import RegexFeaturizer
    from rasa.nlu.tokenizers.whitespace_tokenizer import WhitespaceTokenizer
    from rasa.shared.nlu.training_data.training_data import TrainingData

    storage = LocalModelStorage(tmp_path_factory.mktemp("diet"))

    def context(name: str) -> ExecutionContext:
        return ExecutionContext(GraphSchema({}), node_name=name)

    examples = [("my washer is leaking", "report_problem", "washer"),
                ("the fridge is warm", "report_problem", "fridge"),
                ("my dishwasher shows E21", "report_problem", "dishwasher"), ("hello there", "greet", None),
                ("hi", "greet", None), ("status of T-000123", "ask_ticket_status", None),
                ("where is ticket T-004567", "ask_ticket_status", None), ("thanks a lot", "thank", None)]
    messages = []
    for text, intent, appliance in examples:
        entities = []
        if appliance:
            at = text.index(appliance)
            entities = [{"entity": "appliance", "start": at, "end": at + len(appliance), "value": appliance}]
        messages.append(Message.build(text=text, intent=intent, entities=entities))
    data = TrainingData(messages, regex_features=[{"name": "ticket", "pattern": r"T-\d{6}"}])
    tokenizer = WhitespaceTokenizer(WhitespaceTokenizer.get_default_config())
    featurizers = [
        RegexFeaturizer.create({**RegexFeaturizer.get_default_config(), "case_sensitive": False}, storage,
                               Resource("regex"), context("regex")),
        LexicalSyntacticFeaturizer.create(LexicalSyntacticFeaturizer.get_default_config(), storage, Resource("lexical"),
                                          context("lexical")),
        CountVectorsFeaturizer.create(CountVectorsFeaturizer.get_default_config(), storage, Resource("words"),
                                      context("words")),
        CountVectorsFeaturizer.create({**CountVectorsFeaturizer.get_default_config(), "analyzer": "char_wb",
                                       "min_ngram": 1, "max_ngram": 4}, storage, Resource("chars"), context("chars")),
    ]
    tokenizer.process_training_data(data)
    for featurizer in featurizers:
        featurizer.train(data)
        featurizer.process_training_data(data)
    diet = DIETClassifier.create({**DIETClassifier.get_default_config(), "epochs": 20, "random_seed": 1}, storage,
                                 Resource("diet"), context("diet"))
    diet.train(data)

    def parse(text: str) -> Message:
        message = Message.build(text=text)
        tokenizer.process([message])
        for featurizer in featurizers:
            featurizer.process([message])
        diet.process([message])
        return message

    return diet, parse


TEXTS = ["my washer is leaking again", "hello", "what is the status of T-000999", "the FRIDGE shows E21", "", "thanks"]


def test_diet_predicts_exactly_what_it_predicts_with_rasas_code(trained):
    diet, parse = trained
    with rasas_own_code():
        expected = [(parse(t).get("intent"), parse(t).get("intent_ranking"), parse(t).get("entities")) for t in TEXTS]
    got = [(parse(t).get("intent"), parse(t).get("intent_ranking"), parse(t).get("entities")) for t in TEXTS]
    assert got == expected  # names, confidences (floats compared exactly) and entity spans
    # Predictions that depend on the input: an entity found, and each text its own confidences.
    assert any(entities for _, _, entities in got) and len({i["confidence"] for i, _, _ in got}) == len(TEXTS)
    assert diet.model._direct_predict[0] is diet.model._tf_predict_step  # the direct call was the one used


def outcome(model: RasaModel, batch: tuple) -> object:
    """What `_rasa_predict` gives for a batch: its error (type and message), or its outputs without the diagnostic
    data."""
    try:
        outputs = model._rasa_predict(batch)
    except (ValueError, TypeError) as e:
        return type(e), str(e)
    return {k: v.tolist() for k, v in outputs.items() if k != "diagnostic_data"}


def test_inputs_that_do_not_fit_the_compiled_signature_fare_as_with_rasas_call(trained):
    import rasa.utils.train_utils

    diet, parse = trained
    parse("hello")  # compiled
    message = parse("my washer is leaking")
    model_data = diet._create_model_data([message], training=False)
    generator, _ = rasa.utils.train_utils.create_data_generators(model_data, batch_sizes=1, epochs=1, shuffle=False)
    batch = list(next(iter(generator))[0])
    floats = next(i for i, value in enumerate(batch) if getattr(value, "dtype", None) == np.float32)
    cases = {
        "well formed": tuple(batch),
        "an input missing": tuple(batch[:-1]),
        "float64 for float32 (TensorFlow converts it)": tuple(v.astype(np.float64) if i == floats else v
                                                              for i, v in enumerate(batch)),
        "integers for float32 (TensorFlow converts them)": tuple(v.astype(np.int64) if i == floats else v
                                                                 for i, v in enumerate(batch)),
        "words for float32": tuple(np.full(v.shape, "x") if i == floats else v for i, v in enumerate(batch)),
        "an object for float32": tuple(object() if i == floats else v for i, v in enumerate(batch)),
        "a wrong rank": tuple(v[..., None] if i == floats else v for i, v in enumerate(batch)),
    }
    for name, case in cases.items():
        with rasas_own_code():
            expected = outcome(diet.model, case)
        assert outcome(diet.model, case) == expected, name
        accepted = name == "well formed" or "converts" in name
        assert isinstance(expected, dict) == accepted, name


def test_the_direct_call_leaves_the_saved_model_and_tensorflows_debug_mode_alone(trained, monkeypatch):
    import tensorflow as tf

    diet, parse = trained
    parse("hello")
    parse("thanks")  # the direct call made and remembered
    assert "_direct_predict" not in diet.model._trackable_children()  # not tracked: the saved weights are Rasa's
    calls = []
    batch_predict = diet.model.batch_predict

    def counted(batch_in):
        calls.append(1)
        return batch_predict(batch_in)

    monkeypatch.setattr(diet.model, "batch_predict", counted)
    tf.config.run_functions_eagerly(True)  # debugging: TensorFlow runs the Python of every call
    try:
        parse("my washer is leaking")
    finally:
        tf.config.run_functions_eagerly(False)
    assert calls == [1]  # the Python ran, as with Rasa's call
    parse("my washer is leaking")
    assert calls == [1]  # back to the compiled graph
