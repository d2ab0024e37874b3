"""Power-of-two fixed-point quantizers Q(b, l) from the FAQ paper (section 3.1).

A value x is represented with b bits and the least significant bit at 2^l:

  unsigned: Q_{b,l}(x) = min(round(x * 2^-l), 2^b - 1) * 2^l          (x >= 0)
  signed:   Q_{b,l}(x) = clip(round(x * 2^-l), -(2^(b-1) - 1), 2^(b-1) - 1) * 2^l

`round(v)` is floor(v + 1/2) (ties go up), which is what TensorFlow's FakeQuant
kernels compute; at inference an activation quantizer rounds ties instead as the
integer op producing the tensor does (`Rounding`). Gradients pass straight through
inside the representable range and are zero where a value is clipped (the
straight-through estimator).

Every quantizer below is written with ops that the TFLite converter turns into
integer tensors whose scale is exactly 2^l:

* conv kernels use the *per-channel* FakeQuant op with equal ranges on every channel,
  so that the converter can fold a following BatchNormalization into exact
  per-channel scales (2^l x an 8-bit BN multiplier) and keep the weights on the grid;
  Dense kernels use the per-tensor op (the converter rejects per-axis scales there);
* tensors below 8 bits are clipped to the b-bit range and then fake-quantized at
  8 bits with the same step: int8 storage holding at most 2^b levels (weights can
  trace as packed b-bit tensors instead: `faq_tf.tracing.packed_sub8bit_weights`).
  That form is what the converter sees (`faq_tf.tracing.export_trace`); in training
  and Keras inference an unsigned b-bit activation is one b-bit FakeQuant, which
  computes the same values and gradients with fewer ops;
* signed activations of 8 bits and more clamp at -2^(b-1), one level below the
  symmetric range, because the integer runtime clamps there.

Example:

  >>> q = ActivationQuantizer(bits=4)
  >>> q.get_config()
  {'bits': 4, 'signed': False, 'exponent': -2, 'rounding': 'half_up'}
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any

from faq_tf.compat import keras, register, tf, tfmot
from faq_tf.tracing import exporting, packing

__all__ = [
    "MIN_BITS",
    "MAX_BITS",
    "MIN_EXPONENT",
    "MAX_CONSTANT_BITS",
    "MAX_ABS_EXPONENT",
    "check_bits",
    "check_exponent",
    "DEFAULT_CLIP_SIGMAS",
    "integer_range",
    "default_clip_sigmas",
    "exponent_for_range",
    "control_exponent",
    "weight_exponent",
    "fake_quant",
    "Rounding",
    "FixedPointQuantizer",
    "WeightQuantizer",
    "ActivationQuantizer",
    "FixedExponentQuantizer",
    "BatchNormMultiplierQuantizer",
]

MIN_BITS = 2
MAX_BITS = 16  # weights and activations; constants (biases) may use up to 32.
MAX_CONSTANT_BITS = 32

# k in "clip the weights at k standard deviations". The paper uses 4.12 at 4 bits
# (footnote 4) and gives no 8-bit value. At 5 bits and more faq_tf uses k = 5, from a
# sweep over k on the Fashion-MNIST ResNet that measures 8-bit top-1 after calibration
# (against fp32) and kernel SQNR for each k (`python -m benchmarks.weight_clip_sweep`;
# results in docs/results.md): accuracy barely moves over a wide range of k, while
# SQNR peaks near k = 3 (Gaussian-like weights). ACIQ's analysis puts the 8-bit optimum at
# about 3.9 sigma for Gaussian and 7 sigma for Laplacian weights; ceil(log2) widens the
# effective clip by 1-2x, so k = 5 covers heavy-tailed pretrained kernels too. Below 4
# bits k shrinks (Gaussian-optimal 3-bit clip 2.15 sigma; 2-bit ternary weights need a
# step near sigma) so that the grid does not round almost every weight to zero.
DEFAULT_CLIP_SIGMAS: dict[int, float] = {2: 1.0, 3: 2.15, 4: 4.12}
_CLIP_SIGMAS_5_AND_ABOVE = 5.0


class Rounding(str, enum.Enum):
    """How an integer runtime rounds a value that lies exactly halfway between two levels.

    FakeQuant (training) rounds ties up; LiteRT's CPU kernels (XNNPACK, its default) round
    ties to even in CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and MEAN, up in ADD and in
    the QUANTIZE that requantizes a CONCATENATION input, and away from zero in
    AVERAGE_POOL_2D (which XNNPACK leaves to the builtin kernel). Measured op by op:
    tests/test_export.py::test_integer_model_computes_what_keras_computes. At inference
    the Keras model applies the rule of the op that produces each tensor
    (`faq_tf.registry`), so that it computes what the integer model computes, tie for tie.

    Configs store the plain string value; everything that takes a rounding rule accepts
    the member or its value.
    """

    HALF_UP = "half_up"
    HALF_EVEN = "half_even"
    HALF_AWAY = "half_away"  # away from the int8 storage's zero point


def _as_rounding(value: Any) -> Rounding:
    try:
        return Rounding(value)
    except (ValueError, TypeError):
        modes = tuple(r.value for r in Rounding)
        raise ValueError(f"rounding must be one of {modes}, got {value!r}") from None


def _round_ties(x: tf.Tensor, step: tf.Tensor, q_min: int, q_max: int, rounding: Rounding) -> tf.Tensor:
    """Q(x) on the levels [q_min, q_max] with exact ties rounded by `rounding` (not HALF_UP).

    Computed directly rather than as FakeQuant plus a correction: a few elementwise ops
    instead of a dozen on every activation, which is most of an inference pass's cost.
    Every step is exact in float32: x / step (a power of two), t - 0.5 for t >= 0 (t below
    1/4 gives level 0 either way), the truncation and fraction of t. The gradient is
    FakeQuant's (1 inside the range, 0 outside), and the value is exactly the level.
    """
    clipped = tf.clip_by_value(x, q_min * step, q_max * step)
    t = clipped / step
    if rounding is Rounding.HALF_EVEN:
        level = tf.math.round(t)  # round half to even
    elif q_min < 0:  # half away from zero: trunc(t) + trunc(2 * frac(t))
        whole = tf.cast(tf.cast(t, tf.int32), x.dtype)
        level = whole + tf.cast(tf.cast(2.0 * (t - whole), tf.int32), x.dtype)
    elif q_max < 2**7:  # unsigned in int8 storage, all below its zero point 2^7: ties round down
        level = tf.math.ceil(t - 0.5)
    else:  # unsigned 8-bit: ties round away from the storage's zero point 2^7
        level = tf.where(t < 2.0**7, tf.math.ceil(t - 0.5), tf.math.floor(t + 0.5))
    return tf.stop_gradient(level * step) + (clipped - tf.stop_gradient(clipped))


# Smallest l a tensor may get. The TFLite converter widens any range narrower than 1e-6
# (breaking the power-of-two scale), so ranges are kept above 127 * 2^-24 = 7.6e-6.
# Only near-dead tensors (or an all-zero weight tensor, sigma 0) ever reach this.
MIN_EXPONENT = -24


# The largest |l| of a fixed exponent: 2^l then stays a normal float32 (2^-126 is the smallest).
MAX_ABS_EXPONENT = 126


def check_bits(value: Any, what: str = "bits", maximum: int = MAX_BITS) -> int:
    """Returns `value` if it is an int b in [MIN_BITS, maximum]; every bit count is checked here.

    Args:
      value: the candidate b.
      what: the argument's name, for the message (e.g. "weight_bits").
      maximum: the largest b allowed (`MAX_BITS`, or `MAX_CONSTANT_BITS` for constants).

    Raises:
      ValueError: naming `what` and the value, for a bool, a non-int or a b out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_BITS <= value <= maximum:
        raise ValueError(f"{what} must be an integer in [{MIN_BITS}, {maximum}], got {value!r}")
    return value


def check_exponent(value: Any, what: str = "exponent") -> int:
    """Returns `value` if it is an int l with |l| <= MAX_ABS_EXPONENT; every fixed l is checked here.

    Args:
      value: the candidate l.
      what: the argument's name, for the message.

    Raises:
      ValueError: naming `what` and the value, for a bool, a non-int or an l out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_ABS_EXPONENT:
        raise ValueError(f"{what} must be an integer in [-{MAX_ABS_EXPONENT}, {MAX_ABS_EXPONENT}], got {value!r}")
    return value


def integer_range(bits: int, signed: bool) -> tuple[int, int]:
    """Returns (q_min, q_max), the integer levels of Q(b, l).

    Args:
      bits: b, the number of bits.
      signed: symmetric signed range if True, else [0, 2^b - 1].

    Returns:
      The smallest and largest integer X with Q(x) = X * 2^l.
    """
    if signed:
        q_max = 2 ** (bits - 1) - 1
        return -q_max, q_max
    return 0, 2**bits - 1


def default_clip_sigmas(bits: int) -> float:
    """Returns the default k (clip at k standard deviations) for b-bit weights.

    Args:
      bits: b; below 5 bits k is `DEFAULT_CLIP_SIGMAS[bits]`, from 5 bits up 5.0.
    """
    return DEFAULT_CLIP_SIGMAS.get(bits, _CLIP_SIGMAS_5_AND_ABOVE)


def exponent_for_range(y_max: float, bits: int, signed: bool) -> int:
    """Returns l such that Q(b, l) covers [0, y_max] rounded up to a power of two.

    Section 3.2: y_max is rounded up to the next power of two, 2^p, and the b-bit
    grid is laid under it: l = p - b for unsigned, l = p - (b - 1) for signed tensors.

    Args:
      y_max: the largest magnitude to represent (for example a calibrated percentile).
      bits: b.
      signed: whether the tensor is signed.

    Returns:
      The integer exponent l.
    """
    if not math.isfinite(y_max):
        raise ValueError(f"y_max must be finite, got {y_max}")
    if y_max <= 0.0:
        y_max = 1.0  # A tensor that is always zero: any grid holds it exactly.
    mantissa, exp = math.frexp(y_max)  # y_max = mantissa * 2^exp, mantissa in [0.5, 1)
    p = exp - 1 if mantissa == 0.5 else exp
    return max(p - (bits - 1 if signed else bits), MIN_EXPONENT)


def control_exponent(bits: int, signed: bool) -> int:
    """Returns l for the uncalibrated control runs of section 3.2.

    The paper sets y_max = 2^(b/2) - 1 when no calibration is done. Rounded up to
    a power of two that is l = -b/2 for unsigned tensors (the same l the paper uses
    for "all other parameters").
    """
    return exponent_for_range(2.0 ** (bits / 2) - 1.0, bits, signed)


def _ceil_log2(x: tf.Tensor) -> tf.Tensor:
    """Exact ceil(log2(x)) for positive, normal float32 x, read from the float's bits.

    x = 1.m * 2^e gives e when the mantissa m is zero and e + 1 otherwise: two integer
    ops instead of a log and two pows, so the per-step weight-exponent update is cheap.
    """
    bits = tf.bitcast(tf.cast(x, tf.float32), tf.int32)
    biased = tf.bitwise.right_shift(bits, 23)
    fraction = tf.cast(tf.not_equal(tf.bitwise.bitwise_and(bits, 0x7FFFFF), 0), tf.int32)
    return tf.cast(biased - 127 + fraction, tf.float32)


def weight_exponent(weights: tf.Tensor, bits: int, clip_sigmas: float) -> tf.Tensor:
    """Computes the weight exponent l of section 3.1.1.

    The tensor is clipped at +-k*sigma and that range is split into the 2^b - 2
    equal bins of the signed grid: Delta = k * sigma / (2^(b-1) - 1) and
    l = ceil(log2(Delta)).

    Args:
      weights: the float weight tensor.
      bits: b.
      clip_sigmas: k.

    Returns:
      A float32 scalar tensor holding the integer l.
    """
    w = tf.cast(weights, tf.float32)
    _, q_max = integer_range(bits, signed=True)
    delta = clip_sigmas * tf.math.reduce_std(w) / q_max
    delta = tf.maximum(delta, 2.0**MIN_EXPONENT)
    return tf.stop_gradient(_ceil_log2(delta))


def _ste_round_clip(x: tf.Tensor, step: tf.Tensor, q_min: float, q_max: float) -> tf.Tensor:
    """Q(b, l) with plain ops (for constants, and above FakeQuant's 16 bits).

    clip_by_value gives the gradient (1 inside the range, 0 outside); the rounding
    is added under stop_gradient, so it is straight-through.
    """
    clipped = tf.clip_by_value(x, q_min * step, q_max * step)
    rounded = tf.math.floor(clipped / step + 0.5) * step
    return clipped + tf.stop_gradient(rounded - clipped)


def _on_grid(x: tf.Tensor, bits: int, exponent: tf.Tensor | float) -> tf.Tensor:
    """Signed Q(b, l)(x) without FakeQuant's offset: clip, then floor(x * 2^-l + 1/2) in float32.

    FakeQuant computes the same except within an ulp of a tie: it rounds x - min, so the
    offset of its zero point (8 for a 4-bit range, 128 for the 8-bit storage of 4-bit
    values) takes low bits off x first, and the two forms a 4-bit weight traces as (int8
    storage, packed INT4) can store one weight a step apart. Weights on the grid are
    stored alike by both; inference and export quantize them with this first.
    """
    step = tf.pow(tf.constant(2.0), tf.cast(exponent, tf.float32))
    q_min, q_max = integer_range(bits, signed=True)
    clipped = tf.clip_by_value(x, q_min * step, q_max * step)
    q = tf.math.floor(clipped / step + 0.5) * step  # exact: a power-of-two step
    return tf.stop_gradient(q) + (clipped - tf.stop_gradient(clipped))  # exactly q; FakeQuant's gradient


def _straight_through(
    x: tf.Tensor, step: tf.Tensor, q_lo: int, q_hi: int, forward: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
) -> tf.Tensor:
    """forward(x, step), with FakeQuant's gradient dy * [q_lo * 2^l <= x <= q_hi * 2^l] from one kernel.

    `forward` is the quantizer's own ops (values unchanged); `[q_lo, q_hi]` is the outermost
    range they clip x to, in levels. TensorFlow's FakeQuantWithMinMaxVarsGradient also
    reduces the gradients of min and max over the whole tensor, which a quantizer with a
    fixed or stop-gradient range throws away, and so costs about twice the one-pass mask
    below (the "+convertible" variants of `python -m benchmarks.step_time` keep TensorFlow's
    gradient, for comparison). The mask is computed on t = x * 2^-l against the
    integer levels: scaling by a power of two is exact, so it selects the same elements
    (tests/test_quantizers.py checks values and gradients against the convertible form).
    With q_hi - q_lo = quant_max - quant_min the op's nudged range is [q_lo, q_hi] exactly.
    """
    span = int(q_hi - q_lo)
    num_bits = span.bit_length()
    narrow = span == 2**num_bits - 2  # a symmetric signed range
    if not (2 <= num_bits <= MAX_BITS and span in (2**num_bits - 1, 2**num_bits - 2)):
        raise ValueError(
            f"a FakeQuant range of levels [{q_lo}, {q_hi}] is not one of 2^b - 1 or 2^b - 2 steps "
            f"for a b of 2..{MAX_BITS}; quantize it with plain ops (fake_quant(..., constant=True))"
        )

    @tf.custom_gradient
    def quantize(x, step):
        def grad(dy):
            t = x * (1.0 / step)
            mask_grad = tf.raw_ops.FakeQuantWithMinMaxArgsGradient(
                gradients=dy, inputs=t, min=float(q_lo), max=float(q_hi), num_bits=num_bits, narrow_range=narrow
            )
            return mask_grad, None

        return forward(x, step), grad

    # A variable is read out here: a distributed one read inside, in cross-replica context
    # (precise BN's eager passes in `strategy.scope()`), is its component variable, which
    # custom_gradient would count as a captured variable and refuse.
    return quantize(tf.convert_to_tensor(x), tf.convert_to_tensor(step))


def fake_quant(
    x: tf.Tensor,
    bits: int,
    exponent: tf.Tensor | float,
    signed: bool,
    per_channel: bool = False,
    constant: bool = False,
    rounding: Rounding | str = Rounding.HALF_UP,
    weight: bool = False,
) -> tf.Tensor:
    """Applies Q(b, l) to `x` with ops the TFLite converter understands.

    Args:
      x: the float tensor.
      bits: b, 2..32 (above 16 only for constants such as biases).
      exponent: l, a Python number or a float32 scalar tensor.
      signed: symmetric signed range if True, else unsigned.
      per_channel: use the per-channel FakeQuant op over the last axis with the same
        range on every channel. Needed for weights: see the module docstring.
      constant: `x` is a parameter the converter must fold into another op (a BN
        multiplier, a bias): use plain arithmetic, because a FakeQuant op would stop
        the folding and leave the conv in float.
      rounding: how exact ties round (a `Rounding` or its value). Anything but HALF_UP
        computes the levels with plain elementwise ops that the converter would keep in
        float, so use it for Keras inference only. Activations only (not with
        `per_channel` or `constant`).
      weight: `x` is a weight tensor. Per-channel ones always are; a per-tensor one
        (Dense) below 8 bits then traces, inside `faq_tf.tracing.packed_sub8bit_weights`,
        as a b-bit FakeQuant the converter stores as packed INT4, and otherwise like a
        b-bit activation (clip, 8-bit FakeQuant).

    Returns:
      The quantized tensor, same shape and dtype as `x`.
    """
    step = tf.pow(tf.constant(2.0), tf.cast(exponent, tf.float32))
    q_min, q_max = integer_range(bits, signed)
    if bits > MAX_BITS or constant:
        return _ste_round_clip(x, step, float(q_min), float(q_max))
    if per_channel:

        def per_channel_op(v, step):
            b, lo, hi = bits, q_min, q_max
            if b < 8 and not packing():
                v = tf.clip_by_value(v, lo * step, hi * step)
                (lo, hi), b = integer_range(8, signed), 8
            channels = v.shape[-1]
            lo, hi = tf.fill([channels], lo * step), tf.fill([channels], hi * step)
            return tf.quantization.fake_quant_with_min_max_vars_per_channel(v, lo, hi, num_bits=b, narrow_range=signed)

        return _quantize(x, step, q_min, q_max, per_channel_op)
    if bits < 8 and weight and packing():
        # Symmetric b-bit values with scale 2^l exactly: the narrow range has 2^b - 1 levels.
        return tf.quantization.fake_quant_with_min_max_vars(
            x, q_min * step, q_max * step, num_bits=bits, narrow_range=True
        )
    rounding = _as_rounding(rounding)
    if rounding is not Rounding.HALF_UP:
        # Keras inference: the integer op's tie rule, on the levels the runtime clamps to
        # (a signed tensor of 8 bits and more reaches -2^(b-1), see below).
        if signed and bits >= 8:
            q_min = -q_max - 1
        return _round_ties(x, step, q_min, q_max, rounding)
    if bits < 8 and not signed and not exporting():
        # Training and Keras inference: one b-bit FakeQuant on [0, (2^b - 1) * 2^l] has
        # step 2^l and zero point 0, so it computes the same values and the same gradient
        # as the convertible form below (clip + 8-bit FakeQuant) with one op fewer.
        # (Signed tensors keep that form: the b-bit op's range has no exact zero point.)
        def low_bit_op(v, step):
            return tf.quantization.fake_quant_with_min_max_vars(v, 0.0, q_max * step, num_bits=bits)

        return _quantize(x, step, q_min, q_max, low_bit_op)
    if signed and bits >= 8:
        # The runtime clamps a signed activation to the storage's full range, so the
        # Keras model does too: [-2^(b-1), 2^(b-1) - 1] (b-bit values are clipped below).
        q_min = -q_max - 1

    def storage_op(v, step):
        b = bits
        if b < 8:
            # i4 activations do not convert; int8 storage with the b-bit clip does. Only a
            # MINIMUM (and for signed tensors a MAXIMUM) is added: the converter gives these
            # the FakeQuant's scale and keeps a preceding ReLU fused into its conv/add.
            v = tf.minimum(v, q_max * step)
            if signed:
                v = tf.maximum(v, q_min * step)
            b = 8
        lo, hi = integer_range(b, signed)
        if signed:
            lo = -hi - 1
        return tf.quantization.fake_quant_with_min_max_vars(v, lo * step, hi * step, num_bits=b)

    return _quantize(x, step, q_min, q_max, storage_op)


def _quantize(
    x: tf.Tensor, step: tf.Tensor, q_lo: int, q_hi: int, op: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
) -> tf.Tensor:
    """op(x, step), whose outermost clip is [q_lo, q_hi] x step: as traced for export, else straight-through.

    The converter sees the ops alone; training and Keras inference get the same values
    with the cheaper gradient of `_straight_through`.
    """
    if exporting():
        return op(x, step)
    return _straight_through(x, step, q_lo, q_hi, op)


class FixedPointQuantizer(tfmot.quantization.keras.quantizers.Quantizer):
    """Base class: config handling shared by the Q(b, l) quantizers.

    Subclasses take exactly the keys of `get_config()` as constructor arguments.
    """

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FixedPointQuantizer:
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def _exponent_variable(self, layer, name: str, initial: float, aggregation) -> tf.Variable:
        init = keras.initializers.Constant(float(initial))
        return layer.add_weight(
            f"{name}_exponent", shape=(), dtype=tf.float32, initializer=init, trainable=False, aggregation=aggregation
        )


@register
class WeightQuantizer(FixedPointQuantizer):
    """Signed Q(b, l) for weight tensors, with l recomputed at every training step.

    In training, l = ceil(log2(k * sigma(w) / (2^(b-1) - 1))) is computed from the
    current weights and stored in a non-trainable variable; inference and export
    use the stored value (from the last training step, or from
    `faq_tf.introspect.initialize_weight_exponents`, which `quantize_model` calls).

    Args:
      bits: b, in [2, 16].
      clip_sigmas: k; None picks `default_clip_sigmas(bits)`.
      per_channel: emit the per-channel FakeQuant op (same l on every channel). Conv
        kernels need it so the converter folds BatchNorm exactly; Dense kernels must
        not use it (the converter transposes them and rejects per-axis scales).
    """

    def __init__(self, bits: int = 8, clip_sigmas: float | None = None, per_channel: bool = True):
        self.bits = check_bits(bits)
        if clip_sigmas is None:
            clip_sigmas = default_clip_sigmas(bits)
        if not (isinstance(clip_sigmas, (int, float)) and 0 < clip_sigmas < 1e3):
            raise ValueError(f"clip_sigmas must be a positive number, got {clip_sigmas!r}")
        self.clip_sigmas = float(clip_sigmas)
        self.per_channel = bool(per_channel)

    def build(self, tensor_shape, name: str, layer) -> dict[str, tf.Variable]:
        # Every replica sees the same weights, so any replica's l is the l.
        var = self._exponent_variable(layer, name, 0.0, tf.VariableAggregation.ONLY_FIRST_REPLICA)
        return {"exponent": var}

    def __call__(self, inputs, training, weights, **kwargs):
        var = weights["exponent"]
        if training:
            exponent = weight_exponent(inputs, self.bits, self.clip_sigmas)
            with tf.control_dependencies([var.assign(exponent)]):
                exponent = tf.identity(exponent)
        else:
            exponent = var
            if not tf.is_tensor(training):
                inputs = _on_grid(inputs, self.bits, exponent)
        return fake_quant(inputs, self.bits, exponent, signed=True, per_channel=self.per_channel, weight=True)

    def get_config(self) -> dict[str, Any]:
        return {"bits": self.bits, "clip_sigmas": self.clip_sigmas, "per_channel": self.per_channel}


@register
class ActivationQuantizer(FixedPointQuantizer):
    """Q(b, l) for activations, with l fixed after calibration.

    Args:
      bits: b, in [2, 16].
      signed: False for ReLU outputs; True for tensors that can be negative
        (residual branches, linear bottlenecks, logits, a normalized input).
      exponent: the initial l. Calibration overwrites the stored variable; None picks
        the uncalibrated control value of section 3.2 (`control_exponent`).
      rounding: the tie rule of the integer op that produces this tensor
        (a `Rounding` or its value), applied at inference; training always rounds ties up.
    """

    def __init__(
        self,
        bits: int = 8,
        signed: bool = False,
        exponent: int | None = None,
        rounding: Rounding | str = Rounding.HALF_UP,
    ):
        self.bits = check_bits(bits)
        self.signed = bool(signed)
        if exponent is None:
            exponent = control_exponent(self.bits, self.signed)
        self.exponent = check_exponent(exponent)
        self.rounding = _as_rounding(rounding)
        # The integer arithmetic of another deployment target (`faq_tf.targets.set_target`);
        # None: XNNPACK's single rounding with `rounding`. Not part of the config.
        self.requantization = None

    def build(self, tensor_shape, name: str, layer) -> dict[str, tf.Variable]:
        var = self._exponent_variable(layer, name, self.exponent, tf.VariableAggregation.ONLY_FIRST_REPLICA)
        return {"exponent": var}

    def levels(self) -> tuple[int, int]:
        """The stored levels (q_min, q_max): X with Q(x) = X * 2^l, as the integer model clamps them."""
        if not self.signed:
            return integer_range(self.bits, False)
        _, q_max = integer_range(self.bits, True)
        return (-q_max - 1 if self.bits >= 8 else -q_max), q_max

    def __call__(self, inputs, training, weights, **kwargs):
        exact_ties = not tf.is_tensor(training) and not training and not exporting()
        if exact_ties and self.requantization is not None:
            with tf.control_dependencies(self.requantization.check_exponent(weights["exponent"])):
                step = tf.pow(tf.constant(2.0), tf.cast(weights["exponent"], tf.float32))
            return self.requantization(inputs, step, *self.levels())
        rounding = self.rounding if exact_ties else Rounding.HALF_UP
        return fake_quant(inputs, self.bits, weights["exponent"], signed=self.signed, rounding=rounding)

    def get_config(self) -> dict[str, Any]:
        return {"bits": self.bits, "signed": self.signed, "exponent": self.exponent, "rounding": self.rounding.value}


@register
class FixedExponentQuantizer(FixedPointQuantizer):
    """Q(b, l) with a constant l: biases (32 bits), softmax outputs (8 bits, l = -8).

    Args:
      bits: b, in [2, 32]. Above 16 bits only for constants (biases).
      exponent: l.
      signed: symmetric signed range if True.
      constant: True for parameters (biases) that the converter folds; False for
        activation tensors (a FakeQuant op then marks the tensor's scale).
    """

    def __init__(self, bits: int = 32, exponent: int = -16, signed: bool = True, constant: bool = True):
        self.bits = check_bits(bits, maximum=MAX_CONSTANT_BITS)
        self.exponent = check_exponent(exponent)
        self.signed = bool(signed)
        self.constant = bool(constant)
        if bits > MAX_BITS and not self.constant:
            raise ValueError(f"tensors above {MAX_BITS} bits must be constants, got bits={bits}")
        # Another target's arithmetic for a fixed-range output (`faq_tf.targets.set_target`:
        # TFLM's fixed-point softmax); None: FakeQuant of the float function. Not in the config.
        self.requantization = None

    def build(self, tensor_shape, name: str, layer) -> dict[str, tf.Variable]:
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        exact = not tf.is_tensor(training) and not training and not exporting()
        if exact and self.requantization is not None and not self.constant:
            return self.requantization(inputs) * 2.0**self.exponent
        return fake_quant(inputs, self.bits, float(self.exponent), self.signed, constant=self.constant)

    def get_config(self) -> dict[str, Any]:
        return {"bits": self.bits, "exponent": self.exponent, "signed": self.signed, "constant": self.constant}


@register
class BatchNormMultiplierQuantizer(FixedPointQuantizer):
    """Quantizes a BatchNormalization's multiplier gamma / sqrt(var + eps) to Q(b, l).

    Applied to `gamma`: returns gamma' = Q(gamma / s) * s with s = sqrt(moving_var + eps),
    so that at inference the layer multiplies by exactly Q(gamma / s), an 8-bit
    fixed-point constant (the paper: 8 bits, l = -b/2 = -4). The gradient reaches
    gamma straight through inside the range.

    Args:
      bits: b, in [2, 16].
      exponent: l.
    """

    def __init__(self, bits: int = 8, exponent: int = -4):
        self.bits = check_bits(bits)
        self.exponent = check_exponent(exponent)

    def build(self, tensor_shape, name: str, layer) -> dict[str, Any]:
        bn = getattr(layer, "layer", layer)  # the wrapper passes itself
        if not isinstance(bn, keras.layers.BatchNormalization):
            raise TypeError(
                f"BatchNormMultiplierQuantizer quantizes a BatchNormalization's gamma, "
                f"but was built for {type(bn).__name__} '{bn.name}'."
            )
        return {"moving_variance": bn.moving_variance, "epsilon": float(bn.epsilon)}

    def __call__(self, inputs, training, weights, **kwargs):
        sd = tf.sqrt(tf.stop_gradient(weights["moving_variance"]) + weights["epsilon"])
        multiplier = fake_quant(inputs / sd, self.bits, float(self.exponent), True, constant=True)
        return multiplier * sd

    def get_config(self) -> dict[str, Any]:
        return {"bits": self.bits, "exponent": self.exponent}
