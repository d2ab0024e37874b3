"""Deployment targets: each integer runtime's arithmetic, reproduced by the Keras model at inference.

A faq_tf .tflite file runs on three kinds of integer runtime, and they do not round alike.
Every requantizing op (conv, depthwise, dense, add, mean, the QUANTIZE that re-rounds a
concatenation input) turns an exact int32 accumulator `acc` into a stored level q:

* `xnnpack`, LiteRT's default CPU path: one rounding of the exact value acc * r, ties
  to even (conv, dense, mean) or up (add); what `faq_tf.quantizers.Rounding` copies.
* `reference`, LiteRT's builtin kernels (what the Python wheel runs without XNNPACK;
  the arithmetic NNAPI-less phones and most vendors' references follow; measured on
  x86-64), and
* `micro`, TensorFlow Lite for Microcontrollers' reference kernels: two roundings, with
  r = M * 2^(shift - 31) as TFLite's QuantizeMultiplier writes it (M a Q31 integer, in
  double precision):

      t1 = floor((acc * 2^max(shift, 0) * M + 2^30) / 2^31)       ties up
      q  = t1 / 2^max(-shift, 0), rounded                          ties: see below

  The second rounding breaks ties toward +infinity in LiteRT's optimized x86 kernels
  (ruy, and its NEON code through NEON_2_SSE) and away from zero in the reference code
  (gemmlowp's RoundingDivideByPOT): in TFLM always, in LiteRT for ADD and MEAN, for the
  last C mod 8 channels of a depthwise conv and for the last n mod 16 elements of a
  QUANTIZE. MEAN folds 1/n into M with an integer division, as both runtimes do.

SOFTMAX is a float32 lookup table on LiteRT (which rounds as the float softmax does) and
gemmlowp's fixed-point exp and reciprocal on TFLM, which `SoftmaxArithmetic` reproduces
(`faq_tf.fixedpoint`).

So `reference` and `micro` are two targets: on the Fashion-MNIST demo's w4a4 file they
agree on none of the 10,000 test logit vectors (`python -m benchmarks.runtimes`).
`tests/test_targets.py` checks every rule end to end on models that together have every
supported op. Average and max pooling, concatenation, MINIMUM/MAXIMUM, padding, reshapes
and nearest upsampling compute the same in all three; sigmoid and tanh are not reproduced
off XNNPACK (`TargetReport.not_emulated` names them).

`set_target(model, target)` gives every output quantizer of a faq_tf model the arithmetic
of the op that computes its tensor on that target; inference (`training=False`) then
computes that integer result exactly (in int64, from the accumulator recovered from the
float value), and training is unchanged. `xnnpack` is the default.

Example:

  report = faq_tf.set_target(qat, "micro")      # qat.predict(x) == TFLM's outputs
  faq_tf.set_target(qat, "xnnpack")             # back to the default
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

import numpy as np

from faq_tf import graph, introspect, registry
from faq_tf.accumulator import input_exponent, output_exponent
from faq_tf.compat import keras, tf
from faq_tf.fixedpoint import exp_on_negative_values, one_over_one_plus_x, rdbpot, srdhm, wrap
from faq_tf.layers import BatchNormWrapper, QuantizeInput
from faq_tf.outputs import float_outputs
from faq_tf.quantizers import ActivationQuantizer, BatchNormMultiplierQuantizer, FixedExponentQuantizer, WeightQuantizer

__all__ = [
    "Target",
    "TARGETS",
    "RUNTIME_OF",
    "as_target",
    "quantize_multiplier",
    "Requantization",
    "SoftmaxArithmetic",
    "TargetReport",
    "set_target",
]

L = keras.layers


class Target(str, enum.Enum):
    """An integer runtime whose arithmetic the Keras model reproduces (see the module docstring)."""

    XNNPACK = "xnnpack"  # LiteRT's default CPU path
    REFERENCE = "reference"  # LiteRT's builtin kernels
    MICRO = "micro"  # TensorFlow Lite for Microcontrollers


TARGETS = tuple(t.value for t in Target)

# The name `export_tflite.evaluate --runtime` gives each target's runtime.
RUNTIME_OF = {Target.XNNPACK: "xnnpack", Target.REFERENCE: "builtin", Target.MICRO: "micro"}


def as_target(value: Any) -> Target:
    """Returns the `Target` for a member, its value, or a runtime name of `RUNTIME_OF` ("builtin").

    Raises:
      ValueError: naming the value and the targets there are.
    """
    runtimes = {runtime: target for target, runtime in RUNTIME_OF.items()}
    if isinstance(value, str) and value in runtimes:
        return runtimes[value]
    try:
        return Target(value)
    except ValueError:
        raise ValueError(
            f"target must be one of {TARGETS} (or a runtime name: {tuple(runtimes)}), got {value!r}"
        ) from None


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: real = M * 2^(shift - 31), M a Q31 integer in [2^30, 2^31).

    Args:
      real: a positive double (an op's s_in * s_w / s_out).

    Returns:
      (M, shift); (0, 0) for 0 and for multipliers below 2^-32, which TFLite flushes to zero.
    """
    if real == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real)
    m = math.floor(mantissa * 2.0**31 + 0.5)  # TfLiteRound: half away from zero (positive here)
    if m == 2**31:
        m //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return int(m), int(shift)


def _mean_multiplier(real: float, n: int) -> tuple[int, int]:
    """MEAN's multiplier: 1/n folded into QuantizeMultiplier(real)'s M with an integer division.

    Both LiteRT (keep_dims=False) and TFLM run reference_ops::QuantizedMeanOrSum:
    k = min(floor(log2 n), 32, 31 + shift), M' = (M << k) // n, shift' = shift - k.
    """
    m, shift = quantize_multiplier(real)
    k = min(n.bit_length() - 1, 32, 31 + shift)
    return (m << k) // n, shift - k


@dataclasses.dataclass(frozen=True, eq=False)
class Requantization:
    """How one integer op turns its accumulator into the stored level of a tensor.

    Arrays broadcast against the tensor without its batch axis: one value per channel
    (shape (C,)), per element (the tensor's shape) or one for all (shape ()).

    Attributes:
      op: the TFLite op ("CONV_2D", ...), for reports.
      unit: the accumulator's scale (float64): acc = round(x / unit) for the float x the
        Keras layers compute (conv: s_in * s_w,c; add: 2 max(s1, s2) / 2^20; mean: s_in / n).
      multiplier: M, the Q31 integer of the op's multiplier.
      shift: the multiplier's power of two.
      ties_up: where the second rounding breaks ties toward +infinity (else away from zero).
    """

    op: str
    unit: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray
    ties_up: np.ndarray
    exponent: int | None = None

    def __call__(self, x: tf.Tensor, step: tf.Tensor, q_min: int, q_max: int) -> tf.Tensor:
        """The stored level q * step of every value of x, clamped to [q_min, q_max] (inference only).

        The gradient passes straight through, as FakeQuant's does inside its range.
        """
        acc = tf.cast(tf.round(tf.cast(x, tf.float64) / self.unit), tf.int64)
        left = np.maximum(self.shift, 0)
        right = np.maximum(-self.shift, 0)
        shifted = tf.clip_by_value(acc * tf.constant(2**left, tf.int64), -(2**31), 2**31 - 1)  # int32, as the runtime's
        product = shifted * tf.constant(self.multiplier, tf.int64)
        t1 = tf.math.floordiv(product + 2**30, 2**31)  # SaturatingRoundingDoublingHighMul: ties up
        divisor = tf.constant(2**right, tf.int64)
        floor = tf.math.floordiv(t1, divisor)
        remainder = t1 - floor * divisor
        half = tf.constant(2**right // 2, tf.int64)
        tie_up = tf.logical_or(tf.constant(self.ties_up), t1 >= 0)  # away from zero: up for t1 >= 0
        above = tf.logical_or(remainder > half, tf.logical_and(tf.equal(remainder, half), tie_up))
        rounds_up = tf.logical_and(above, tf.constant(right > 0))
        q = tf.clip_by_value(floor + tf.cast(rounds_up, tf.int64), q_min, q_max)
        y = tf.cast(q, x.dtype) * tf.cast(step, x.dtype)
        return tf.stop_gradient(y) + (x - tf.stop_gradient(x))  # exactly y, gradient 1

    def check_exponent(self, exponent: tf.Tensor) -> list:
        """Ops that fail when the tensor's l has moved since `set_target` computed M and the shift."""
        if self.exponent is None:
            return []
        message = f"{self.op}'s output exponent changed after faq_tf.set_target; call set_target again"
        return [tf.debugging.assert_equal(tf.cast(exponent, tf.float32), float(self.exponent), message=message)]


@dataclasses.dataclass
class TargetReport:
    """What `set_target` set.

    Attributes:
      target: the `Target`.
      emulated: layer name -> the TFLite op whose arithmetic its output quantizer now copies.
      not_emulated: layer name -> why its output keeps XNNPACK's single rounding on this target.
    """

    target: Target
    emulated: dict[str, str] = dataclasses.field(default_factory=dict)
    not_emulated: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def exact(self) -> bool:
        """True when every requantizing op of the model has its target's arithmetic."""
        return not self.not_emulated


# Where the second rounding breaks ties toward +infinity, per (target, op): "all", "none", or
# (axis, block): the first `block * floor(n / block)` channels (axis "channel") or elements of
# each image's tensor (axis "element") do, the rest round ties away from zero (measured: module doc).
_TIES_UP: dict[tuple[Target, str], Any] = {
    (Target.REFERENCE, "CONV_2D"): "all",
    (Target.REFERENCE, "FULLY_CONNECTED"): "all",
    (Target.REFERENCE, "DEPTHWISE_CONV_2D"): ("channel", 8),
    (Target.REFERENCE, "QUANTIZE"): ("element", 16),
    (Target.REFERENCE, "ADD"): "none",
    (Target.REFERENCE, "MEAN"): "none",
}


def _ties_up(target: Target, op: str, shape: tuple[int, ...]) -> np.ndarray:
    """The `Requantization.ties_up` array of `op` on `target` for a tensor of `shape` (no batch)."""
    rule = _TIES_UP.get((target, op), "none")
    if rule in ("all", "none"):
        return np.array(rule == "all")
    axis, block = rule
    n = shape[-1] if axis == "channel" else int(np.prod(shape))
    flags = np.arange(n) < block * (n // block)
    return flags if axis == "channel" else flags.reshape(shape)


def _inner(layer) -> keras.layers.Layer:
    return getattr(layer, "layer", layer)


def _kernel(wrapper) -> introspect.QuantizedTensor | None:
    """The quantized kernel of a conv, depthwise or dense layer's wrapper."""
    return next(
        (qt for qt in introspect.quantized_tensors_of(wrapper) if isinstance(qt.quantizer, WeightQuantizer)), None
    )


def _bn_multiplier(bn_wrapper) -> tuple[np.ndarray, int] | None:
    """The 8-bit BN multipliers |m_c| as integers and their exponent l_m (m_c = k_c * 2^l_m)."""
    bn = bn_wrapper.layer
    qts = {qt.tensor: qt for qt in introspect.quantized_tensors_of(bn_wrapper)}
    gamma = qts.get("gamma")
    if gamma is None or not isinstance(gamma.quantizer, BatchNormMultiplierQuantizer):
        return None
    q = gamma.quantizer
    sd = np.sqrt(bn.moving_variance.numpy().astype(np.float32) + np.float32(bn.epsilon))
    q_max = 2 ** (q.bits - 1) - 1
    k = np.clip(
        np.floor(gamma.weight.numpy().astype(np.float32) / sd / np.float32(2.0**q.exponent) + 0.5), -q_max, q_max
    )
    return np.abs(k).astype(np.int64), q.exponent


def _activation_like(layer) -> bool:
    """A ReLU or linear activation layer: the converter fuses it into the op before it."""
    if not isinstance(layer, (L.ReLU, L.Activation)) or not registry.supports(layer):
        return False
    return registry.activation_kind(layer) in (registry.ActivationKind.RELU, registry.ActivationKind.IDENTITY)


def _source(g: graph.Graph, name: str) -> tuple[str, str | None]:
    """The layer computing the tensor that layer `name` quantizes, and a BatchNormalization
    folded into it: walks back through fused activations and folded BNs to the first layer
    that is not one, or whose input is stored (then it is an op of its own)."""
    current, bn = name, None
    if isinstance(g.layers[current], QuantizeInput) and g.producers[current]:
        current = g.producers[current][0]  # an output quantizer added for export: its producer's op
    while True:
        layer = g.layers[current]
        producers = g.producers[current]
        folds = _activation_like(_inner(layer)) or (isinstance(layer, BatchNormWrapper) and not layer.standalone)
        if not folds or len(producers) != 1 or output_exponent(g, producers[0]) is not None:
            return current, bn
        if isinstance(layer, BatchNormWrapper):
            bn = current
        current = producers[0]


def _requantization(
    g: graph.Graph, name: str, l_out: int, target: Target, pack_int4: bool
) -> tuple[Requantization | None, str | None]:
    """The arithmetic of the op computing layer `name`'s quantized output (exponent l_out) on
    `target`: (spec, None), (None, why not) or (None, None) where the target needs none."""
    source, bn = _source(g, name)
    wrapper = g.layers[source]
    layer = _inner(wrapper)
    s_out = 2.0**l_out
    shape = tuple(g.layers[name].output_shape[1:])
    if isinstance(layer, (L.Conv2D, L.DepthwiseConv2D, L.Dense)) or (
        isinstance(wrapper, BatchNormWrapper) and wrapper.standalone
    ):
        return _matmul(g, source, bn, target, pack_int4, s_out, shape)
    if target is Target.XNNPACK:
        return None, None  # the tie rules of `faq_tf.quantizers.Rounding`
    if None in shape:
        return None, f"a {type(layer).__name__} output of unknown shape {shape}"
    if isinstance(layer, L.Add):
        exponents = [output_exponent(g, p) for p in g.producers[source]]
        if len(exponents) != 2 or None in exponents:  # (producers are distinct: Add([x, x]) has one)
            return None, "an Add of other than two distinct quantized tensors"
        unit = 2.0 * 2.0 ** max(exponents) / 2**20  # both inputs shifted left by 20, the larger halved
        return _spec("ADD", target, shape, unit, *quantize_multiplier(unit / s_out)), None
    if isinstance(layer, L.GlobalAveragePooling2D):
        l_in = input_exponent(g, source)
        if l_in is None or layer.keepdims:
            return None, "a mean of a float tensor, or one with keepdims"
        n = int(np.prod(g.layers[g.producers[source][0]].output_shape[1:-1]))
        m, shift = _mean_multiplier(2.0**l_in / s_out, n)
        return _spec("MEAN", target, shape, 2.0**l_in / n, m, shift), None
    if isinstance(layer, L.Concatenate):
        return _concat(g, source, target, s_out, shape)
    if _activation_like(layer):
        if output_exponent(g, g.producers[source][0]) != l_out:
            return None, f"a {type(layer).__name__} that rescales a stored tensor"
        return None, None  # a ReLU of a stored tensor on its grid: exact
    if isinstance(layer, _ALIKE_EVERYWHERE) or (
        registry.supports(layer) and registry.get_layer_info(layer).output is registry.OutputKind.PASSTHROUGH
    ):
        return None, None  # computed alike on every target
    return None, f"a {type(layer).__name__}, whose arithmetic on {target.value} faq_tf does not reproduce"


# Layers whose integer result is the same on every runtime (measured: tests/test_targets.py):
# pooling keeps its input's grid (average pooling rounds half away from zero everywhere).
_ALIKE_EVERYWHERE = (L.AveragePooling2D, L.MaxPooling2D, L.GlobalMaxPooling2D, L.InputLayer)


def _spec(op: str, target: Target, shape: tuple, unit, m, shift) -> Requantization:
    arrays = (np.asarray(unit, np.float64), np.asarray(m, np.int64), np.asarray(shift, np.int64))
    return Requantization(op, *arrays, _ties_up(target, op, shape))


def _matmul(g, source, bn, target, pack_int4, s_out, shape) -> tuple[Requantization | None, str | None]:
    """Conv, depthwise, dense (with a folded BN), or a standalone BN exported as a 1x1 depthwise conv."""
    wrapper = g.layers[source]
    layer = _inner(wrapper)
    kernel = None if isinstance(wrapper, BatchNormWrapper) else _kernel(wrapper)
    if isinstance(wrapper, BatchNormWrapper):
        if len(shape) != 3:
            return None, "a BatchNormalization of a tensor that is not an image (exported as MUL and ADD)"
        op = "DEPTHWISE_CONV_2D"
    else:
        op = _MATMUL_OPS.get(type(layer))
        if op is None:
            return None, f"a {type(layer).__name__}, whose arithmetic faq_tf does not reproduce"
        if isinstance(layer, L.Conv2D) and getattr(layer, "groups", 1) > 1:
            op = "CONV_2D_GROUPED"  # LiteRT runs grouped convolutions on its reference kernel
    if target is Target.XNNPACK:
        packed = pack_int4 and kernel is not None and kernel.bits <= 4 and op != "FULLY_CONNECTED"
        if not packed:
            return None, None
        target = Target.REFERENCE  # XNNPACK leaves convolutions with INT4 weights to the builtin kernels
    l_in = input_exponent(g, source)
    if l_in is None:
        return None, "its input is float"
    if isinstance(wrapper, BatchNormWrapper):  # kernel k_c * 2^l_m on a per-channel grid of 2^l_m
        folded = _bn_multiplier(wrapper)
        if folded is None:
            return None, "a BatchNormalization without a quantized multiplier"
        unit = np.full(shape[-1], 2.0 ** (l_in + folded[1]))
    else:
        if kernel is None or kernel.exponent is None:
            return None, "its kernel is float"
        unit = np.full(shape[-1], 2.0 ** (l_in + kernel.exponent))
        if bn is not None:  # the converter folds the BN: per-channel weight scales 2^l_w * |m_c|
            folded = _bn_multiplier(g.layers[bn])
            if folded is None:
                return None, "a BatchNormalization without a quantized multiplier"
            unit = unit * folded[0] * 2.0 ** folded[1]
    pairs = [quantize_multiplier(float(u) / s_out) for u in unit]
    m, shift = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    return _spec(op, target, shape, np.where(unit > 0, unit, 1.0), m, shift), None


_MATMUL_OPS = {L.Conv2D: "CONV_2D", L.DepthwiseConv2D: "DEPTHWISE_CONV_2D", L.Dense: "FULLY_CONNECTED"}


def _concat(g, source, target, s_out, shape) -> tuple[Requantization | None, str | None]:
    """A concatenation: each input on another scale is re-rounded by a QUANTIZE op of its own."""
    layer = _inner(g.layers[source])
    if layer.axis not in (-1, len(shape)):
        return None, "a concatenation on an axis other than the channels"
    parts: list[tuple[np.ndarray, ...]] = []
    for producer in g.producers[source]:
        l_in = output_exponent(g, producer)
        if l_in is None:
            return None, "a concatenation of a float tensor"
        part = (*shape[:-1], int(g.layers[producer].output_shape[-1]))
        m, shift = quantize_multiplier(2.0**l_in / s_out)  # equal scales: M = 2^30, shift 1, exact
        values = (2.0**l_in, m, shift)
        parts.append(
            tuple(np.full(part, v) for v in values) + (np.broadcast_to(_ties_up(target, "QUANTIZE", part), part),)
        )
    if sum(p[0].shape[-1] for p in parts) != shape[-1]:
        return None, "a concatenation that joins one tensor more than once"
    unit, m, shift, ties = (np.concatenate([p[i] for p in parts], axis=-1) for i in range(4))
    return Requantization("QUANTIZE", unit, m.astype(np.int64), shift.astype(np.int64), ties), None


@dataclasses.dataclass(frozen=True, eq=False)
class SoftmaxArithmetic:
    """TFLM's int8 SOFTMAX (reference_ops::Softmax, beta 1) for inputs with scale `input_scale`.

    The Keras layer hands its quantizer softmax(x); the input levels' differences to the row's
    maximum are recovered from it exactly (d = round(log(p / p_max) / s_in), the float error
    being far below a level), and the runtime's fixed-point result computed from them.
    """

    input_scale: float
    op: str = "SOFTMAX"

    def __call__(self, p: tf.Tensor) -> tf.Tensor:
        """The stored output levels q (0..255, scale 2^-8) for softmax outputs p."""
        real = min(self.input_scale * 2.0**26, 2.0**31 - 1.0)  # PreprocessSoftmaxScaling, 5 integer bits
        m, left = quantize_multiplier(real)
        diff_min = -math.floor(31 * 2.0**26 / 2.0**left)  # -CalculateInputRadius(5, left, 31)
        ratio = tf.cast(p, tf.float64) / tf.reduce_max(tf.cast(p, tf.float64), axis=-1, keepdims=True)
        levels = tf.math.log(tf.maximum(ratio, 1e-300)) / self.input_scale
        d = tf.cast(tf.maximum(tf.round(levels), float(diff_min - 1)), tf.int64)
        valid = d >= diff_min
        e = exp_on_negative_values(srdhm(d * 2**left, m))  # Q0.31
        e = tf.where(valid, e, tf.zeros_like(e))
        total = tf.reduce_sum(tf.where(valid, rdbpot(e, 12), tf.zeros_like(e)), axis=-1, keepdims=True)  # Q12.19
        bits = tf.reduce_sum(tf.cast(total >= tf.constant([2**i for i in range(32)], tf.int64), tf.int64), -1, True)
        headroom = 32 - bits
        reciprocal = one_over_one_plus_x(wrap(tf.bitwise.left_shift(total, headroom) - 2**31))
        exponent = (12 - headroom) + 31 - 8
        q = rdbpot(srdhm(reciprocal, e), exponent)
        return tf.cast(tf.where(valid, tf.clip_by_value(q, 0, 255), tf.zeros_like(q)), p.dtype)


def _record(report: TargetReport, layer: str, spec, why: str | None) -> None:
    if spec is not None:
        report.emulated[layer] = spec.op
    elif why is not None and report.target is not Target.XNNPACK:
        report.not_emulated[layer] = why


def _fixed_range(g: graph.Graph, name: str, target: Target) -> tuple[SoftmaxArithmetic | None, str | None]:
    """The arithmetic of a fixed-range activation (softmax, sigmoid, tanh) on `target`."""
    source = name
    if isinstance(g.layers[name], QuantizeInput) and g.producers[name]:
        source = g.producers[name][0]  # an output quantizer added for export: the activation before it
    layer = _inner(g.layers[source])
    function = registry.activation_function_name(layer) if hasattr(layer, "activation") else None
    if target is Target.MICRO and function == "softmax" and len(g.producers[source]) == 1:
        l_in = output_exponent(g, g.producers[source][0])
        if l_in is None:
            return None, "a softmax of a float tensor"
        return SoftmaxArithmetic(2.0**l_in), None
    if target is Target.XNNPACK or function == "softmax":
        # LiteRT's builtin softmax (a float32 expf table) rounds as the float softmax does
        # (measured: tests/test_targets.py); XNNPACK's too.
        return None, None
    return None, f"{function} is computed in float, not with {target.value}'s lookup table or fixed point"


def set_target(model: keras.Model, target: Target | str, pack_int4: bool = False) -> TargetReport:
    """Makes the inference of a faq_tf model compute what `target`'s integer runtime computes.

    Call it on a finished model (it reads the weight exponents and BN multipliers as they
    are); again after further training (inference fails with a message if an output's
    exponent has moved since). It changes only inference (`training=False`);
    `model.predict` and `model.evaluate` are rebuilt on their next call. The target is not
    saved with the model: a saved, cloned or rebuilt model (`quantize_float_outputs`)
    starts on `xnnpack`.

    The rules were measured on LiteRT 2.3.0's x86-64 builtin kernels (their NEON code
    through NEON_2_SSE; aarch64 builds run native NEON and other depthwise kernels, not
    measured) and on TFLM's reference kernels as the tflite-micro package runs them
    (optimized kernel libraries such as CMSIS-NN are not).

    Args:
      model: a faq_tf QAT model as exported (`export_tflite.convert` snaps it and adds its
        output quantizers; faq-train's saved models already have both).
      target: a `Target` or its value ("xnnpack", "reference", "micro").
      pack_int4: the file stores sub-8-bit weights packed (`--pack_int4`): on `xnnpack`
        the convolutions with such weights run on LiteRT's builtin kernels.

    Returns:
      A `TargetReport`: the outputs given the target's arithmetic, and any that could not be.

    Raises:
      ValueError: for an unknown target, or a model without faq_tf quantizers.
    """
    target = as_target(target)
    if not introspect.quantized_tensors(model):
        raise ValueError(
            f"Model '{model.name}' has no faq_tf quantizers, so it has no integer arithmetic to set: "
            "quantize it with faq_tf.quantize_model first (or load a model faq-train saved)."
        )
    g = graph.model_graph(model)
    report = TargetReport(target)
    for name, layer in g.layers.items():
        for qt in introspect.quantized_tensors_of(layer):
            stored = qt.tensor == "output" or (isinstance(layer, QuantizeInput) and g.producers[name])
            if stored and isinstance(qt.quantizer, FixedExponentQuantizer) and not qt.quantizer.constant:
                spec, why = _fixed_range(g, name, target)  # softmax, sigmoid, tanh
                qt.quantizer.requantization = spec
                _record(report, qt.layer, spec, why)
                continue
            if not stored or not isinstance(qt.quantizer, ActivationQuantizer):
                continue  # weights, the network input
            spec, why = (None, f"{qt.bits}-bit tensors are not int8") if qt.bits > 8 else (None, None)
            if qt.bits <= 8:
                spec, why = _requantization(g, name, qt.exponent, target, pack_int4)
            if spec is not None:
                spec = dataclasses.replace(spec, exponent=qt.exponent)
            qt.quantizer.requantization = spec
            _record(report, qt.layer, spec, why)
    if target is not Target.XNNPACK:
        for name in float_outputs(model):
            report.not_emulated[_inner(g.layers[name]).name] = (
                "a float output: the file stores it in 8 bits (faq_tf.quantize_float_outputs gives the Keras model "
                "the same quantizer; faq-train's saved models have it)"
            )
    model.predict_function = None  # traced with the old arithmetic
    model.test_function = None
    return report
