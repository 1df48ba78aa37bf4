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
