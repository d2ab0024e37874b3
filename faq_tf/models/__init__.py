"""Models by name: every named keras.applications model, the paper's PyTorch-topology
networks, and a small ResNet for Fashion-MNIST. `build_model` also loads weights and
returns the model's preprocessing."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from faq_tf.compat import keras, tf
from faq_tf.models import paper
from faq_tf.models.small_resnet import small_resnet

__all__ = ["MODELS", "ModelSpec", "build_model", "small_resnet"]

_TORCH_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_TORCH_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def torch_preprocess(x: tf.Tensor) -> tf.Tensor:
    """torchvision normalization of RGB pixels in [0, 255]."""
    return (x - tf.constant(_TORCH_MEAN)) / tf.constant(_TORCH_STD)


def unit_preprocess(x: tf.Tensor) -> tf.Tensor:
    """Pixels / 256: every uint8 image lies exactly on the 8-bit input grid Q(8, -8)."""
    return x / 256.0


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to build one named model.

    Attributes:
      builder: called as builder(input_shape=..., classes=...) -> keras.Model.
      input_shape: default input shape.
      preprocess: maps float pixels in [0, 255] to the model's input.
      keras_app: the keras.applications function name, for `weights="imagenet"`.
    """

    builder: Callable[..., keras.Model]
    input_shape: tuple[int, int, int]
    preprocess: Callable[[tf.Tensor], tf.Tensor]
    keras_app: str | None = None


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
    "resnet18": ModelSpec(paper.resnet18, (224, 224, 3), torch_preprocess),
    "resnet34": ModelSpec(paper.resnet34, (224, 224, 3), torch_preprocess),
    "vgg16_bn": ModelSpec(paper.vgg16_bn, (224, 224, 3), torch_preprocess),
    "densenet161": ModelSpec(paper.densenet161, (224, 224, 3), torch_preprocess),
    "resnet18_cifar": ModelSpec(paper.resnet18_cifar, (32, 32, 3), torch_preprocess),
    "small_resnet": ModelSpec(small_resnet, (28, 28, 1), unit_preprocess),
}


def build_model(
    name: str, num_classes: int, pretrained: str = "none", image_size: int | None = None
) -> tuple[keras.Model, ModelSpec]:
    """Builds a named model and loads its starting weights.

    Args:
      name: a key of `MODELS`.
      num_classes: logits of the classifier.
      pretrained: "imagenet" (Keras application weights), "none" (random init), or a
        path to `.h5` weights or a SavedModel of the same architecture.
      image_size: square input size overriding the model's default.

    Returns:
      The model and its spec.

    Raises:
      ValueError: for an unknown model, or weights that do not fit it.
      FileNotFoundError: for a weights path that does not exist.
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Available: {', '.join(sorted(MODELS))}")
    spec = MODELS[name]
    shape = spec.input_shape if image_size is None else (image_size, image_size, spec.input_shape[2])
    if pretrained == "imagenet":
        if spec.keras_app is None:
            raise ValueError(
                f"No Keras ImageNet weights for '{name}': pass --pretrained=PATH to .h5 weights "
                "(e.g. converted from the torchvision checkpoint) or --pretrained=none."
            )
        return spec.builder(input_shape=shape, classes=num_classes, weights="imagenet"), spec
    kwargs = {"weights": None} if spec.keras_app else {}
    model = spec.builder(input_shape=shape, classes=num_classes, **kwargs)
    if pretrained in ("none", "", None):
        return model, spec
    if not os.path.exists(pretrained):
        raise FileNotFoundError(f"--pretrained={pretrained}: no such file or directory")
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
