"""Which Keras layers faq_tf quantizes, and how: one declarative table.

Each row names a layer class, the weights to quantize (attribute and role), what
kind of output the layer produces, and which following layers the integer runtime
fuses that output into (so it stays float in the QAT model too):

* ``computed``: a new tensor (conv, add, pooling mean, ...); quantized unless its
  only consumer is a layer it fuses into (Conv -> BatchNorm -> ReLU, Add -> ReLU).
* ``activation``: an activation layer; what it needs depends on the function
  (see `activation_kind`).
* ``passthrough``: values stay on the input's grid (max pooling, padding, reshapes).

Classes are matched exactly, as in tfmot: a subclass may change `call`.
"""

from __future__ import annotations

import dataclasses

from faq_tf.compat import keras
from faq_tf.configs import FaqQuantizeConfig
from faq_tf.quantizers import (
    ActivationQuantizer,
    BatchNormMultiplierQuantizer,
    FixedExponentQuantizer,
    WeightQuantizer,
)

__all__ = [
    "LayerInfo",
    "UnsupportedLayerError",
    "supports",
    "get_layer_info",
    "activation_kind",
    "get_quantize_config",
    "BIAS_BITS",
    "BIAS_EXPONENT",
    "BN_BITS",
    "BN_EXPONENT",
]

L = keras.layers

# Section 2.1 / 3.1.1: BN constants are 8-bit with l = -b/2, additive constants 32-bit.
BN_BITS, BN_EXPONENT = 8, -4
BIAS_BITS, BIAS_EXPONENT = 32, -16

WEIGHT, BIAS, BN_MULTIPLIER = "weight", "bias", "bn_multiplier"
COMPUTED, ACTIVATION, PASSTHROUGH = "computed", "activation", "passthrough"
FUSES_BN, FUSES_RELU = "batch_norm", "relu"


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """How one layer class is quantized.

    Attributes:
      layer_class: the exact Keras class.
      weights: (attribute, role) pairs; role is "weight", "bias" or "bn_multiplier".
      output: "computed", "activation" or "passthrough".
      fuses_into: kinds of sole consumer ("batch_norm", "relu") that absorb the output.
      per_channel_weights: emit per-channel FakeQuant ops for the kernel.
      rounding: how the integer op computing the output rounds exact ties (see
        `faq_tf.quantizers.ROUNDING_MODES`); the Keras model copies it at inference.
    """

    layer_class: type
    weights: tuple[tuple[str, str], ...] = ()
    output: str = PASSTHROUGH
    fuses_into: tuple[str, ...] = ()
    per_channel_weights: bool = False
    rounding: str = "half_up"


def _conv(cls, kernel: str, fuses=(FUSES_BN, FUSES_RELU), per_channel: bool = True) -> LayerInfo:
    return LayerInfo(cls, ((kernel, WEIGHT), ("bias", BIAS)), COMPUTED, fuses, per_channel, "half_even")


def _passthrough(cls) -> LayerInfo:
    return LayerInfo(cls)


_LAYER_TABLE: tuple[LayerInfo, ...] = (
    _conv(L.Conv2D, "kernel"),
    _conv(L.DepthwiseConv2D, "depthwise_kernel"),
    _conv(L.Dense, "kernel", fuses=(FUSES_RELU,), per_channel=False),
    LayerInfo(  # folded into the conv before it; standalone, exported as a 1x1 depthwise conv
        L.BatchNormalization,
        (("gamma", BN_MULTIPLIER), ("beta", BIAS)),
        COMPUTED,
        (FUSES_RELU,),
        rounding="half_even",
    ),
    LayerInfo(L.ReLU, output=ACTIVATION),
    LayerInfo(L.Activation, output=ACTIVATION),
    LayerInfo(L.Add, output=COMPUTED, fuses_into=(FUSES_RELU,)),
    LayerInfo(L.Concatenate, output=COMPUTED),
    LayerInfo(L.AveragePooling2D, output=COMPUTED, rounding="half_away"),
    LayerInfo(L.GlobalAveragePooling2D, output=COMPUTED, rounding="half_even"),
    LayerInfo(L.Rescaling, output=COMPUTED),
    LayerInfo(L.Normalization, output=COMPUTED),
    _passthrough(L.InputLayer),
    LayerInfo(L.MaxPooling2D, output=COMPUTED),  # quantized at its input's scale (policy.share_runtime_scales)
    _passthrough(L.GlobalMaxPooling2D),
    _passthrough(L.ZeroPadding2D),
    _passthrough(L.Cropping2D),
    _passthrough(L.Flatten),
    _passthrough(L.Reshape),
    _passthrough(L.Dropout),
    _passthrough(L.SpatialDropout2D),
)
_BY_CLASS = {info.layer_class: info for info in _LAYER_TABLE}

# Activation functions: "relu" outputs get the policy's ReLU bits and an unsigned
# calibrated range; "fixed" outputs have the range TFLite's int8 kernels require
# (a power of two, so Q(8, l) matches it exactly); "identity" is a no-op.
_RELU_FUNCTIONS = {"relu", "relu6"}
_FIXED_FUNCTIONS = {"softmax": (-8, False), "sigmoid": (-8, False), "tanh": (-7, True)}


class UnsupportedLayerError(ValueError):
    """Raised for a layer faq_tf does not know how to quantize."""


def _unsupported(layer, why: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(
        f"Layer '{layer.name}' ({type(layer).__name__}) {why}. To proceed, leave it in "
        f"float with layer_overrides={{'{layer.name}': 'skip'}} (the integer exporter will "
        "then refuse the model if it is on the integer path), or replace it with supported "
        f"layers: {', '.join(sorted(c.__name__ for c in _BY_CLASS))}."
    )


def activation_function_name(layer) -> str:
    """Returns the serialized name of a layer's activation function."""
    fn = layer.activation
    name = keras.activations.serialize(fn)
    return name if isinstance(name, str) else getattr(fn, "__name__", str(fn))


def activation_kind(layer) -> str:
    """Classifies an activation layer as "relu", "fixed" or "identity".

    Raises:
      UnsupportedLayerError: for activation functions faq_tf cannot quantize.
    """
    if type(layer) is L.ReLU:
        if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            raise _unsupported(layer, "has a negative slope or threshold, which is not supported")
        return "relu"
    name = activation_function_name(layer)
    if name in _RELU_FUNCTIONS:
        return "relu"
    if name in _FIXED_FUNCTIONS:
        return "fixed"
    if name == "linear":
        return "identity"
    raise _unsupported(layer, f"uses activation '{name}', which is not supported")


def supports(layer) -> bool:
    """Returns True if faq_tf can quantize `layer`."""
    try:
        get_layer_info(layer)
    except UnsupportedLayerError:
        return False
    return True


def get_layer_info(layer) -> LayerInfo:
    """Returns the table row for `layer`.

    Raises:
      UnsupportedLayerError: naming the layer, its class and what to do.
    """
    info = _BY_CLASS.get(type(layer))
    if info is None:
        raise _unsupported(layer, "is not supported by faq_tf")
    if info.output == ACTIVATION:
        activation_kind(layer)
    return info


def get_quantize_config(
    layer,
    weight_bits: int | None,
    activation_bits: int | None,
    signed: bool = False,
    exponent: int | None = None,
    clip_sigmas: float | None = None,
    rounding: str = "half_up",
) -> FaqQuantizeConfig | None:
    """Builds the QuantizeConfig for one layer.

    Args:
      layer: the float layer.
      weight_bits: bits of its weight tensors (kernels); None leaves them float.
      activation_bits: bits of its output; None leaves the output float.
      signed: whether the output range is signed.
      exponent: the output's l (from calibration); None uses the control value.
      clip_sigmas: k for the weight quantizers; None uses the per-bit default.
      rounding: the tie rule of the op that produces the output (`faq_tf.policy.LayerPlan.rounding`).

    Returns:
      The config, or None when nothing in the layer is quantized.
    """
    info = get_layer_info(layer)
    weights = {}
    for attr, role in info.weights:
        if role == WEIGHT and weight_bits is not None:
            weights[attr] = WeightQuantizer(weight_bits, clip_sigmas, info.per_channel_weights)
        elif role == BIAS and weight_bits is not None:
            weights[attr] = FixedExponentQuantizer(BIAS_BITS, BIAS_EXPONENT, signed=True)
        elif role == BN_MULTIPLIER and weight_bits is not None:
            weights[attr] = BatchNormMultiplierQuantizer(BN_BITS, BN_EXPONENT)
    output = None
    if activation_bits is not None:
        if info.output == ACTIVATION and activation_kind(layer) == "fixed":
            fixed_exponent, fixed_signed = _FIXED_FUNCTIONS[activation_function_name(layer)]
            output = FixedExponentQuantizer(8, fixed_exponent, fixed_signed, constant=False)
        else:
            output = ActivationQuantizer(activation_bits, signed, exponent, rounding)
    if not weights and output is None:
        return None
    return FaqQuantizeConfig(weights, output)
