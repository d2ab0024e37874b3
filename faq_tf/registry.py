"""Which Keras layers faq_tf quantizes, and how: one declarative table.

Each row names a layer class, the weights to quantize (attribute and role), what
kind of output the layer produces, and which following layers the integer runtime
fuses that output into (so it stays float in the QAT model too):

* ``computed``: a new tensor (conv, add, pooling, ...); quantized unless its only
  consumer is a layer it fuses into (Conv -> BatchNorm -> ReLU, Add -> ReLU).
  MaxPooling2D is one too: its values stay on its input's grid, but it gets its own
  output quantizer at its input's scale (`faq_tf.policy.share_runtime_scales` says why).
* ``activation``: an activation layer; what it needs depends on the function
  (see `activation_kind`).
* ``passthrough``: values stay on the input's grid, with no quantizer of their own
  (global max pooling, padding, cropping, reshapes, dropout).

Classes are matched exactly, as in tfmot: a subclass may change `call`.
"""

from __future__ import annotations

import dataclasses
import enum

from faq_tf.compat import keras
from faq_tf.configs import FaqQuantizeConfig
from faq_tf.quantizers import (
    ActivationQuantizer,
    BatchNormMultiplierQuantizer,
    FixedExponentQuantizer,
    Rounding,
    WeightQuantizer,
)

__all__ = [
    "WeightRole",
    "OutputKind",
    "FuseKind",
    "ActivationKind",
    "LayerInfo",
    "UnsupportedLayerError",
    "supports",
    "supported_layer_classes",
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


class WeightRole(str, enum.Enum):
    """What a quantized weight of a layer is, which decides its quantizer."""

    WEIGHT = "weight"  # a kernel: the policy's weight bits, l from the weights (WeightQuantizer)
    BIAS = "bias"  # an additive constant: BIAS_BITS, l = BIAS_EXPONENT
    BN_MULTIPLIER = "bn_multiplier"  # a BN's gamma: the multiplier gamma / sd at BN_BITS, l = BN_EXPONENT


class OutputKind(str, enum.Enum):
    """What kind of output a layer produces (see the module docstring)."""

    COMPUTED = "computed"
    ACTIVATION = "activation"
    PASSTHROUGH = "passthrough"


class FuseKind(str, enum.Enum):
    """A kind of sole consumer that the integer runtime fuses a layer's output into."""

    BATCH_NORM = "batch_norm"
    RELU = "relu"


class ActivationKind(str, enum.Enum):
    """What an activation layer's function needs (see `activation_kind`)."""

    RELU = "relu"  # the policy's ReLU bits, unsigned calibrated range
    FIXED = "fixed"  # the fixed power-of-two range TFLite's int8 kernels require
    IDENTITY = "identity"  # a no-op


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """How one layer class is quantized.

    Attributes:
      layer_class: the exact Keras class.
      weights: (attribute, `WeightRole`) pairs.
      output: the `OutputKind`.
      fuses_into: the `FuseKind`s of sole consumer that absorb the output.
      per_channel_weights: emit per-channel FakeQuant ops for the kernel.
      rounding: how the integer op computing the output rounds exact ties (a
        `faq_tf.quantizers.Rounding`); the Keras model copies it at inference.
    """

    layer_class: type
    weights: tuple[tuple[str, WeightRole], ...] = ()
    output: OutputKind = OutputKind.PASSTHROUGH
    fuses_into: tuple[FuseKind, ...] = ()
    per_channel_weights: bool = False
    rounding: Rounding = Rounding.HALF_UP


def _conv(cls, kernel: str, fuses=(FuseKind.BATCH_NORM, FuseKind.RELU), per_channel: bool = True) -> LayerInfo:
    weights = ((kernel, WeightRole.WEIGHT), ("bias", WeightRole.BIAS))
    return LayerInfo(cls, weights, OutputKind.COMPUTED, fuses, per_channel, Rounding.HALF_EVEN)


def _passthrough(cls) -> LayerInfo:
    return LayerInfo(cls)


_LAYER_TABLE: tuple[LayerInfo, ...] = (
    _conv(L.Conv2D, "kernel"),
    _conv(L.DepthwiseConv2D, "depthwise_kernel"),
    _conv(L.Dense, "kernel", fuses=(FuseKind.RELU,), per_channel=False),
    LayerInfo(  # folded into the conv before it; standalone, exported as a 1x1 depthwise conv
        L.BatchNormalization,
        (("gamma", WeightRole.BN_MULTIPLIER), ("beta", WeightRole.BIAS)),
        OutputKind.COMPUTED,
        (FuseKind.RELU,),
        rounding=Rounding.HALF_EVEN,
    ),
    LayerInfo(L.ReLU, output=OutputKind.ACTIVATION),
    LayerInfo(L.Activation, output=OutputKind.ACTIVATION),
    LayerInfo(L.Add, output=OutputKind.COMPUTED, fuses_into=(FuseKind.RELU,)),
    LayerInfo(L.Concatenate, output=OutputKind.COMPUTED),
    LayerInfo(L.AveragePooling2D, output=OutputKind.COMPUTED, rounding=Rounding.HALF_AWAY),
    LayerInfo(L.GlobalAveragePooling2D, output=OutputKind.COMPUTED, rounding=Rounding.HALF_EVEN),
    LayerInfo(L.Rescaling, output=OutputKind.COMPUTED),
    LayerInfo(L.Normalization, output=OutputKind.COMPUTED),
    _passthrough(L.InputLayer),
    LayerInfo(
        L.MaxPooling2D, output=OutputKind.COMPUTED
    ),  # quantized at its input's scale (policy.share_runtime_scales)
    _passthrough(L.GlobalMaxPooling2D),
    _passthrough(L.ZeroPadding2D),
    _passthrough(L.UpSampling2D),  # nearest only (get_layer_info): repeats values, keeps the scale
    _passthrough(L.Cropping2D),
    _passthrough(L.Flatten),
    _passthrough(L.Reshape),
    _passthrough(L.Dropout),
    _passthrough(L.SpatialDropout2D),
)
_BY_CLASS = {info.layer_class: info for info in _LAYER_TABLE}

# Activation functions by kind. The fixed ranges are those TFLite's int8 kernels require
# (a power of two, so Q(8, l) matches them exactly): function -> (l, signed).
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
    """Returns the serialized name of a layer's activation function ("relu", "softmax", ...).

    Args:
      layer: a layer with an `activation` attribute.
    """
    fn = layer.activation
    name = keras.activations.serialize(fn)
    return name if isinstance(name, str) else getattr(fn, "__name__", str(fn))


def activation_kind(layer) -> ActivationKind:
    """Classifies an activation layer as RELU, FIXED or IDENTITY.

    Args:
      layer: a layer whose row has output ACTIVATION (ReLU or Activation).

    Returns:
      The layer's `ActivationKind`.

    Raises:
      UnsupportedLayerError: for activation functions faq_tf cannot quantize.
    """
    if type(layer) is L.ReLU:
        if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            raise _unsupported(layer, "has a negative slope or threshold, which is not supported")
        return ActivationKind.RELU
    name = activation_function_name(layer)
    if name in _RELU_FUNCTIONS:
        return ActivationKind.RELU
    if name in _FIXED_FUNCTIONS:
        return ActivationKind.FIXED
    if name == "linear":
        return ActivationKind.IDENTITY
    raise _unsupported(layer, f"uses activation '{name}', which is not supported")


def supported_layer_classes() -> tuple[type, ...]:
    """The tf_keras layer classes of the table, in table order."""
    return tuple(info.layer_class for info in _LAYER_TABLE)


def supports(layer) -> bool:
    """Returns True if faq_tf can quantize `layer` (its class and activation are in the table).

    Args:
      layer: a Keras layer.
    """
    try:
        get_layer_info(layer)
    except UnsupportedLayerError:
        return False
    return True


def get_layer_info(layer) -> LayerInfo:
    """Returns the table row for `layer`.

    Args:
      layer: a Keras layer; its exact class is looked up.

    Raises:
      UnsupportedLayerError: naming the layer, its class and what to do.
    """
    info = _BY_CLASS.get(type(layer))
    if info is None:
        raise _unsupported(layer, "is not supported by faq_tf")
    if info.output is OutputKind.ACTIVATION:
        activation_kind(layer)
    if type(layer) is L.UpSampling2D and layer.interpolation != "nearest":
        raise _unsupported(layer, f"interpolates '{layer.interpolation}'; only 'nearest' (a repeat) is supported")
    return info


def get_quantize_config(
    layer,
    weight_bits: int | None,
    activation_bits: int | None,
    signed: bool = False,
    exponent: int | None = None,
    clip_sigmas: float | None = None,
    rounding: Rounding | str = Rounding.HALF_UP,
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
        if role is WeightRole.WEIGHT and weight_bits is not None:
            weights[attr] = WeightQuantizer(weight_bits, clip_sigmas, info.per_channel_weights)
        elif role is WeightRole.BIAS and weight_bits is not None:
            weights[attr] = FixedExponentQuantizer(BIAS_BITS, BIAS_EXPONENT, signed=True)
        elif role is WeightRole.BN_MULTIPLIER and weight_bits is not None:
            weights[attr] = BatchNormMultiplierQuantizer(BN_BITS, BN_EXPONENT)
    output = None
    if activation_bits is not None:
        if info.output is OutputKind.ACTIVATION and activation_kind(layer) is ActivationKind.FIXED:
            fixed_exponent, fixed_signed = _FIXED_FUNCTIONS[activation_function_name(layer)]
            output = FixedExponentQuantizer(8, fixed_exponent, fixed_signed, constant=False)
        else:
            output = ActivationQuantizer(activation_bits, signed, exponent, rounding)
    if not weights and output is None:
        return None
    return FaqQuantizeConfig(weights, output)
