"""Saving and loading faq_tf QAT models (`.h5` or SavedModel), without ever running stored code.

A QAT model holds tfmot wrappers and faq_tf quantizers; Keras rebuilds them from their
configs under `quantize_scope()`. `save_model` refuses the `.keras` format, which
tensorflow-model-optimization 0.8.1 cannot reload, and writes `.h5` files atomically;
`load_model` refuses a model that would deserialize Python code (a Lambda layer), and
reads fp32 `.keras` files (Keras 3 or tf_keras) through `faq_tf.from_keras3`.

Example:

  faq_tf.save_model(qat, "model.h5")
  qat = faq_tf.load_model("model.h5")
"""

from __future__ import annotations

import contextlib
import os

from faq_tf.compat import custom_objects, keras, tfmot

__all__ = ["quantize_scope", "save_model", "load_model"]


def quantize_scope() -> contextlib.AbstractContextManager:
    """The scope needed to load a faq_tf QAT model (`.h5` or SavedModel).

    It registers faq_tf's quantizers, config and layers next to tfmot's own objects.

    Returns:
      A context manager; Keras deserializes faq_tf objects inside it.

    Example:
      >>> with faq_tf.quantize_scope():
      ...     model = keras.models.load_model("model.h5")
    """
    return tfmot.quantization.keras.quantize_scope(custom_objects())


_KERAS_FORMAT_ERROR = (
    "A QAT model saved as .keras cannot be reloaded with tensorflow-model-optimization 0.8.1 "
    "(tfmot's quantize layers lose variables in that format). Save to a path ending in .h5, "
    "or to a directory (SavedModel)."
)
_KERAS_QAT_FILE_ERROR = (
    "this .keras file holds a QAT model (tfmot quantize wrappers), which tensorflow-model-optimization "
    "0.8.1 cannot reload from .keras (its quantize layers lose variables in that format). Save QAT "
    "models with faq_tf.save_model to .h5 or a SavedModel folder; an fp32 .keras model loads fine."
)


def save_model(model: keras.Model, path: str | os.PathLike) -> None:
    """Saves a QAT model as `.h5` or SavedModel, refusing the broken `.keras` format.

    Args:
      model: the model to save (any Keras model; faq_tf's QAT models are the point).
      path: a path ending in `.h5`/`.hdf5` (written to a temporary file, then renamed),
        or anything else for a SavedModel directory.

    Raises:
      ValueError: for a `.keras` path.
    """
    path = os.fspath(path)
    if path.endswith(".keras"):
        raise ValueError(f"{path}: {_KERAS_FORMAT_ERROR}")
    if path.endswith((".h5", ".hdf5")):
        # Written beside and renamed: a failed save (full disk) never damages an older file.
        tmp = f"{path}.tmp{os.getpid()}.h5"
        try:
            model.save(tmp, save_format="h5")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        # Layer call traces are skipped: a wrapped BatchNormalization's traced call would
        # capture its quantized gamma from the wrapper's graph, which SavedModel refuses.
        # Loading rebuilds the layers from their configs under `quantize_scope` instead.
        model.save(path, save_format="tf", save_traces=False)


def _model_config_text(path: str) -> str:
    """The raw model config stored in an .h5 file or a SavedModel folder ("" if none)."""
    if os.path.isdir(path):
        meta = os.path.join(path, "keras_metadata.pb")
        if os.path.exists(meta):
            with open(meta, "rb") as f:
                return f.read().decode("utf-8", "replace")
        return ""
    try:
        import h5py

        with h5py.File(path, "r") as f:
            config = f.attrs.get("model_config", "")
    except OSError:
        return ""  # not HDF5: Keras' own loader reports it
    return config.decode() if isinstance(config, bytes) else str(config)


def _refuse_code(path: str) -> None:
    """Raises if the saved model would deserialize Python code (a Lambda layer).

    Keras' safe_mode only guards the .keras format; an .h5 Lambda layer holds marshalled
    bytecode that loading would run. faq_tf never loads it.
    """
    text = _model_config_text(path)
    for marker in ('"class_name": "Lambda"', '"class_name":"Lambda"'):
        if marker in text:
            raise ValueError(
                f"{path} contains a Lambda layer (stored Python bytecode). faq_tf does not deserialize code "
                "(Keras safe_mode stays on). Rebuild the model in Python and use model.load_weights(path), "
                "or replace the Lambda with a registered layer."
            )


def load_model(path: str | os.PathLike, compile: bool = False) -> keras.Model:
    """Loads a model saved by `save_model`; never runs stored code.

    Keras safe_mode stays on, and models with Lambda layers (whose .h5 config holds
    bytecode that safe_mode does not cover) are refused before anything is deserialized.
    A `.keras` file holding an fp32 model (Keras 3's or tf_keras's format) loads through
    `faq_tf.from_keras3`; a QAT model in a `.keras` file is refused (tfmot cannot reload it).

    Args:
      path: an `.h5` file, a SavedModel directory, or an fp32 `.keras` file.
      compile: whether to restore the training configuration (optimizer, loss) too.

    Returns:
      The model, with faq_tf's wrappers and quantizers rebuilt from their configs.

    Raises:
      FileNotFoundError: if nothing exists at `path`.
      ValueError: for a QAT model in a `.keras` file, a model with a Lambda layer, or a
        file that is not a readable model (`Keras3ConversionError` for `.keras` files).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No model at {path}")
    if path.endswith(".keras"):
        from faq_tf.keras3 import from_keras3, keras_file_info

        if keras_file_info(path).qat:
            raise ValueError(f"{path}: {_KERAS_QAT_FILE_ERROR}")
        return from_keras3(path)
    _refuse_code(path)
    with quantize_scope():
        try:
            return keras.models.load_model(path, compile=compile, safe_mode=True)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"Could not load a Keras model from {path}: {e}") from e
