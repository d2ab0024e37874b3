"""Activation range calibration (section 3.2).

N batches of training data (5 by default) run through the *unquantized* network.
For each quantized tensor, y_max is the maximum over batches of the P-th percentile
of |y| in the batch (P = 99.99 for 8-bit tensors and 99.9 below 8 bits), rounded
up to a power of two; that fixes l (`faq_tf.quantizers.exponent_for_range`).

The percentile is the nearest-rank one: the smallest value v such that at least
P% of the batch's values are <= v. It is computed inside the graph with `top_k`,
so no activation tensor is ever copied out of TensorFlow.

A tensor is signed when any calibration value is negative (ReLU outputs never are).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from faq_tf.compat import keras, tf
from faq_tf.quantizers import exponent_for_range

__all__ = [
    "DEFAULT_BATCHES",
    "DEFAULT_PERCENTILE_8BIT",
    "DEFAULT_PERCENTILE_LOW_BIT",
    "CalibrationError",
    "TensorRange",
    "default_percentile",
    "percentile_nearest_rank",
    "check_percentile",
    "collect_ranges",
    "as_batches",
]

DEFAULT_BATCHES = 5
DEFAULT_PERCENTILE_8BIT = 99.99
DEFAULT_PERCENTILE_LOW_BIT = 99.9


class CalibrationError(ValueError):
    """Raised for calibration data that cannot calibrate the model."""


@dataclasses.dataclass(frozen=True)
class TensorRange:
    """What calibration measured for one tensor.

    Attributes:
      y_max: max over batches of the P-th percentile of |y|.
      minimum: the smallest value seen (negative means the tensor is signed).
      percentile: P.
    """

    y_max: float
    minimum: float
    percentile: float

    @property
    def signed(self) -> bool:
        return self.minimum < 0.0

    def exponent(self, bits: int, signed: bool | None = None) -> int:
        """Returns l for this range at `bits`."""
        return exponent_for_range(self.y_max, bits, self.signed if signed is None else signed)


def default_percentile(
    bits: int, p8: float = DEFAULT_PERCENTILE_8BIT, plow: float = DEFAULT_PERCENTILE_LOW_BIT
) -> float:
    """Returns P for a tensor of `bits` bits (99.99 at 8 bits and up, 99.9 below).

    Args:
      bits: the tensor's bits.
      p8: P at 8 bits and more.
      plow: P below 8 bits.
    """
    return p8 if bits >= 8 else plow


def check_percentile(p: Any) -> float:
    """Checks a percentile P.

    Args:
      p: the candidate P.

    Returns:
      P as a float in (0, 100].

    Raises:
      ValueError: naming the value, for a bool, a non-number or a P out of range.
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {p!r}")
    return float(p)


def percentile_nearest_rank(x: tf.Tensor, percentile: float) -> tf.Tensor:
    """The nearest-rank P-th percentile of all values of `x`, via top_k.

    Args:
      x: any tensor; all its values count.
      percentile: P in (0, 100].

    Returns:
      A scalar tensor: the smallest value v of `x` with at least P% of the values <= v.
    """
    flat = tf.reshape(x, [-1])
    n = tf.size(flat, out_type=tf.int64)
    # The (1 - 1e-12) undoes float error such as 0.999 * 10000 = 9990.000000000002.
    exact = tf.cast(n, tf.float64) * (percentile / 100.0) * (1.0 - 1e-12)
    rank = tf.cast(tf.math.ceil(exact), tf.int64)
    rank = tf.clip_by_value(rank, 1, n)
    k = tf.cast(n - rank + 1, tf.int32)
    return tf.math.top_k(flat, k=k, sorted=True).values[-1]


def as_batches(data: Any, batch_size: int = 32) -> Iterable[np.ndarray | tf.Tensor]:
    """Yields input batches from a Dataset, an array, or an iterable of batches.

    A dataset or iterable may yield `x`, `(x, y)` or `(x, y, w)`; only `x` is used.
    A single array is split into batches of `batch_size` rows.

    Args:
      data: a tf.data.Dataset, an array or tensor, or an iterable of batches.
      batch_size: rows per batch when `data` is a single array.

    Yields:
      The input batches.

    Raises:
      CalibrationError: for a dict (a single batch of named inputs is not supported).
    """
    if isinstance(data, (np.ndarray, tf.Tensor)):
        for start in range(0, int(data.shape[0]), batch_size):
            yield data[start : start + batch_size]
        return
    if isinstance(data, Mapping):
        raise CalibrationError("calibration_data must yield input batches, not a dict")
    for item in data:
        if isinstance(item, (tuple, list)):
            item = item[0]
        yield item


def collect_ranges(
    model: keras.Model,
    tensors: Mapping[str, float],
    data: Any,
    num_batches: int = DEFAULT_BATCHES,
    batch_size: int = 32,
) -> dict[str, TensorRange]:
    """Measures the ranges of named layer outputs of an unquantized model.

    Args:
      model: a single-input model: the canonical float one, or a QAT model whose float
        outputs `faq_tf.outputs.quantize_float_outputs` calibrates.
      tensors: maps a layer name to the percentile P to use for its output. The name
        of an InputLayer means the network input.
      data: calibration batches (see `as_batches`).
      num_batches: N, how many batches to use.
      batch_size: rows per batch when `data` is a single array.

    Returns:
      The measured `TensorRange` per layer name.

    Raises:
      CalibrationError: for empty data, NaN/Inf values or inputs of the wrong shape.
    """
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches must be a positive integer, got {num_batches!r}")
    if len(model.inputs) != 1:
        raise CalibrationError(f"calibration supports single-input models; '{model.name}' has {len(model.inputs)}")
    names = list(tensors)
    percentiles = [check_percentile(tensors[n]) for n in names]
    taps = [model.get_layer(n).output for n in names]
    tap_model = keras.Model(model.inputs, taps)
    expected = tuple(model.inputs[0].shape[1:])

    @tf.function(reduce_retracing=True)
    def measure(x):
        outs = tap_model(x, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        ymax = [percentile_nearest_rank(tf.abs(o), p) for o, p in zip(outs, percentiles)]
        mins = [tf.reduce_min(o) for o in outs]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(o)) for o in outs])
        return ymax, mins, finite

    y_max = np.zeros(len(names))
    minimum = np.full(len(names), np.inf)
    seen = 0
    for i, batch in enumerate(as_batches(data, batch_size)):
        if seen >= num_batches:
            break
        batch = np.asarray(batch) if not isinstance(batch, tf.Tensor) else batch
        shape = tuple(batch.shape[1:])
        if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
            raise CalibrationError(
                f"calibration batch {i} has shape {tuple(batch.shape)}, but model "
                f"'{model.name}' expects (batch,) + {expected}."
            )
        if batch.shape[0] == 0:
            continue
        x = tf.cast(batch, model.inputs[0].dtype)
        if not bool(tf.reduce_all(tf.math.is_finite(x))):
            raise CalibrationError(f"calibration batch {i} contains NaN or Inf values.")
        ymax, mins, finite = measure(x)
        if not bool(finite):
            raise CalibrationError(
                f"calibration batch {i} produced NaN or Inf activations in '{model.name}': "
                "check the model's weights and the input preprocessing."
            )
        y_max = np.maximum(y_max, [float(v) for v in ymax])
        minimum = np.minimum(minimum, [float(v) for v in mins])
        seen += 1
    if seen == 0:
        raise CalibrationError(
            "calibration_data is empty: pass a tf.data.Dataset, an array or an iterable "
            "of input batches from the training set."
        )
    return {
        n: TensorRange(float(y), float(m) if math.isfinite(m) else 0.0, p)
        for n, y, m, p in zip(names, y_max, minimum, percentiles)
    }
