"""Fixtures for the custom component tests: a tiny BERT checkpoint built here (never the real weights),
so the real transformers loading and tokenising code runs in seconds."""

from __future__ import annotations

import pathlib

import pytest

from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.nlu.tokenizers.whitespace_tokenizer import WhitespaceTokenizer

WORDS = ("my fridge is broken the washer shows error e21 where ticket order number hello hi thanks "
         "bye status of please help leaking water boiler cold").split()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    import tensorflow as tf
    from transformers import BertConfig, BertTokenizerFast, TFBertModel

    directory = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s", "##ed", "##ing"]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True).save_pretrained(directory)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    # Python, NumPy and TensorFlow seeds: Keras draws unseeded initialisers from Python's random, so the
    # tiny checkpoint is the same whichever tests ran before it.
    tf.keras.utils.set_random_seed(0)
    model = TFBertModel(config)
    model(model.dummy_inputs)
    model.save_pretrained(directory)
    return directory


@pytest.fixture()
def model_storage(tmp_path: pathlib.Path) -> LocalModelStorage:
    return LocalModelStorage(tmp_path)


@pytest.fixture()
def context() -> ExecutionContext:
    return ExecutionContext(GraphSchema({}), node_name="node")


def context_for(node_name: str) -> ExecutionContext:
    """Rasa names each featurizer's features after its graph node: distinct nodes, distinct feature origins."""
    return ExecutionContext(GraphSchema({}), node_name=node_name)


@pytest.fixture()
def tokenizer() -> WhitespaceTokenizer:
    return WhitespaceTokenizer(WhitespaceTokenizer.get_default_config())
