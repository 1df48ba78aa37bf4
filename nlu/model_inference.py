"""Rasa's DIET models (entities, and the FAQ response selector) at prediction time, with less Python around them.

py-spy on one process parsing the chat benchmark's messages one at a time (2026-12-01): DIET was 47 % of a
parse, and only 13 % of DIET's time was TensorFlow computing. The rest was Python around it:
- Building the model's input: each message's sparse features (regex, lexical, word and character counts) are
  joined pairwise, a `scipy.sparse.hstack` per featurizer after a deep copy of the first, and SciPy's `bmat`
  wraps every block again on the way (35 % of DIET's time). Here a message's features of one kind are joined in
  one step, as `bmat` joins a row of COO blocks: the same matrix, values, dtypes and entry order.
- Calling the compiled prediction step: Rasa calls its `tf.function`, which matches the inputs against its
  signature, looks the traced graph up and converts each array on every call (31 %). Rasa compiles it with a
  fixed input signature, so there is one graph; here it is called directly once Rasa has compiled it, after the
  same conversion and dtype and shape checks. Anything that does not convert or match, and TensorFlow's
  run-functions-eagerly debug mode, goes through Rasa's own call, which raises TensorFlow's error as before.

Same predictions as Rasa's code (tests/nlu/rasa_env/test_model_inference.py compares both on trained models);
~11 % less CPU per parse (same process, alternating, 2026-12-01: 22.8 -> 20.3 ms). Rasa 3.6.21's TensorFlow
2.12 and SciPy 1.10 are pinned (requirements/rasa.txt); `_call_flat` is TensorFlow 2.12's own entry point of a
concrete function, which its `__call__` reaches after those checks.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional, Text

_APPLIED = False


def apply() -> None:
    """Installs both changes once per process (idempotent); nlu.rasa_runtime.apply calls it."""
    global _APPLIED
    if _APPLIED:
        return
    _features_joined_at_once()
    _compiled_prediction_called_directly()
    _APPLIED = True


def join_features(features: List[Any], featurizers: List[Text]) -> Optional[Any]:
    """One Features object from a message's features of one attribute and type ([Features] -> Features), as Rasa's
    `Message._combine_features`: columns in the given order, origin = `featurizers`. Sparse COO matrices are
    joined as `scipy.sparse.bmat` joins a row of blocks; dense arrays along their last axis. Fewer than two
    features, other sparse formats, and shapes that differ in more than the joined axis go to Rasa's code (its copy,
    or its ValueError with its message)."""
    import numpy as np
    from rasa.shared.nlu.training_data.features import Features
    from scipy.sparse import coo_matrix
    from scipy.sparse._sputils import get_index_dtype, upcast

    if len(features) < 2:
        return _rasa_combine(features, featurizers)
    matrices = [f.features for f in features]
    first = features[0]
    if all(type(m) is coo_matrix for m in matrices):
        rows = matrices[0].shape[0]
        if any(m.shape[0] != rows for m in matrices):
            return _rasa_combine(features, featurizers)
        col_offsets = np.append(0, np.cumsum([m.shape[1] for m in matrices]))
        shape = (rows, int(col_offsets[-1]))
        index_dtype = get_index_dtype(maxval=max(shape))
        # Rasa widens the type pair by pair, which for mixed small integers is not the widening of all at once.
        dtype = functools.reduce(upcast, [m.dtype for m in matrices])
        data = np.concatenate([m.data for m in matrices]).astype(dtype, copy=False)
        row = np.concatenate([m.row for m in matrices])
        col = np.concatenate([np.add(m.col, offset, dtype=index_dtype) for m, offset in zip(matrices, col_offsets)])
        joined: Any = coo_matrix((data, (row, col)), shape=shape)
    elif (all(type(m) is np.ndarray for m in matrices) and len({m.shape[:-1] for m in matrices}) == 1
          and matrices[0].ndim > 0):
        dtype = functools.reduce(np.promote_types, [m.dtype for m in matrices])  # pair by pair, as Rasa's
        joined = np.concatenate(matrices, axis=-1, dtype=dtype)
    else:  # other formats, or shapes that do not fit: Rasa's code and its error
        return _rasa_combine(features, featurizers)
    return Features(joined, first.type, first.attribute, featurizers)


_rasa_combine: Any = None
# The model attribute holding (compiled function, its concrete function, its flat input specs).
DIRECT = "_direct_predict"


def _features_joined_at_once() -> None:
    global _rasa_combine
    from rasa.shared.nlu.training_data.message import Message

    _rasa_combine = Message._combine_features  # a staticmethod read through the class: the plain function

    @functools.wraps(_rasa_combine)
    def _combine_features(features: List[Any], featurizers: List[Text]) -> Optional[Any]:
        return join_features(features, featurizers)

    Message._combine_features = staticmethod(_combine_features)  # type: ignore[method-assign]


def _compiled_prediction_called_directly() -> None:
    import tensorflow as tf
    from keras.utils import tf_utils
    from rasa.shared.constants import DIAGNOSTIC_DATA
    from rasa.utils.tensorflow.models import RasaModel

    rasa_predict = RasaModel._rasa_predict

    @functools.wraps(rasa_predict)
    def _rasa_predict(self: RasaModel, batch_in: Any) -> Dict[Text, Any]:
        compiled = self._tf_predict_step  # None until Rasa's first call compiles it
        if (compiled is None or self._run_eagerly or not self.prepared_for_prediction
                or tf.config.functions_run_eagerly()):
            return rasa_predict(self, batch_in)  # Rasa compiles (or runs eagerly) on its first call
        direct = self.__dict__.get(DIRECT)
        if direct is None or direct[0] is not compiled:
            concrete = compiled.get_concrete_function()  # the one graph of its fixed input signature
            specs = tf.nest.flatten(concrete.structured_input_signature[0], expand_composites=True)
            direct = (compiled, concrete, specs)
            # Set past Keras's attribute tracking: the model's saved weights stay as Rasa writes them.
            object.__setattr__(self, DIRECT, direct)
        _, concrete, specs = direct
        flat = tf.nest.flatten(batch_in)
        if len(flat) != len(specs):
            return rasa_predict(self, batch_in)
        tensors = []
        for value, spec in zip(flat, specs):
            # As TensorFlow's call converts them (cast_inputs_to_signature), then its compatibility check; anything
            # that fails either takes Rasa's call, which raises TensorFlow's error.
            try:
                tensor = value if isinstance(value, tf.Tensor) else tf.convert_to_tensor(value, dtype_hint=spec.dtype)
            except (ValueError, TypeError):
                return rasa_predict(self, batch_in)
            if tensor.dtype != spec.dtype or not spec.shape.is_compatible_with(tensor.shape):
                return rasa_predict(self, batch_in)
            tensors.append(tensor)
        self._training = False
        outputs = tf_utils.sync_to_numpy_or_python_type(concrete._call_flat(tensors, concrete.captured_inputs))
        if DIAGNOSTIC_DATA in outputs:
            outputs[DIAGNOSTIC_DATA] = self._empty_lists_to_none_in_dict(outputs[DIAGNOSTIC_DATA])
        return outputs

    RasaModel._rasa_predict = _rasa_predict  # type: ignore[method-assign]
