"""SentenceTransformerFeaturizer: text -> sentence and per-token features from a local checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from rasa.engine.storage.resource import Resource
from rasa.shared.exceptions import RasaException
from rasa.shared.nlu.constants import TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from nlu import SentenceTransformerFeaturizer


def make(tiny_model, model_storage, context, **config):
    full = {**SentenceTransformerFeaturizer.get_default_config(), "model_path": str(tiny_model), **config}
    return SentenceTransformerFeaturizer.create(full, model_storage, Resource("st"), context)


def featurize(featurizer, tokenizer, text):
    message = Message.build(text=text)
    tokenizer.process([message])
    featurizer.process([message])
    return message


@pytest.mark.parametrize(
    "text, n_tokens",
    [("hello", 1), ("my fridge is broken", 4), ("the washer shows error E21!", 5), ("zzz unknownword qqq", 3)],
)
def test_text_gets_a_unit_sentence_vector_and_one_vector_per_token(tiny_model, model_storage, context, tokenizer, text, n_tokens):
    featurizer = make(tiny_model, model_storage, context)
    sequence, sentence = featurize(featurizer, tokenizer, text).get_dense_features(TEXT)
    assert sentence.features.shape == (1, 16)
    assert np.linalg.norm(sentence.features) == pytest.approx(1.0, abs=1e-5)
    assert sequence.features.shape == (n_tokens, 16)
    assert np.all(np.abs(sequence.features).sum(axis=1) > 0)  # every token overlaps a word piece


def test_tokens_cut_off_by_max_length_get_zero_vectors(tiny_model, model_storage, context, tokenizer):
    featurizer = make(tiny_model, model_storage, context, max_length=4)  # [CLS] + 2 pieces + [SEP]
    sequence, _ = featurize(featurizer, tokenizer, "my fridge is broken").get_dense_features(TEXT)
    assert np.abs(sequence.features[:2]).sum() > 0
    assert np.abs(sequence.features[2:]).sum() == 0


def test_features_do_not_depend_on_the_batch(tiny_model, model_storage, context, tokenizer):
    featurizer = make(tiny_model, model_storage, context, batch_size=8)
    texts = ["hi", "my fridge is broken and leaking water please help", "status of ticket"]
    data = TrainingData([Message.build(text=t, intent="x") for t in texts])
    tokenizer.process_training_data(data)
    featurizer.process_training_data(data)
    for message in data.training_examples:
        alone = featurize(featurizer, tokenizer, message.get(TEXT)).get_dense_features(TEXT)[1].features
        np.testing.assert_allclose(message.get_dense_features(TEXT)[1].features, alone, atol=1e-4)


def test_unnormalised_mean_pooling_and_no_sequence_features(tiny_model, model_storage, context, tokenizer):
    featurizer = make(tiny_model, model_storage, context, normalize=False, sequence_features=False)
    sequence, sentence = featurize(featurizer, tokenizer, "thanks bye").get_dense_features(TEXT)
    assert sequence is None
    assert np.linalg.norm(sentence.features) != pytest.approx(1.0, abs=1e-3)


def test_a_message_without_text_is_left_alone(tiny_model, model_storage, context):
    featurizer = make(tiny_model, model_storage, context)
    message = Message(data={"action_name": "utter_greet"})
    featurizer.process([message])
    assert message.features == []


def test_a_missing_checkpoint_is_a_clear_error(tmp_path, model_storage, context):
    with pytest.raises(RasaException, match="no transformer checkpoint"):
        make(tmp_path / "nowhere", model_storage, context)


FINE_TUNE = {
    "report_fault": ["my fridge is broken", "the washer shows error e21", "boiler is leaking water",
                     "fridge not cold", "washer broken please help", "my boiler is broken"],
    "ticket_status": ["status of my ticket", "where is my ticket", "ticket number status please",
                      "what is the status of ticket", "order number status", "status of my order"],
}


def _sentence_vectors(featurizer, tokenizer, texts):
    return np.vstack([featurize(featurizer, tokenizer, t).get_dense_features(TEXT)[1].features for t in texts])


def _separation(featurizer, tokenizer):
    """Mean cosine similarity within intents minus across them (the vectors are unit length)."""
    a = _sentence_vectors(featurizer, tokenizer, FINE_TUNE["report_fault"])
    b = _sentence_vectors(featurizer, tokenizer, FINE_TUNE["ticket_status"])
    within = ((a @ a.T).mean() + (b @ b.T).mean()) / 2
    return within - (a @ b.T).mean()


def test_without_fine_tuning_training_stores_nothing(tiny_model, model_storage, context):
    featurizer = make(tiny_model, model_storage, context)
    data = TrainingData([Message.build(text=t, intent=i) for i, ts in FINE_TUNE.items() for t in ts])
    resource = featurizer.train(data)
    with pytest.raises(ValueError):
        with model_storage.read_from(resource):
            pass


def test_fine_tuning_pulls_intents_apart_and_survives_persist_and_load(tiny_model, model_storage, context, tokenizer):
    config = {**SentenceTransformerFeaturizer.get_default_config(), "model_path": str(tiny_model),
              "fine_tune_epochs": 30, "fine_tune_learning_rate": 5e-3, "fine_tune_batch_size": 4}
    frozen = make(tiny_model, model_storage, context)
    resource = Resource("tuned")
    featurizer = SentenceTransformerFeaturizer.create(config, model_storage, resource, context)
    data = TrainingData([Message.build(text=t, intent=i) for i, ts in FINE_TUNE.items() for t in ts])
    featurizer.train(data)

    loaded = SentenceTransformerFeaturizer.load(config, model_storage, resource, context)
    assert _separation(loaded, tokenizer) > _separation(frozen, tokenizer) + 0.1
    text = ["my washer is leaking"]
    np.testing.assert_allclose(_sentence_vectors(loaded, tokenizer, text),
                               _sentence_vectors(featurizer, tokenizer, text), atol=1e-5)
    # The stored weights are the tuned ones: a load of the same checkpoint without them differs.
    assert not np.allclose(_sentence_vectors(loaded, tokenizer, text), _sentence_vectors(frozen, tokenizer, text))


def test_fine_tuning_needs_two_intents(tiny_model, model_storage, context, tokenizer):
    config = {**SentenceTransformerFeaturizer.get_default_config(), "model_path": str(tiny_model), "fine_tune_epochs": 2}
    resource = Resource("one-intent")
    featurizer = SentenceTransformerFeaturizer.create(config, model_storage, resource, context)
    featurizer.train(TrainingData([Message.build(text="hello", intent="greet")]))
    loaded = SentenceTransformerFeaturizer.load(config, model_storage, resource, context)
    frozen = make(tiny_model, model_storage, context)
    np.testing.assert_allclose(_sentence_vectors(loaded, tokenizer, ["hello"]),
                               _sentence_vectors(frozen, tokenizer, ["hello"]), atol=1e-6)


def test_a_text_seen_before_is_not_encoded_again_and_gets_the_same_features(tiny_model, model_storage, context, tokenizer):
    featurizer = make(tiny_model, model_storage, context, cache_size=2)
    first = featurize(featurizer, tokenizer, "my fridge is broken").get_dense_features(TEXT)
    calls = []
    forward = featurizer._forward
    featurizer._forward = lambda *args: calls.append(args) or forward(*args)
    again = featurize(featurizer, tokenizer, "my fridge is broken").get_dense_features(TEXT)
    assert calls == []
    for before, after in zip(first, again):
        np.testing.assert_array_equal(before.features, after.features)
    # Least recently used texts leave the cache: a third text pushes the first one out.
    featurize(featurizer, tokenizer, "hello")
    featurize(featurizer, tokenizer, "thanks")
    featurize(featurizer, tokenizer, "my fridge is broken")
    assert len(calls) == 3
    assert list(featurizer._cache) == ["hello", "thanks", "my fridge is broken"][-2:]


def test_training_data_is_never_cached(tiny_model, model_storage, context, tokenizer):
    featurizer = make(tiny_model, model_storage, context)
    message = Message.build(text="my fridge is broken", intent="report")
    tokenizer.process([message])
    featurizer.process_training_data(TrainingData([message]))
    assert not featurizer._cache
