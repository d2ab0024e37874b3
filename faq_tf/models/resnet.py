"""torchvision's ResNet-18/34/50/152 (ResNet v1.5: the stride in the 3x3 convolution), layer
for layer, and the CIFAR-10 ResNet-18 of section 4.9 (3x3 stem, no max pool).

Layers are named after torchvision's modules (`faq_tf.models.torch_style`), so
`faq_tf.models.import_torch` loads torchvision's published weights. Outputs are logits.
"""

from __future__ import annotations

from faq_tf.compat import keras, tf
from faq_tf.models.torch_style import batch_norm, conv2d, max_pool

__all__ = ["resnet18", "resnet34", "resnet50", "resnet152", "resnet18_cifar"]

L = keras.layers


def _basic_block(x: tf.Tensor, planes: int, stride: int, name: str) -> tf.Tensor:
    y = conv2d(x, planes, 3, stride, 1, name=f"{name}_conv1")
    y = L.ReLU(name=f"{name}_relu1")(batch_norm(y, name=f"{name}_bn1"))
    y = batch_norm(conv2d(y, planes, 3, 1, 1, name=f"{name}_conv2"), name=f"{name}_bn2")
    return _merge(x, y, planes, stride, name)


def _bottleneck(x: tf.Tensor, planes: int, stride: int, name: str) -> tf.Tensor:
    y = L.ReLU(name=f"{name}_relu1")(batch_norm(conv2d(x, planes, 1, name=f"{name}_conv1"), name=f"{name}_bn1"))
    y = conv2d(y, planes, 3, stride, 1, name=f"{name}_conv2")
    y = L.ReLU(name=f"{name}_relu2")(batch_norm(y, name=f"{name}_bn2"))
    y = batch_norm(conv2d(y, 4 * planes, 1, name=f"{name}_conv3"), name=f"{name}_bn3")
    return _merge(x, y, 4 * planes, stride, name)


def _merge(x: tf.Tensor, y: tf.Tensor, filters: int, stride: int, name: str) -> tf.Tensor:
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:  # torchvision's downsample = Sequential(conv1x1, bn)
        shortcut = conv2d(x, filters, 1, stride, name=f"{name}_downsample_0")
        shortcut = batch_norm(shortcut, name=f"{name}_downsample_1")
    return L.ReLU(name=f"{name}_out")(L.Add(name=f"{name}_add")([shortcut, y]))


def _resnet(block, layers, input_shape, classes, name, cifar=False) -> keras.Model:
    i = keras.Input(input_shape, name="image")
    if cifar:
        x = conv2d(i, 64, 3, 1, 1, name="conv1")
    else:
        x = conv2d(i, 64, 7, 2, 3, name="conv1")
    x = L.ReLU(name="relu")(batch_norm(x, name="bn1"))
    if not cifar:
        x = max_pool(x, 3, 2, 1, name="maxpool")
    for stage, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
        for b in range(n):
            stride = 2 if b == 0 and stage > 0 else 1
            x = block(x, planes, stride, f"layer{stage + 1}_{b}")
    x = L.GlobalAveragePooling2D(name="avgpool")(x)
    return keras.Model(i, L.Dense(classes, name="fc")(x), name=name)


def resnet18(input_shape=(224, 224, 3), classes=1000) -> keras.Model:
    """torchvision ResNet-18 (BasicBlock, 2-2-2-2)."""
    return _resnet(_basic_block, (2, 2, 2, 2), input_shape, classes, "resnet18")


def resnet34(input_shape=(224, 224, 3), classes=1000) -> keras.Model:
    """torchvision ResNet-34 (BasicBlock, 3-4-6-3)."""
    return _resnet(_basic_block, (3, 4, 6, 3), input_shape, classes, "resnet34")


def resnet50(input_shape=(224, 224, 3), classes=1000) -> keras.Model:
    """torchvision ResNet-50 (Bottleneck, 3-4-6-3, stride in the 3x3 convolution)."""
    return _resnet(_bottleneck, (3, 4, 6, 3), input_shape, classes, "resnet50")


def resnet152(input_shape=(224, 224, 3), classes=1000) -> keras.Model:
    """torchvision ResNet-152 (Bottleneck, 3-8-36-3)."""
    return _resnet(_bottleneck, (3, 8, 36, 3), input_shape, classes, "resnet152")


def resnet18_cifar(input_shape=(32, 32, 3), classes=10) -> keras.Model:
    """ResNet-18 for CIFAR-10: 3x3 stride-1 stem, no max pool (the topology section 4.9 cites)."""
    return _resnet(_basic_block, (2, 2, 2, 2), input_shape, classes, "resnet18_cifar", cifar=True)
