"""Keras 3 models into `tf_keras`: `from_keras3(model_or_path)`.

faq_tf quantizes through tfmot 0.8.1, which works in Keras 2 (`tf_keras`); `import keras`
is Keras 3 and `model.save("x.keras")` is what Keras 3 users have. `from_keras3` rebuilds
a Keras 3 `Functional` or `Sequential` model layer by layer in `tf_keras`: the same graph
(read from the model's own config, so shared layers, multiple inputs and outputs and
nested models come along), the same layer and model names, and every weight, including
BatchNormalization's moving statistics. A Sequential model comes back as a Functional one.

Only Keras's built-in layers convert, each into the `tf_keras` class of the same name;
a Lambda, a custom layer or a subclassed model is refused with an error naming it. A
`.keras` file is checked before anything in it is deserialized: a Lambda (stored Python
code) is refused, and Keras's `safe_mode` stays on.

Example:

  import keras                      # Keras 3
  model3 = keras.saving.load_model("my_model.keras")
  model = faq_tf.from_keras3(model3)            # or faq_tf.from_keras3("my_model.keras")
  qat = faq_tf.quantize_model(model, "w8a8", calibration_images)
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import zipfile
from typing import Any

from absl import logging

from faq_tf.compat import keras

__all__ = ["Keras3ConversionError", "KerasFileInfo", "as_tf_keras", "from_keras3", "is_keras3_model", "keras_file_info"]


class Keras3ConversionError(ValueError):
    """A Keras 3 model or `.keras` file that faq_tf cannot rebuild in tf_keras."""


def is_keras3_model(obj: object) -> bool:
    """True for a Keras 3 model (an instance of `keras.Model` from the `keras` 3 package)."""
    if isinstance(obj, keras.Model) or "keras" not in sys.modules:
        return False  # no Keras 3 model can exist before Keras 3 is imported
    return isinstance(obj, sys.modules["keras"].Model)


# --- .keras files ------------------------------------------------------------------------

# Class names of tfmot's quantize wrappers: a .keras file holding them is a QAT model.
_QAT_CLASSES = {"QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer", "QuantizeAnnotate"}


class KerasFileInfo:
    """What a `.keras` file holds, read from its config without deserializing anything.

    Attributes:
      path: the file.
      keras_version: the Keras version that wrote it ("3.x" or "2.x" for tf_keras).
      class_names: every class name in the model config.
      lambdas: names of Lambda layers.
      qat: whether it holds tfmot quantize wrappers (a QAT model).
    """

    def __init__(self, path: str):
        self.path = path
        try:
            with zipfile.ZipFile(path) as zf:
                config = json.loads(zf.read("config.json"))
                metadata = json.loads(zf.read("metadata.json")) if "metadata.json" in zf.namelist() else {}
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as e:
            raise Keras3ConversionError(
                f"{path} is not a readable .keras file (a zip with config.json): {e}. Save it again with model.save()."
            ) from None
        self.keras_version = str(metadata.get("keras_version", "3"))
        self.class_names: set[str] = set()
        self.lambdas: list[str] = []
        self._walk(config)
        self.qat = bool(self.class_names & _QAT_CLASSES)

    @property
    def is_keras3(self) -> bool:
        return not self.keras_version.startswith("2.")

    def _walk(self, node: Any) -> None:
        if isinstance(node, dict):
            name = node.get("class_name")
            if isinstance(name, str):
                self.class_names.add(name)
                if name == "Lambda":
                    self.lambdas.append(str(node.get("config", {}).get("name", "?")))
            for value in node.values():
                self._walk(value)
        elif isinstance(node, list):
            for value in node:
                self._walk(value)


def keras_file_info(path: str | os.PathLike) -> KerasFileInfo:
    """Reads what a `.keras` file holds (see `KerasFileInfo`) without loading it."""
    return KerasFileInfo(os.fspath(path))


def _refuse_lambdas(info: KerasFileInfo) -> None:
    if info.lambdas:
        raise Keras3ConversionError(
            f"{info.path} contains Lambda layer(s) {info.lambdas} (stored Python code). faq_tf does not "
            "deserialize code (Keras safe_mode stays on). Replace each Lambda with a built-in layer "
            "(Rescaling, Normalization, Activation, ...) and save again."
        )


def _load_keras3_file(path: str):
    import keras as keras3

    info = keras_file_info(path)
    _refuse_lambdas(info)
    try:
        return keras3.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types for unknown classes and bad files
        raise Keras3ConversionError(
            f"Keras 3 could not load {path}: {' '.join(str(e).split())[:500]}. A custom layer or model "
            "must be importable and registered (keras.saving.register_keras_serializable); faq_tf "
            "converts built-in layers only."
        ) from e


# --- layers ------------------------------------------------------------------------------

# Keyword arguments every tf_keras layer takes through **kwargs.
_BASE_LAYER_KWARGS = {
    "name",
    "trainable",
    "dtype",
    "input_shape",
    "batch_input_shape",
    "batch_size",
    "input_dim",
    "autocast",
    "dynamic",
}


def _clean(node: Any) -> Any:
    """Keras 3 serialization -> tf_keras: dtype policies become their names."""
    if isinstance(node, dict):
        if node.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(node.get("config"), dict):
            return node["config"]["name"]
        return {k: _clean(v) for k, v in node.items() if k not in ("module", "registered_name")}
    if isinstance(node, (list, tuple)):
        return [_clean(v) for v in node]
    return node


def _accepted_kwargs(cls: type) -> set[str] | None:
    """The constructor arguments of a tf_keras layer class (None: anything goes)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is keras.layers.Layer:
            break
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names | _BASE_LAYER_KWARGS


_ADVICE = (
    "faq_tf converts Keras's built-in layers only. Rebuild the model with `from faq_tf.compat import keras` "
    "(tf_keras) and load its weights by layer name, or replace the layer with built-in ones."
)


def _what_to_do(layer3) -> str:
    cls = type(layer3)
    return f"layer '{layer3.name}' ({cls.__module__}.{cls.__name__}) cannot be rebuilt in tf_keras: {_ADVICE}"


def _convert_layer(layer3) -> keras.layers.Layer:
    """A tf_keras layer configured like the Keras 3 `layer3` (weights are copied later)."""
    import keras as keras3

    cls_name = type(layer3).__name__
    if isinstance(layer3, keras3.Model):
        return _convert_model(layer3)
    if cls_name == "Lambda":
        raise Keras3ConversionError(f"layer '{layer3.name}' is a Lambda (Python code): {_ADVICE}")
    if not type(layer3).__module__.startswith("keras.src.layers") or not hasattr(keras.layers, cls_name):
        raise Keras3ConversionError(_what_to_do(layer3))
    cls = getattr(keras.layers, cls_name)
    config = _clean(keras3.saving.serialize_keras_object(layer3))["config"]
    if cls_name == "InputLayer":
        config["batch_input_shape"] = config.pop("batch_shape", config.get("batch_input_shape"))
        config.pop("optional", None)
    for key in [k for k in config if k.endswith("_initializer")]:
        del config[key]  # the weights are copied; Keras 3's initializer configs differ from tf_keras's
    accepted = _accepted_kwargs(cls)
    for key in [k for k in config if k not in accepted]:
        value = config.pop(key)
        if value not in (None, False, 0, {}, []):
            raise Keras3ConversionError(
                f"layer '{layer3.name}' ({cls_name}) sets {key}={value!r}, which tf_keras's {cls_name} does not "
                "have. Remove that setting (or rebuild the layer in tf_keras)."
            )
    try:
        return cls.from_config(config)
    except Exception as e:
        raise Keras3ConversionError(f"layer '{layer3.name}' ({cls_name}): tf_keras refuses its config: {e}") from e


# --- models ------------------------------------------------------------------------------


def _history(node: Any) -> tuple[str, int, int] | None:
    if isinstance(node, dict) and node.get("class_name") == "__keras_tensor__":
        name, node_index, tensor_index = node["config"]["keras_history"]
        return name, int(node_index), int(tensor_index)
    return None


def _resolve(node: Any, tensors: dict) -> Any:
    """Replaces the serialized tensors in a node's call arguments with tf_keras tensors."""
    history = _history(node)
    if history is not None:
        return tensors[history]
    if isinstance(node, dict):
        return {k: _resolve(v, tensors) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_resolve(v, tensors) for v in node]
    return node


def _endpoints(spec: Any) -> list[tuple[str, int, int]]:
    """input_layers / output_layers of a config: [name, node, tensor] or a list of them."""
    if spec and isinstance(spec[0], str):
        spec = [spec]
    return [(name, int(node), int(tensor)) for name, node, tensor in spec]


def _convert_model(model3) -> keras.Model:
    """Rebuilds a Keras 3 Functional or Sequential model (graph and weights) in tf_keras."""
    import keras as keras3

    if not isinstance(model3, (keras3.Sequential, keras3.Model)) or not hasattr(model3, "get_config"):
        raise Keras3ConversionError(_what_to_do(model3))
    if isinstance(model3, keras3.Sequential):
        return _convert_sequential(model3)
    if type(model3).__name__ != "Functional":
        raise Keras3ConversionError(
            f"model '{model3.name}' is a subclassed Keras 3 model ({type(model3).__name__}): its graph lives in "
            "Python code, which faq_tf cannot read. Write it with the functional API (keras.Input, layer calls, "
            "keras.Model(inputs, outputs)) and convert that."
        )
    config = model3.get_config()
    tensors: dict[tuple[str, int, int], Any] = {}
    pairs = []
    for layer_config in config["layers"]:
        layer3 = model3.get_layer(layer_config["name"])
        if type(layer3).__name__ == "InputLayer":
            c = _clean(keras3.saving.serialize_keras_object(layer3))["config"]
            shape = c.get("batch_shape") or c.get("batch_input_shape")
            tensors[(layer3.name, 0, 0)] = keras.Input(batch_shape=shape, dtype=c.get("dtype"), name=layer3.name)
            continue
        layer2 = _convert_layer(layer3)
        pairs.append((layer3, layer2))
        for node_index, node in enumerate(layer_config["inbound_nodes"]):
            args = _resolve(node.get("args", []), tensors)
            kwargs = {k: v for k, v in _resolve(node.get("kwargs", {}), tensors).items() if v is not None}
            outputs = layer2(*args, **kwargs)
            flat = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            for tensor_index, tensor in enumerate(flat):
                tensors[(layer3.name, node_index, tensor_index)] = tensor
    inputs = [tensors[e] for e in _endpoints(config["input_layers"])]
    outputs = [tensors[e] for e in _endpoints(config["output_layers"])]
    single_in = config["input_layers"] and isinstance(config["input_layers"][0], str)
    single_out = config["output_layers"] and isinstance(config["output_layers"][0], str)
    model = keras.Model(inputs[0] if single_in else inputs, outputs[0] if single_out else outputs, name=model3.name)
    _copy_weights(pairs)
    return model


def _convert_sequential(model3) -> keras.Model:
    if not model3.built or not model3.inputs:
        raise Keras3ConversionError(
            f"Sequential model '{model3.name}' has no input shape yet: start it with keras.Input(shape) "
            "(or call it on data once) before converting."
        )
    spec = model3.inputs[0]
    x = inputs = keras.Input(batch_shape=tuple(spec.shape), dtype=spec.dtype, name=spec.name.split(":")[0])
    pairs = []
    for layer3 in model3.layers:
        layer2 = _convert_layer(layer3)
        pairs.append((layer3, layer2))
        x = layer2(x)
    model = keras.Model(inputs, x, name=model3.name)
    _copy_weights(pairs)
    return model


def _copy_weights(pairs) -> None:
    for layer3, layer2 in pairs:
        if isinstance(layer2, keras.Model):
            continue  # a nested model copied its own weights
        values = layer3.get_weights()
        shapes2 = [tuple(w.shape) for w in layer2.weights]
        shapes3 = [tuple(v.shape) for v in values]
        if shapes2 != shapes3:
            raise Keras3ConversionError(
                f"layer '{layer3.name}' ({type(layer3).__name__}): Keras 3 holds weights of shapes {shapes3}, "
                f"the tf_keras layer {shapes2}; this layer cannot be converted."
            )
        layer2.set_weights(values)


def from_keras3(model_or_path: Any) -> keras.Model:
    """Rebuilds a Keras 3 model, or the model in a `.keras` file, in tf_keras.

    Args:
      model_or_path: a Keras 3 `Functional` or `Sequential` model, or the path of a
        `.keras` file (written by Keras 3, or by tf_keras's own `.keras` format).

    Returns:
      A tf_keras Functional model with the same layer names, graph and weights; it
      computes the same outputs (equal up to float rounding).

    Raises:
      Keras3ConversionError: a Lambda, custom or subclassed layer or model (named, with
        what to do), or a file that is not a readable `.keras` model.
      FileNotFoundError: if the path does not exist.
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"No model at {path}")
        if not path.endswith(".keras"):
            raise Keras3ConversionError(f"{path}: from_keras3 reads .keras files; load other formats with Keras first.")
        info = keras_file_info(path)
        if not info.is_keras3:
            _refuse_lambdas(info)
            return keras.models.load_model(path, compile=False, safe_mode=True)
        model3 = _load_keras3_file(path)
    else:
        model3 = model_or_path
    if isinstance(model3, keras.Model):
        return model3  # already tf_keras
    if not is_keras3_model(model3):
        raise TypeError(f"Expected a Keras 3 model or a .keras path, got {type(model3).__name__}")
    model = _convert_model(model3)
    logging.info(
        "converted Keras 3 model '%s' to tf_keras (faq_tf.from_keras3): %d layers", model3.name, len(model.layers)
    )
    return model


def as_tf_keras(model: Any, verbose: bool = False) -> keras.Model:
    """Returns `model` if it is a tf_keras model, its tf_keras copy if it is a Keras 3 one.

    Every faq_tf entry point that takes a model calls this, so Keras 3 models work anywhere.

    Args:
      model: a tf_keras or Keras 3 model.
      verbose: also print the one line that says a Keras 3 model was converted.

    Raises:
      Keras3ConversionError: see `from_keras3`.
    """
    if not is_keras3_model(model):
        return model
    converted = from_keras3(model)
    if verbose:
        print(f"converted Keras 3 model '{model.name}' to tf_keras (faq_tf.from_keras3)")
    return converted
