"""The paper's networks that keras.applications lacks, in the PyTorch (torchvision) topology.

ResNet-18/34 (BasicBlock, torchvision), VGG-16 with BatchNorm, DenseNet-161, and the
CIFAR-10 ResNet-18 (3x3 stem, no max pool) used in section 4.9. All output logits (no
softmax) and use the torchvision input normalization (see `faq_tf.models.preprocess`).
"""

from __future__ import annotations

from faq_tf.compat import keras

__all__ = ["resnet18", "resnet34", "resnet18_cifar", "vgg16_bn", "densenet161"]

L = keras.layers
_EPS = 1e-5  # PyTorch BatchNorm epsilon


def _bn(x, name):
    return L.BatchNormalization(epsilon=_EPS, momentum=0.9, name=name)(x)


def _conv(x, filters, kernel, stride, name):
    if stride > 1 and kernel > 1:  # PyTorch pads symmetrically; 'same' in Keras does not
        x = L.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        return L.Conv2D(filters, kernel, stride, padding="valid", use_bias=False, name=name)(x)
    return L.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)(x)


def _basic_block(x, filters, stride, name):
    shortcut = x
    y = _conv(x, filters, 3, stride, f"{name}_conv1")
    y = L.ReLU(name=f"{name}_relu1")(_bn(y, f"{name}_bn1"))
    y = _bn(_conv(y, filters, 3, 1, f"{name}_conv2"), f"{name}_bn2")
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _bn(_conv(x, filters, 1, stride, f"{name}_downsample"), f"{name}_downsample_bn")
    return L.ReLU(name=f"{name}_out")(L.Add(name=f"{name}_add")([shortcut, y]))


def _resnet(blocks, input_shape, classes, name, cifar=False):
    i = keras.Input(input_shape, name="image")
    if cifar:
        x = L.ReLU(name="relu")(_bn(_conv(i, 64, 3, 1, "conv1"), "bn1"))
    else:
        x = L.ReLU(name="relu")(_bn(_conv(i, 64, 7, 2, "conv1"), "bn1"))
        x = L.ZeroPadding2D(1, name="maxpool_pad")(x)
        x = L.MaxPooling2D(3, 2, name="maxpool")(x)
    for stage, (n, filters) in enumerate(zip(blocks, (64, 128, 256, 512))):
        for b in range(n):
            stride = 2 if b == 0 and stage > 0 else 1
            x = _basic_block(x, filters, stride, f"layer{stage + 1}_{b}")
    x = L.GlobalAveragePooling2D(name="avgpool")(x)
    return keras.Model(i, L.Dense(classes, name="fc")(x), name=name)


def resnet18(input_shape=(224, 224, 3), classes=1000) -> keras.Model:
    """torchvision ResNet-18."""
    return _resnet((2, 2, 2, 2), input_shape, classes, "resnet18")


def resnet34(input_shape=(224, 224, 3), classes=1000) -> keras.Model:
    """torchvision ResNet-34."""
    return _resnet((3, 4, 6, 3), input_shape, classes, "resnet34")


def resnet18_cifar(input_shape=(32, 32, 3), classes=10) -> keras.Model:
    """ResNet-18 for CIFAR-10: 3x3 stride-1 stem, no max pool (the topology section 4.9 cites)."""
    return _resnet((2, 2, 2, 2), input_shape, classes, "resnet18_cifar", cifar=True)


def vgg16_bn(input_shape=(224, 224, 3), classes=1000) -> keras.Model:
    """torchvision VGG-16 with BatchNorm (global average pooling replaces the 7x7 adaptive pool
    when the input is not 224x224)."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    i = keras.Input(input_shape, name="image")
    x, n = i, 0
    for v in cfg:
        if v == "M":
            x = L.MaxPooling2D(2, name=f"pool{n}")(x)
            continue
        n += 1
        x = L.Conv2D(v, 3, padding="same", name=f"conv{n}")(x)
        x = L.ReLU(name=f"relu{n}")(_bn(x, f"bn{n}"))
    x = L.Flatten(name="flatten")(x) if x.shape[1] == 7 else L.GlobalAveragePooling2D(name="gap")(x)
    for k in (1, 2):
        x = L.Dropout(0.5, name=f"drop{k}")(L.Dense(4096, activation="relu", name=f"fc{k}")(x))
    return keras.Model(i, L.Dense(classes, name="fc3")(x), name="vgg16_bn")


def densenet161(input_shape=(224, 224, 3), classes=1000) -> keras.Model:
    """torchvision DenseNet-161 (growth 48, blocks 6-12-36-24, 96 initial features)."""
    growth, blocks = 48, (6, 12, 36, 24)
    i = keras.Input(input_shape, name="image")
    x = L.ReLU(name="relu0")(_bn(_conv(i, 96, 7, 2, "conv0"), "norm0"))
    x = L.MaxPooling2D(3, 2, padding="same", name="pool0")(x)
    for b, n in enumerate(blocks):
        for k in range(n):
            name = f"block{b + 1}_{k}"
            y = L.ReLU(name=f"{name}_relu1")(_bn(x, f"{name}_norm1"))
            y = L.Conv2D(4 * growth, 1, use_bias=False, name=f"{name}_conv1")(y)
            y = L.ReLU(name=f"{name}_relu2")(_bn(y, f"{name}_norm2"))
            y = L.Conv2D(growth, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
            x = L.Concatenate(name=f"{name}_concat")([x, y])
        if b < len(blocks) - 1:
            name = f"transition{b + 1}"
            x = L.ReLU(name=f"{name}_relu")(_bn(x, f"{name}_norm"))
            x = L.Conv2D(x.shape[-1] // 2, 1, use_bias=False, name=f"{name}_conv")(x)
            x = L.AveragePooling2D(2, name=f"{name}_pool")(x)
    x = L.ReLU(name="relu5")(_bn(x, "norm5"))
    x = L.GlobalAveragePooling2D(name="avgpool")(x)
    return keras.Model(i, L.Dense(classes, name="classifier")(x), name="densenet161")
