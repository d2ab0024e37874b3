"""gemmlowp's fixed-point arithmetic, as TFLite's reference kernels (TFLM) compute it, in TensorFlow ops.

Values are int32 held in int64 tensors; `wrap` gives an int32 sum's wrap-around. The
functions follow gemmlowp's `fixedpoint.h` operation for operation (a product of two
FixedPoint values is `srdhm` of their raw values), so that `faq_tf.targets` reproduces
TFLM's int8 SOFTMAX bit for bit:

* `srdhm`: SaturatingRoundingDoublingHighMul, (a * b + nudge) / 2^31 truncated;
* `rdbpot`: RoundingDivideByPOT, x / 2^e with ties away from zero;
* `saturating_shl`: SaturatingRoundingMultiplyByPOT for a positive exponent;
* `exp_on_negative_values`: exp(a) of a Q5.26 value in Q0.31;
* `one_over_one_plus_x`: 1 / (1 + x) for x in [0, 1) in Q0.31.
"""

from __future__ import annotations

from faq_tf.compat import tf

__all__ = ["INT32_MAX", "wrap", "srdhm", "rdbpot", "saturating_shl", "exp_on_negative_values", "one_over_one_plus_x"]

INT32_MAX = 2**31 - 1


def wrap(x: tf.Tensor) -> tf.Tensor:
    """int32 wrap-around of an int64 tensor (gemmlowp adds raw int32 values)."""
    return tf.math.floormod(x + 2**31, 2**32) - 2**31


def srdhm(a: tf.Tensor, b) -> tf.Tensor:
    """SaturatingRoundingDoublingHighMul: (a * b + nudge) / 2^31 truncated, nudge 2^30 or 1 - 2^30."""
    ab = a * b
    s = ab + tf.where(ab >= 0, tf.constant(2**30, tf.int64), tf.constant(1 - 2**30, tf.int64))
    return tf.where(s >= 0, tf.math.floordiv(s, 2**31), -tf.math.floordiv(-s, 2**31))


def rdbpot(x: tf.Tensor, e) -> tf.Tensor:
    """RoundingDivideByPOT: x / 2^e, ties away from zero."""
    e = tf.cast(e, tf.int64)
    mask = tf.bitwise.left_shift(tf.constant(1, tf.int64), e) - 1
    threshold = tf.bitwise.right_shift(mask, 1) + tf.cast(x < 0, tf.int64)
    return tf.bitwise.right_shift(x, e) + tf.cast(tf.bitwise.bitwise_and(x, mask) > threshold, tf.int64)


def saturating_shl(x: tf.Tensor, e: int) -> tf.Tensor:
    """SaturatingRoundingMultiplyByPOT<e> for e > 0: x * 2^e, saturated to int32."""
    threshold = 2 ** (31 - e) - 1
    top, bottom = tf.constant(INT32_MAX, tf.int64), tf.constant(-(2**31), tf.int64)
    return tf.where(x > threshold, top, tf.where(x < -threshold, bottom, x * 2**e))


def exp_on_negative_values(a: tf.Tensor) -> tf.Tensor:
    """gemmlowp's exp_on_negative_values for Q5.26 inputs: exp(a) in Q0.31."""
    amq = wrap(tf.bitwise.bitwise_and(a, 2**24 - 1) - 2**24)  # a mod 1/4, minus 1/4
    x = wrap(saturating_shl(amq, 5) + 2**28)  # into Q0.31 (Rescale<0>), plus 1/8
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    t = rdbpot(wrap(srdhm(wrap(rdbpot(x4, 2) + x3), 715827883) + x2), 1)
    result = wrap(1895147668 + srdhm(tf.constant(1895147668, tf.int64), wrap(x + t)))
    remainder = wrap(amq - a)
    barrel = [(-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401), (4, 242)]
    for exponent, multiplier in barrel:
        bit = tf.not_equal(tf.bitwise.bitwise_and(remainder, 2 ** (26 + exponent)), 0)
        result = tf.where(bit, srdhm(result, multiplier), result)
    return tf.where(tf.equal(a, 0), tf.constant(INT32_MAX, tf.int64), result)


def one_over_one_plus_x(a: tf.Tensor) -> tf.Tensor:
    """gemmlowp's one_over_one_plus_x_for_x_in_0_1 (Q0.31 in and out): Newton-Raphson, three steps."""
    total = a + INT32_MAX
    half = tf.where(total >= 0, total + 1, total - 1)
    half = tf.where(half >= 0, tf.math.floordiv(half, 2), -tf.math.floordiv(-half, 2))  # RoundingHalfSum
    x = wrap(1515870810 + srdhm(half, -1010580540))
    for _ in range(3):
        x = wrap(x + saturating_shl(srdhm(x, wrap(2**29 - srdhm(half, x))), 2))
    return saturating_shl(x, 1)
