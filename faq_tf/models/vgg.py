"""torchvision's VGG-16 with BatchNorm, layer for layer.

Layers are named after torchvision's modules (`features_0` is `features.0`; the classifier's
Linear layers are `classifier_0`, `classifier_3`, `classifier_6`), so
`faq_tf.models.import_torch` loads torchvision's weights, reordering the first classifier
layer's rows from PyTorch's CHW flatten order to Keras's HWC. Outputs are logits.
"""

from __future__ import annotations

from faq_tf.compat import keras, tf
from faq_tf.models.torch_style import batch_norm, conv2d

__all__ = ["vgg16_bn"]

L = keras.layers
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _adaptive_avg_pool_7x7(x: tf.Tensor, input_shape) -> tf.Tensor:
    """torch.nn.AdaptiveAvgPool2d((7, 7)) where it is a plain pooling: a 7x7 map passes,
    a 7k x 7k map is averaged over k x k windows, and a 1x1 map is repeated 7x7."""
    size = x.shape[1]
    if x.shape[1] != x.shape[2]:
        raise ValueError(f"vgg16_bn needs a square input; got {tuple(input_shape)}")
    if size == 7:
        return x
    if size == 1:
        return L.UpSampling2D(7, name="avgpool")(x)
    if size % 7 == 0:
        return L.AveragePooling2D(size // 7, name="avgpool")(x)
    raise ValueError(
        f"vgg16_bn with input {tuple(input_shape)} ends in a {size}x{size} feature map, which torchvision's "
        "AdaptiveAvgPool2d((7, 7)) averages over unequal, overlapping windows. Use an input size of "
        "32 * k for k = 1 or a multiple of 7 (32, 224, 448, ...)."
    )


def vgg16_bn(input_shape=(224, 224, 3), classes=1000) -> keras.Model:
    """torchvision VGG-16-BN: 13 conv+BN+ReLU layers, 7x7 adaptive pooling, 3 Linear layers."""
    i = keras.Input(input_shape, name="image")
    x, index = i, 0
    for v in _VGG16:
        if v == "M":
            x = L.MaxPooling2D(2, name=f"features_{index}")(x)
            index += 1
            continue
        x = conv2d(x, v, 3, 1, 1, name=f"features_{index}", bias=True)
        x = batch_norm(x, name=f"features_{index + 1}")
        x = L.ReLU(name=f"features_{index + 2}")(x)
        index += 3
    x = L.Flatten(name="flatten")(_adaptive_avg_pool_7x7(x, input_shape))
    for k in (0, 3):
        x = L.Dense(4096, name=f"classifier_{k}")(x)
        x = L.Dropout(0.5, name=f"classifier_{k + 2}")(L.ReLU(name=f"classifier_{k + 1}")(x))
    return keras.Model(i, L.Dense(classes, name="classifier_6")(x), name="vgg16_bn")
