"""Building blocks that make a tf_keras layer compute what its PyTorch counterpart computes.

The torchvision-topology models (`faq_tf.models.resnet`, `.vgg`, `.densenet`, `.inception`)
are built from these, so that `faq_tf.models.import_torch` can copy a torchvision
`state_dict` into them and get the same logits:

- every layer that holds weights is named after its torchvision module path with "." as
  "_" (`layer1.0.conv1` -> `layer1_0_conv1`), which is how the importer finds it;
- convolutions pad as PyTorch does: symmetrically (Keras "same" pads the extra row at the
  bottom when a strided convolution needs an odd total), by an explicit ZeroPadding2D;
- BatchNormalization with PyTorch's epsilon (1e-5 unless the model says otherwise) and
  momentum (PyTorch's 0.1 is Keras's 0.9).
"""

from __future__ import annotations

from faq_tf.compat import keras, tf

__all__ = ["TORCH_BN_EPSILON", "batch_norm", "conv2d", "keras_name", "max_pool", "avg_pool"]

L = keras.layers
TORCH_BN_EPSILON = 1e-5


def keras_name(module_path: str) -> str:
    """The Keras layer name of a torchvision module path: "features.0" -> "features_0"."""
    return module_path.replace(".", "_")


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def conv2d(
    x: tf.Tensor,
    filters: int,
    kernel: int | tuple[int, int],
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
    *,
    name: str,
    bias: bool = False,
) -> tf.Tensor:
    """`torch.nn.Conv2d(in, filters, kernel, stride, padding, bias=bias)` named `name`.

    Stride-1 convolutions that pad by kernel // 2 are Keras "same" (identical for odd
    kernels); every other padding is an explicit, symmetric ZeroPadding2D.
    """
    k, p = _pair(kernel), _pair(padding)
    if p == (0, 0):
        mode = "valid"
    elif stride == 1 and all(kk % 2 == 1 and pp == kk // 2 for kk, pp in zip(k, p)):
        mode = "same"
    else:
        x = L.ZeroPadding2D(p, name=f"{name}_pad")(x)
        mode = "valid"
    return L.Conv2D(filters, k, stride, padding=mode, use_bias=bias, name=name)(x)


def batch_norm(x: tf.Tensor, *, name: str, epsilon: float = TORCH_BN_EPSILON) -> tf.Tensor:
    """`torch.nn.BatchNorm2d` (or 1d) in eval mode, with PyTorch's momentum."""
    return L.BatchNormalization(epsilon=epsilon, momentum=0.9, name=name)(x)


def max_pool(x: tf.Tensor, size: int, stride: int, padding: int = 0, *, name: str) -> tf.Tensor:
    """`torch.nn.MaxPool2d(size, stride, padding)` on non-negative inputs (after a ReLU).

    PyTorch pads max pooling with -inf; zero padding is the same when no input is negative,
    which holds wherever torchvision pools with padding (after a ReLU).
    """
    if padding:
        x = L.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    return L.MaxPooling2D(size, stride, padding="valid", name=name)(x)


def avg_pool(x: tf.Tensor, size: int, stride: int, padding: int = 0, *, name: str) -> tf.Tensor:
    """`torch.nn.functional.avg_pool2d(x, size, stride, padding)` with PyTorch's default
    count_include_pad=True: padded zeros count in the mean (Keras "same" leaves them out)."""
    if padding:
        x = L.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    return L.AveragePooling2D(size, stride, padding="valid", name=name)(x)
