"""LinearIntentClassifier: sentence features of every featurizer -> intent and ranking, persisted as arrays."""

from __future__ import annotations

import pytest

from rasa.engine.storage.resource import Resource
from rasa.nlu.featurizers.sparse_featurizer.count_vectors_featurizer import CountVectorsFeaturizer
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from nlu import LinearIntentClassifier, SentenceTransformerFeaturizer

from .conftest import context_for

TRAIN = {
    "report_fault": ["my fridge is broken", "the washer shows error e21", "boiler is leaking water",
                     "fridge not cold", "washer broken please help"],
    "ticket_status": ["status of my ticket", "where is my ticket", "ticket number status please",
                      "what is the status of ticket", "order number status"],
    "greet": ["hello", "hi", "hello there", "hi hi", "hello please"],
}


@pytest.fixture()
def pipeline(tiny_model, model_storage, context, tokenizer):
    dense = SentenceTransformerFeaturizer.create(
        {**SentenceTransformerFeaturizer.get_default_config(), "model_path": str(tiny_model)},
        model_storage, Resource("st"), context_for("dense"))
    sparse = CountVectorsFeaturizer.create(CountVectorsFeaturizer.get_default_config(), model_storage,
                                           Resource("cv"), context_for("words"))
    chars = CountVectorsFeaturizer.create({**CountVectorsFeaturizer.get_default_config(), "analyzer": "char_wb",
                                           "min_ngram": 2, "max_ngram": 4}, model_storage, Resource("ch"),
                                          context_for("chars"))

    def featurize(data_or_messages, train=False):
        if train:
            tokenizer.process_training_data(data_or_messages)
            dense.process_training_data(data_or_messages)
            for featurizer in (sparse, chars):
                featurizer.train(data_or_messages)
                featurizer.process_training_data(data_or_messages)
        else:
            tokenizer.process(data_or_messages)
            dense.process(data_or_messages)
            sparse.process(data_or_messages)
            chars.process(data_or_messages)
        return data_or_messages

    return featurize


def train(pipeline, model_storage, context, examples=TRAIN, **config):
    data = TrainingData([Message.build(text=t, intent=i) for i, texts in examples.items() for t in texts])
    pipeline(data, train=True)
    resource = Resource("linear")
    classifier = LinearIntentClassifier.create({**LinearIntentClassifier.get_default_config(), **config},
                                               model_storage, resource, context)
    classifier.train(data)
    return classifier, resource


@pytest.mark.parametrize(
    "text, intent",
    [("my washer is broken", "report_fault"), ("fridge leaking water", "report_fault"),
     ("ticket status", "ticket_status"), ("where is my order number", "ticket_status"), ("hello", "greet")],
)
def test_text_to_intent_and_the_same_answer_after_loading(pipeline, model_storage, context, text, intent):
    classifier, resource = train(pipeline, model_storage, context)
    message = pipeline([Message.build(text=text)])[0]
    classifier.process([message])
    assert message.get("intent")["name"] == intent
    ranking = message.get("intent_ranking")
    assert [r["name"] for r in ranking][0] == intent and len(ranking) == 3
    assert sum(r["confidence"] for r in ranking) == pytest.approx(1.0, abs=1e-5)

    loaded = LinearIntentClassifier.load(LinearIntentClassifier.get_default_config(), model_storage, resource, context)
    again = pipeline([Message.build(text=text)])[0]
    loaded.process([again])
    assert [r["name"] for r in again.get("intent_ranking")] == [r["name"] for r in ranking]
    assert [r["confidence"] for r in again.get("intent_ranking")] == pytest.approx([r["confidence"] for r in ranking], abs=1e-5)


def test_two_intents_and_a_short_ranking(pipeline, model_storage, context):
    classifier, _ = train(pipeline, model_storage, context,
                          examples={k: TRAIN[k] for k in ("greet", "report_fault")}, ranking_length=1)
    message = pipeline([Message.build(text="my fridge is broken")])[0]
    classifier.process([message])
    assert message.get("intent")["name"] == "report_fault"
    assert len(message.get("intent_ranking")) == 1


def test_dense_features_alone_are_enough(pipeline, model_storage, context):
    classifier, _ = train(pipeline, model_storage, context, sparse_weight=0.0)
    # One block per featurizer, each normalised on its own.
    assert [(origin, kind) for origin, kind, _ in classifier.blocks] == [
        ("chars", "sparse"), ("dense", "dense"), ("words", "sparse")]
    message = pipeline([Message.build(text="hello")])[0]
    classifier.process([message])
    assert message.get("intent")["name"] in TRAIN


def test_an_untrained_classifier_loads_and_predicts_nothing(model_storage, context):
    resource = Resource("never-trained")
    loaded = LinearIntentClassifier.load(LinearIntentClassifier.get_default_config(), model_storage, resource, context)
    message = Message.build(text="hello")
    loaded.process([message])
    assert message.get("intent") is None


@pytest.mark.parametrize("config", [{}, {"sparse_weight": 0.5, "dense_weight": 2.0}, {"sparse_weight": 0.0}])
def test_prediction_gives_the_probabilities_of_the_training_matrix(pipeline, model_storage, context, config):
    """Prediction goes block by block; it must equal the softmax of the matrix the classifier was trained on."""
    import numpy as np

    classifier, _ = train(pipeline, model_storage, context, **config)
    texts = ["my washer is broken", "ticket status", "hello", "zzz qqq", "", "fridge fridge fridge leaking water"]
    messages = pipeline([Message.build(text=t) for t in texts])
    logits = np.asarray(classifier._matrix(messages) @ classifier.coef.T) + classifier.intercept
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    assert classifier.predict_proba(messages) == pytest.approx(expected, abs=1e-5)
