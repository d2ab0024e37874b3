"""torchvision's DenseNet-161, layer for layer (growth rate 48, blocks 6-12-36-24, 96 initial
features, bottleneck 4 x growth).

Layers are named after torchvision's modules (`features_denseblock1_denselayer1_conv1` is
`features.denseblock1.denselayer1.conv1`), so `faq_tf.models.import_torch` loads
torchvision's weights. Outputs are logits.
"""

from __future__ import annotations

from faq_tf.compat import keras
from faq_tf.models.torch_style import batch_norm, conv2d, max_pool

__all__ = ["densenet161"]

L = keras.layers


def _densenet(growth, blocks, init_features, input_shape, classes, name, bn_size=4) -> keras.Model:
    i = keras.Input(input_shape, name="image")
    x = conv2d(i, init_features, 7, 2, 3, name="features_conv0")
    x = L.ReLU(name="features_relu0")(batch_norm(x, name="features_norm0"))
    x = max_pool(x, 3, 2, 1, name="features_pool0")
    for b, n in enumerate(blocks, start=1):
        for k in range(1, n + 1):
            p = f"features_denseblock{b}_denselayer{k}"
            y = L.ReLU(name=f"{p}_relu1")(batch_norm(x, name=f"{p}_norm1"))
            y = conv2d(y, bn_size * growth, 1, name=f"{p}_conv1")
            y = L.ReLU(name=f"{p}_relu2")(batch_norm(y, name=f"{p}_norm2"))
            y = conv2d(y, growth, 3, 1, 1, name=f"{p}_conv2")
            x = L.Concatenate(name=f"{p}_concat")([x, y])  # torch.cat(features, 1): oldest first
        if b < len(blocks):
            p = f"features_transition{b}"
            x = L.ReLU(name=f"{p}_relu")(batch_norm(x, name=f"{p}_norm"))
            x = conv2d(x, x.shape[-1] // 2, 1, name=f"{p}_conv")
            x = L.AveragePooling2D(2, name=f"{p}_pool")(x)
    x = L.ReLU(name="relu5")(batch_norm(x, name="features_norm5"))
    x = L.GlobalAveragePooling2D(name="avgpool")(x)
    return keras.Model(i, L.Dense(classes, name="classifier")(x), name=name)


def densenet161(input_shape=(224, 224, 3), classes=1000) -> keras.Model:
    """torchvision DenseNet-161."""
    return _densenet(48, (6, 12, 36, 24), 96, input_shape, classes, "densenet161")
