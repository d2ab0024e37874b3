"""torchvision's Inception-v3, layer for layer, in evaluation form (no auxiliary classifier).

Layers are named after torchvision's modules (`Mixed_5b_branch5x5_1_conv` is
`Mixed_5b.branch5x5_1.conv`), so `faq_tf.models.import_torch` loads torchvision's
weights; the state_dict's `AuxLogits.*` tensors (training only) are not used.

torchvision's pretrained Inception-v3 sets `transform_input=True`: it maps its
ImageNet-normalized input to (pixel / 255 - 0.5) / 0.5. Here that mapping is the model's
preprocessing (`faq_tf.models.inception_preprocess`, pixel / 127.5 - 1), not a layer.
BatchNorm epsilon is torchvision's 0.001; the branch poolings count padded zeros, as
PyTorch's avg_pool2d does. Outputs are logits.
"""

from __future__ import annotations

from faq_tf.compat import keras, tf
from faq_tf.models.torch_style import avg_pool, batch_norm, conv2d, max_pool

__all__ = ["inception_v3"]

L = keras.layers


def _basic(x: tf.Tensor, filters: int, kernel, stride: int = 1, padding=0, *, name: str) -> tf.Tensor:
    """torchvision's BasicConv2d: conv (no bias), BN (eps 0.001), ReLU."""
    x = conv2d(x, filters, kernel, stride, padding, name=f"{name}_conv")
    return L.ReLU(name=f"{name}_relu")(batch_norm(x, name=f"{name}_bn", epsilon=1e-3))


def _pool_branch(x: tf.Tensor, filters: int, name: str) -> tf.Tensor:
    x = avg_pool(x, 3, 1, 1, name=f"{name}_avgpool")
    return _basic(x, filters, 1, name=f"{name}_branch_pool")


def _inception_a(x, pool_features, name):
    b1 = _basic(x, 64, 1, name=f"{name}_branch1x1")
    b5 = _basic(x, 48, 1, name=f"{name}_branch5x5_1")
    b5 = _basic(b5, 64, 5, padding=2, name=f"{name}_branch5x5_2")
    b3 = _basic(x, 64, 1, name=f"{name}_branch3x3dbl_1")
    b3 = _basic(b3, 96, 3, padding=1, name=f"{name}_branch3x3dbl_2")
    b3 = _basic(b3, 96, 3, padding=1, name=f"{name}_branch3x3dbl_3")
    bp = _pool_branch(x, pool_features, name)
    return L.Concatenate(name=f"{name}_concat")([b1, b5, b3, bp])


def _inception_b(x, name):
    b3 = _basic(x, 384, 3, stride=2, name=f"{name}_branch3x3")
    bd = _basic(x, 64, 1, name=f"{name}_branch3x3dbl_1")
    bd = _basic(bd, 96, 3, padding=1, name=f"{name}_branch3x3dbl_2")
    bd = _basic(bd, 96, 3, stride=2, name=f"{name}_branch3x3dbl_3")
    bp = max_pool(x, 3, 2, name=f"{name}_maxpool")
    return L.Concatenate(name=f"{name}_concat")([b3, bd, bp])


def _inception_c(x, c7, name):
    b1 = _basic(x, 192, 1, name=f"{name}_branch1x1")
    b7 = _basic(x, c7, 1, name=f"{name}_branch7x7_1")
    b7 = _basic(b7, c7, (1, 7), padding=(0, 3), name=f"{name}_branch7x7_2")
    b7 = _basic(b7, 192, (7, 1), padding=(3, 0), name=f"{name}_branch7x7_3")
    bd = _basic(x, c7, 1, name=f"{name}_branch7x7dbl_1")
    bd = _basic(bd, c7, (7, 1), padding=(3, 0), name=f"{name}_branch7x7dbl_2")
    bd = _basic(bd, c7, (1, 7), padding=(0, 3), name=f"{name}_branch7x7dbl_3")
    bd = _basic(bd, c7, (7, 1), padding=(3, 0), name=f"{name}_branch7x7dbl_4")
    bd = _basic(bd, 192, (1, 7), padding=(0, 3), name=f"{name}_branch7x7dbl_5")
    bp = _pool_branch(x, 192, name)
    return L.Concatenate(name=f"{name}_concat")([b1, b7, bd, bp])


def _inception_d(x, name):
    b3 = _basic(x, 192, 1, name=f"{name}_branch3x3_1")
    b3 = _basic(b3, 320, 3, stride=2, name=f"{name}_branch3x3_2")
    b7 = _basic(x, 192, 1, name=f"{name}_branch7x7x3_1")
    b7 = _basic(b7, 192, (1, 7), padding=(0, 3), name=f"{name}_branch7x7x3_2")
    b7 = _basic(b7, 192, (7, 1), padding=(3, 0), name=f"{name}_branch7x7x3_3")
    b7 = _basic(b7, 192, 3, stride=2, name=f"{name}_branch7x7x3_4")
    bp = max_pool(x, 3, 2, name=f"{name}_maxpool")
    return L.Concatenate(name=f"{name}_concat")([b3, b7, bp])


def _inception_e(x, name):
    b1 = _basic(x, 320, 1, name=f"{name}_branch1x1")
    b3 = _basic(x, 384, 1, name=f"{name}_branch3x3_1")
    b3 = L.Concatenate(name=f"{name}_branch3x3_concat")(
        [
            _basic(b3, 384, (1, 3), padding=(0, 1), name=f"{name}_branch3x3_2a"),
            _basic(b3, 384, (3, 1), padding=(1, 0), name=f"{name}_branch3x3_2b"),
        ]
    )
    bd = _basic(x, 448, 1, name=f"{name}_branch3x3dbl_1")
    bd = _basic(bd, 384, 3, padding=1, name=f"{name}_branch3x3dbl_2")
    bd = L.Concatenate(name=f"{name}_branch3x3dbl_concat")(
        [
            _basic(bd, 384, (1, 3), padding=(0, 1), name=f"{name}_branch3x3dbl_3a"),
            _basic(bd, 384, (3, 1), padding=(1, 0), name=f"{name}_branch3x3dbl_3b"),
        ]
    )
    bp = _pool_branch(x, 192, name)
    return L.Concatenate(name=f"{name}_concat")([b1, b3, bd, bp])


def inception_v3(input_shape=(299, 299, 3), classes=1000) -> keras.Model:
    """torchvision Inception-v3 (eval mode; inputs at least 75x75)."""
    if min(input_shape[:2]) < 75:
        raise ValueError(f"inception_v3 needs inputs of at least 75x75; got {tuple(input_shape)}")
    i = keras.Input(input_shape, name="image")
    x = _basic(i, 32, 3, stride=2, name="Conv2d_1a_3x3")
    x = _basic(x, 32, 3, name="Conv2d_2a_3x3")
    x = _basic(x, 64, 3, padding=1, name="Conv2d_2b_3x3")
    x = max_pool(x, 3, 2, name="maxpool1")
    x = _basic(x, 80, 1, name="Conv2d_3b_1x1")
    x = _basic(x, 192, 3, name="Conv2d_4a_3x3")
    x = max_pool(x, 3, 2, name="maxpool2")
    x = _inception_a(x, 32, "Mixed_5b")
    x = _inception_a(x, 64, "Mixed_5c")
    x = _inception_a(x, 64, "Mixed_5d")
    x = _inception_b(x, "Mixed_6a")
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        x = _inception_c(x, c7, name)
    x = _inception_d(x, "Mixed_7a")
    x = _inception_e(x, "Mixed_7b")
    x = _inception_e(x, "Mixed_7c")
    x = L.GlobalAveragePooling2D(name="avgpool")(x)
    x = L.Dropout(0.5, name="dropout")(x)
    return keras.Model(i, L.Dense(classes, name="fc")(x), name="inception_v3")
