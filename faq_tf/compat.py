"""The one place that deals with TensorFlow/Keras version differences.

tfmot 0.8.1 type-checks against Keras 2 (`tf_keras`) classes and rejects Keras 3
models. Everything in faq_tf therefore imports `keras`, `tf` and `tfmot` from here,
never `import keras` or `tf.keras` directly.

`TF_USE_LEGACY_KERAS=1` must be set before TensorFlow is first imported so that
`tf.keras` (used inside TensorFlow and tfmot) is also Keras 2.
"""

from __future__ import annotations

import os
import platform

# tf.keras resolves lazily, so this also helps when TensorFlow was imported first.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN's CPU kernels. TensorFlow turns them on by default only on x86 CPUs with AVX-512
# VNNI/BF16 or AMX; elsewhere (AMD Zen 3, AVX2-only Intel) it leaves them off, and there a
# training step runs 1.7x slower (`python -m benchmarks.step_time`, docs/results.md). Read
# when TensorFlow loads, so it takes effect only when faq_tf is imported first; an explicit
# TF_ENABLE_ONEDNN_OPTS=0 is kept. x86-64 only: that is where it was measured, and on ARM
# TensorFlow picks per CPU itself.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras", "tfmot", "check_keras_model", "register", "custom_objects", "deserialize"]

KERAS_VERSION: str = keras.__version__


def register(cls):
    """Registers a class with Keras serialization under the ``faq_tf`` package."""
    return keras.utils.register_keras_serializable(package="faq_tf")(cls)


def custom_objects() -> dict:
    """The classes registered by `register`, under their plain class names.

    Legacy (.h5) loading looks objects up by class name; this derives that mapping
    from the Keras registry instead of keeping a second list by hand.
    """
    prefix = "faq_tf>"
    return {
        name[len(prefix) :]: obj for name, obj in keras.utils.get_custom_objects().items() if name.startswith(prefix)
    }


def deserialize(config):
    """Deserializes a nested faq_tf or tfmot object (e.g. a quantizer) from its config."""
    return keras.utils.deserialize_keras_object(config, custom_objects=custom_objects())


def check_keras_model(model: object) -> None:
    """Raises a clear error when ``model`` is not a Keras 2 (tf_keras) model.

    Args:
      model: the object a user passed as a model.

    Raises:
      TypeError: if ``model`` is a Keras 3 model or not a Keras model at all.
    """
    if isinstance(model, keras.Model):
        return
    module = type(model).__module__
    if module.startswith("keras"):
        raise TypeError(
            f"{type(model).__name__} is a Keras 3 model, but tfmot 0.8.1 (and so this faq_tf "
            "function) needs Keras 2 (tf_keras). Convert it first: faq_tf.from_keras3(model) "
            "(faq_tf.quantize_model does that itself)."
        )
    raise TypeError(f"Expected a tf_keras Model, got {type(model).__name__}.")
