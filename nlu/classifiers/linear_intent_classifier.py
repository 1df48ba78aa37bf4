"""A multinomial logistic-regression intent classifier over every sentence-level feature in the message.

Why not Rasa's LogisticRegressionClassifier: it concatenates raw features, so a char n-gram count vector
(hundreds of non-zeros) drowns a unit-length transformer embedding, and it pickles the model (skops).
Here each featurizer's block is L2-normalised and weighted (the weights are configuration), and the
model is persisted as plain arrays, so loading it runs no code from the model file. Training is a
convex fit of seconds to a minute where DIET needs tens of minutes on 10k examples.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, List, Optional, Text, Tuple, Type

import numpy as np
import scipy.sparse

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers import LABEL_RANKING_LENGTH
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.nlu.featurizers.featurizer import Featurizer
from rasa.shared.nlu.constants import FEATURE_TYPE_SENTENCE, INTENT, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

logger = logging.getLogger(__name__)

ARRAYS_FILE = "linear_intent_classifier.npz"
META_FILE = "linear_intent_classifier.json"


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class LinearIntentClassifier(IntentClassifier, GraphComponent):
    """Intent = argmax softmax(W·x + b), x = weighted, L2-normalised sentence features of each featurizer."""

    @classmethod
    def required_components(cls) -> List[Type]:
        return [Featurizer]

    @staticmethod
    def required_packages() -> List[Text]:
        return ["sklearn"]

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {
            # Inverse regularisation strength of the logistic regression.
            "C": 10.0,
            "max_iter": 500,
            # Relative weight of dense (transformer) and sparse (count vector) blocks after normalisation.
            "dense_weight": 1.0,
            "sparse_weight": 1.0,
            "class_weight": None,
            "ranking_length": LABEL_RANKING_LENGTH,
        }

    def __init__(
        self,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        blocks: Optional[List[Tuple[str, str, int]]] = None,
        classes: Optional[List[str]] = None,
        coef: Optional[np.ndarray] = None,
        intercept: Optional[np.ndarray] = None,
    ) -> None:
        self.config = {**self.get_default_config(), **config}
        self._model_storage = model_storage
        self._resource = resource
        # (origin, "dense"|"sparse", width) per featurizer, in a fixed order shared by training and prediction.
        self.blocks = blocks or []
        self.classes = classes or []
        self.coef = coef
        self.intercept = intercept

    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "LinearIntentClassifier":
        return cls(config, model_storage, resource)

    @staticmethod
    def _sentence_features(message: Message) -> Dict[Tuple[str, str], Any]:
        found = {}
        for f in message.features:
            if f.attribute == TEXT and f.type == FEATURE_TYPE_SENTENCE:
                kind = "sparse" if f.is_sparse() else "dense"
                found[(str(f.origin), kind)] = f.features
        return found

    def _matrix(self, messages: List[Message]) -> scipy.sparse.csr_matrix:
        per_message = [self._sentence_features(m) for m in messages]
        columns = []
        for origin, kind, width in self.blocks:
            rows = []
            for feats in per_message:
                value = feats.get((origin, kind))
                if value is None or value.shape[-1] != width:
                    rows.append(scipy.sparse.csr_matrix((1, width), dtype=np.float32))
                else:
                    rows.append(scipy.sparse.csr_matrix(value, dtype=np.float32).reshape(1, width))
            block = scipy.sparse.vstack(rows).tocsr()
            norms = np.sqrt(np.asarray(block.multiply(block).sum(axis=1)).ravel())
            block = scipy.sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ block
            weight = self.config["dense_weight" if kind == "dense" else "sparse_weight"]
            columns.append(block * float(weight))
        return scipy.sparse.hstack(columns).tocsr()

    def train(self, training_data: TrainingData) -> Resource:
        from sklearn.linear_model import LogisticRegression

        examples = [e for e in training_data.intent_examples if e.get(INTENT) and e.get(TEXT)]
        labels = {e.get(INTENT) for e in examples}
        if len(labels) < 2:
            logger.warning("LinearIntentClassifier needs at least two intents: not trained.")
            return self._resource
        blocks: Dict[Tuple[str, str], int] = {}
        for e in examples:
            for (origin, kind), value in self._sentence_features(e).items():
                blocks[(origin, kind)] = int(value.shape[-1])
        self.blocks = [(o, k, w) for (o, k), w in sorted(blocks.items())]
        X = self._matrix(examples)
        y = [e.get(INTENT) for e in examples]
        logger.info(f"LinearIntentClassifier: {X.shape[0]} examples, {X.shape[1]} features, {len(labels)} intents")
        clf = LogisticRegression(
            C=float(self.config["C"]),
            max_iter=int(self.config["max_iter"]),
            class_weight=self.config["class_weight"],
            solver="lbfgs",
        )
        clf.fit(X, y)
        self.classes = [str(c) for c in clf.classes_]
        # Binary problems give one row of coefficients: expand to two so prediction is a plain softmax.
        coef, intercept = clf.coef_, clf.intercept_
        if len(self.classes) == 2:
            coef, intercept = np.vstack([-coef, coef]) / 2, np.concatenate([-intercept, intercept]) / 2
        self.coef, self.intercept = coef.astype(np.float32), intercept.astype(np.float32)
        self.persist()
        return self._resource

    def predict_proba(self, messages: List[Message]) -> np.ndarray:
        """Intent probabilities, shape (len(messages), len(self.classes)), columns in ``self.classes`` order.

        The same arithmetic as ``_matrix(messages) @ coef.T + intercept`` (each block L2-normalised and weighted),
        done block by block on each message's own features: building the sparse matrix cost ~5 ms a message,
        8 % of the Rasa server's CPU per chat turn (py-spy, bench/bench_chat.py), for one row of a few thousand
        columns. Training keeps ``_matrix``.
        """
        logits = np.tile(self.intercept.astype(np.float32, copy=False), (len(messages), 1))
        per_message = [self._sentence_features(m) for m in messages]
        offset = 0
        for origin, kind, width in self.blocks:
            part = self.coef[:, offset:offset + width]
            offset += width
            weight = float(self.config["dense_weight" if kind == "dense" else "sparse_weight"])
            if not weight:
                continue  # a switched-off block adds nothing to any message
            for row, feats in enumerate(per_message):
                value = feats.get((origin, kind))
                if value is None or value.shape[-1] != width:
                    continue
                # Element-wise products and sums only: a BLAS call (`@`) here wakes OpenBLAS's threads, which then
                # spin for ~0.1 s after each message (half a core of the Rasa server under chat load).
                if kind == "dense":
                    data = np.asarray(value, dtype=np.float32).reshape(width)
                    product = (part * data).sum(axis=1)
                else:
                    vector = scipy.sparse.csr_matrix(value, dtype=np.float32).reshape(1, width)
                    vector.sum_duplicates()
                    data = vector.data
                    product = (part[:, vector.indices] * data).sum(axis=1)
                norm = float(np.sqrt(np.sum(data * data)))
                logits[row] += product * (weight / max(norm, 1e-12))
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def process(self, messages: List[Message]) -> List[Message]:
        if self.coef is None or not messages:
            return messages
        probas = self.predict_proba(messages)
        length = int(self.config["ranking_length"]) or len(self.classes)
        for message, p in zip(messages, probas):
            order = np.argsort(-p)
            ranking = [{"name": self.classes[i], "confidence": float(p[i])} for i in order[:length]]
            message.set(INTENT, ranking[0], add_to_output=True)
            message.set("intent_ranking", ranking, add_to_output=True)
        return messages

    def persist(self) -> None:
        with self._model_storage.write_to(self._resource) as directory:
            np.savez(directory / ARRAYS_FILE, coef=self.coef, intercept=self.intercept)
            meta = {"classes": self.classes, "blocks": self.blocks}
            (directory / META_FILE).write_text(json.dumps(meta))

    @classmethod
    def load(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> "LinearIntentClassifier":
        try:
            with model_storage.read_from(resource) as directory:
                arrays = np.load(directory / ARRAYS_FILE, allow_pickle=False)
                meta = json.loads((directory / META_FILE).read_text())
        except (ValueError, FileNotFoundError):
            logger.debug(f"LinearIntentClassifier: nothing persisted in '{resource.name}'.")
            return cls.create(config, model_storage, resource, execution_context)
        blocks = [(o, k, int(w)) for o, k, w in meta["blocks"]]
        return cls(config, model_storage, resource, blocks, meta["classes"], arrays["coef"], arrays["intercept"])
