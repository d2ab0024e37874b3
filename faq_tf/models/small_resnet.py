"""A small ResNet for 28x28 grayscale images (Fashion-MNIST), about 78k parameters."""

from __future__ import annotations

from faq_tf.compat import keras

__all__ = ["small_resnet"]

L = keras.layers


def _block(x, filters: int, stride: int, name: str):
    shortcut = x
    y = L.Conv2D(filters, 3, stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = L.BatchNormalization(name=f"{name}_bn1")(y)
    y = L.ReLU(name=f"{name}_relu1")(y)
    y = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = L.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = L.Conv2D(filters, 1, stride, use_bias=False, name=f"{name}_proj")(x)
        shortcut = L.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = L.Add(name=f"{name}_add")([shortcut, y])
    return L.ReLU(name=f"{name}_out")(y)


def small_resnet(
    input_shape: tuple[int, int, int] = (28, 28, 1),
    classes: int = 10,
    widths: tuple[int, ...] = (16, 32, 64),
) -> keras.Model:
    """Builds a ResNet with one basic block per stage (stride 2 from the second stage).

    Args:
      input_shape: image shape.
      classes: number of output logits (no softmax).
      widths: channels of each stage.

    Returns:
      An uncompiled functional model that outputs logits.
    """
    i = keras.Input(input_shape, name="image")
    x = L.Conv2D(widths[0], 3, padding="same", use_bias=False, name="stem_conv")(i)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    for s, filters in enumerate(widths):
        x = _block(x, filters, 1 if s == 0 else 2, f"stage{s + 1}")
    x = L.GlobalAveragePooling2D(name="pool")(x)
    logits = L.Dense(classes, name="logits")(x)
    return keras.Model(i, logits, name="small_resnet")
