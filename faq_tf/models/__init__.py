"""Models by name: every named keras.applications model, the paper's networks in torchvision's
topology (whose published weights `faq_tf.models.import_torch` loads), and a small ResNet for
Fashion-MNIST. `build_model` also loads weights and returns the model's preprocessing."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from faq_tf.compat import keras, tf
from faq_tf.models.densenet import densenet161
from faq_tf.models.inception import inception_v3
from faq_tf.models.resnet import resnet18, resnet18_cifar, resnet34, resnet50, resnet152
from faq_tf.models.small_resnet import small_resnet
from faq_tf.models.vgg import vgg16_bn

__all__ = [
    "MODELS",
    "PREPROCESSING",
    "ModelSpec",
    "build_model",
    "model_from_file",
    "own_model_preprocess",
    "small_resnet",
    "TORCH_WEIGHT_SUFFIXES",
]

# --pretrained files that are torchvision state_dicts (imported by faq_tf.models.import_torch).
TORCH_WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")

_TORCH_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_TORCH_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def torch_preprocess(x: tf.Tensor) -> tf.Tensor:
    """torchvision normalization of RGB pixels in [0, 255]."""
    return (x - tf.constant(_TORCH_MEAN)) / tf.constant(_TORCH_STD)


def inception_preprocess(x: tf.Tensor) -> tf.Tensor:
    """torchvision's Inception-v3 input: normalization followed by its transform_input, which
    together are (pixels / 255 - 0.5) / 0.5."""
    return x / 127.5 - 1.0


def unit_preprocess(x: tf.Tensor) -> tf.Tensor:
    """Pixels / 256: every uint8 image lies exactly on the 8-bit input grid Q(8, -8)."""
    return x / 256.0


def raw_pixels(x: tf.Tensor) -> tf.Tensor:
    """Pixels in [0, 255] as they are, for a model that scales its input itself (Rescaling)."""
    return x


def symmetric_preprocess(x: tf.Tensor) -> tf.Tensor:
    """Pixels / 128 - 1: [-1, 1), on the signed 8-bit input grid (MobileNet/Inception style)."""
    return x / 128.0 - 1.0


# What --preprocess can name ("auto" is the model's own).
PREPROCESSING: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "unit": unit_preprocess,
    "symmetric": symmetric_preprocess,
    "torch": torch_preprocess,
    "none": raw_pixels,
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to build one named model.

    Attributes:
      builder: called as builder(input_shape=..., classes=...) -> keras.Model.
      input_shape: default input shape.
      preprocess: maps float pixels in [0, 255] to the model's input.
      keras_app: the keras.applications function name, for `weights="imagenet"`.
      torch_classifier: for torchvision-topology models, the torchvision module path of the
        classifier (whose tensor gives the number of classes of an imported state_dict).
    """

    builder: Callable[..., keras.Model]
    input_shape: tuple[int, int, int]
    preprocess: Callable[[tf.Tensor], tf.Tensor]
    keras_app: str | None = None
    torch_classifier: str | None = None


def _app(name: str, module: str, size: int) -> ModelSpec:
    def build(input_shape, classes, weights=None):
        fn = getattr(keras.applications, name)
        return fn(weights=weights, input_shape=input_shape, classes=classes)

    mod = getattr(keras.applications, module)
    return ModelSpec(build, (size, size, 3), mod.preprocess_input, name)


MODELS: dict[str, ModelSpec] = {
    **{n: _app(n, "resnet", 224) for n in ("ResNet50", "ResNet101", "ResNet152")},
    **{n: _app(n, n.lower(), 224) for n in ("VGG16", "VGG19")},
    "InceptionV3": _app("InceptionV3", "inception_v3", 299),
    **{n: _app(n, "densenet", 224) for n in ("DenseNet121", "DenseNet169", "DenseNet201")},
    "MobileNet": _app("MobileNet", "mobilenet", 224),
    "MobileNetV2": _app("MobileNetV2", "mobilenet_v2", 224),
    # The paper's Table 1 networks as torchvision builds them (import torchvision's weights).
    "resnet18": ModelSpec(resnet18, (224, 224, 3), torch_preprocess, torch_classifier="fc"),
    "resnet34": ModelSpec(resnet34, (224, 224, 3), torch_preprocess, torch_classifier="fc"),
    "resnet50": ModelSpec(resnet50, (224, 224, 3), torch_preprocess, torch_classifier="fc"),
    "resnet152": ModelSpec(resnet152, (224, 224, 3), torch_preprocess, torch_classifier="fc"),
    "inception_v3": ModelSpec(inception_v3, (299, 299, 3), inception_preprocess, torch_classifier="fc"),
    "densenet161": ModelSpec(densenet161, (224, 224, 3), torch_preprocess, torch_classifier="classifier"),
    "vgg16_bn": ModelSpec(vgg16_bn, (224, 224, 3), torch_preprocess, torch_classifier="classifier.6"),
    "resnet18_cifar": ModelSpec(resnet18_cifar, (32, 32, 3), torch_preprocess),
    "small_resnet": ModelSpec(small_resnet, (28, 28, 1), unit_preprocess),
}


def build_model(
    name: str, num_classes: int, pretrained: str = "none", image_size: int | None = None
) -> tuple[keras.Model, ModelSpec]:
    """Builds a named model and loads its starting weights.

    Args:
      name: a key of `MODELS`.
      num_classes: logits of the classifier.
      pretrained: "imagenet" (Keras application weights), "none" (random init), a
        path to `.h5` weights or a SavedModel of the same architecture, a torchvision
        state_dict (`.pth`, `.pt`, `.safetensors`) for a torchvision-topology model
        (`faq_tf.models.import_torch`), or a `.keras` file: then the model is the file's
        (`model_from_file`) and `name` is not used.
      image_size: square input size overriding the model's default.

    Returns:
      The model and its spec.

    Raises:
      ValueError: for an unknown model, or weights that do not fit it.
      FileNotFoundError: for a weights path that does not exist.
    """
    if isinstance(pretrained, str) and pretrained.endswith(".keras"):
        return model_from_file(pretrained, num_classes, image_size)
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Available: {', '.join(sorted(MODELS))}")
    spec = MODELS[name]
    shape = spec.input_shape if image_size is None else (image_size, image_size, spec.input_shape[2])
    if pretrained == "imagenet":
        if spec.keras_app is None:
            raise ValueError(
                f"No Keras ImageNet weights for '{name}': pass torchvision's file, --pretrained=FILE.pth, or "
                "the .h5 that `python -m faq_tf.models.import_torch` made of it (docs/paper.md), or --pretrained=none."
            )
        return spec.builder(input_shape=shape, classes=num_classes, weights="imagenet"), spec
    kwargs = {"weights": None} if spec.keras_app else {}
    model = spec.builder(input_shape=shape, classes=num_classes, **kwargs)
    if pretrained in ("none", "", None):
        return model, spec
    if not os.path.exists(pretrained):
        raise FileNotFoundError(f"--pretrained={pretrained}: no such file or directory")
    if pretrained.endswith(TORCH_WEIGHT_SUFFIXES):
        from faq_tf.models.import_torch import load_torch_weights

        if spec.torch_classifier is None:
            raise ValueError(
                f"--pretrained={pretrained} is a PyTorch state_dict, but model '{name}' has no torchvision "
                f"counterpart; use one of {', '.join(k for k, s in MODELS.items() if s.torch_classifier)}"
            )
        return load_torch_weights(model, pretrained), spec
    try:
        if os.path.isdir(pretrained):
            from faq_tf.saving import load_model

            source = load_model(pretrained)
            model.set_weights(source.get_weights())
        else:
            model.load_weights(pretrained)
    except OSError as e:  # h5py could not read it as HDF5 at all
        raise ValueError(
            f"--pretrained={pretrained} is not a readable weights file (damaged, truncated or not HDF5: "
            f"{str(e).strip().splitlines()[0]}). Download or export it again."
        ) from e
    except (ValueError, KeyError) as e:
        raise ValueError(
            f"--pretrained={pretrained} does not fit model '{name}' with {num_classes} classes and input {shape}: {e}"
        ) from e
    return model, spec


def own_model_preprocess(model: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """The preprocessing of a user's own model (fp32 or quantized by faq_tf).

    Raw pixels when its first layer after the input (and the input quantizer) is a
    Rescaling or Normalization, or when faq_tf folded one into the first layers
    (`faq_tf.input_scaling`): the model scales its input itself. Else pixels / 256.
    """
    from faq_tf.input_scaling import folded_input_scaling

    if folded_input_scaling(model) is not None:
        return raw_pixels
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)  # unwrap tfmot's QuantizeWrapper
        if isinstance(inner, keras.layers.InputLayer) or type(inner).__name__ in ("QuantizeLayer", "QuantizeInput"):
            continue
        scales = isinstance(inner, (keras.layers.Rescaling, keras.layers.Normalization))
        return raw_pixels if scales else unit_preprocess
    return unit_preprocess


def model_from_file(path: str, num_classes: int, image_size: int | None = None) -> tuple[keras.Model, ModelSpec]:
    """A user's own fp32 model from a `.keras` file (Keras 3 or tf_keras), as faq-train's model.

    Its preprocessing: raw pixels in [0, 255] when the model starts with a Rescaling or
    Normalization layer (it scales its input itself), else pixels / 256.

    Raises:
      FileNotFoundError: if the file does not exist.
      ValueError: if its outputs do not match the dataset's classes, `image_size` differs
        from its input, or it cannot be converted (`faq_tf.Keras3ConversionError`).
    """
    from faq_tf.saving import load_model

    if not os.path.exists(path):
        raise FileNotFoundError(f"--pretrained={path}: no such file")
    model = load_model(path)
    shape = tuple(model.input_shape[1:])
    outputs = model.output_shape[-1]
    if outputs != num_classes:
        raise ValueError(
            f"--pretrained={path}: the model has {outputs} outputs but the dataset has {num_classes} classes; "
            "give it a classifier with one output per class."
        )
    if image_size is not None and tuple(shape[:2]) != (image_size, image_size):
        raise ValueError(
            f"--image_size={image_size} does not fit {path}, whose input is {shape}; drop --image_size "
            "(images are resized to the model's input)."
        )
    return model, ModelSpec(lambda **_: model, shape, own_model_preprocess(model))
