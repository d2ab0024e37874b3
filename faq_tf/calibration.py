"""Activation range calibration (section 3.2).

N batches of training data (5 by default) run through the *unquantized* network.
For each quantized tensor, y_max is the maximum over batches of the P-th percentile
of |y| in the batch (P = 99.99 for 8-bit tensors and 99.9 below 8 bits), rounded
up to a power of two; that fixes l (`faq_tf.quantizers.exponent_for_range`).

The percentile is the nearest-rank one: the smallest value v such that at least
P% of the batch's values are <= v. It is computed inside the graph with `top_k`,
so no activation tensor is ever copied out of TensorFlow.

A tensor is signed when any calibration value is negative (ReLU outputs never are).

Beyond the paper, `mse_exponents` picks a tensor's l instead as the power-of-two step whose
grid has the smallest squared error on the same batches (`--calibration_method_low_bit=mse`
for the tensors below 8 bits): among the percentile's l and its neighbours, the one that
best trades clipping against rounding for that tensor's distribution. `output_exponents`
(`--calibration_method_low_bit=output`) goes on from there with the quantized model itself:
it moves one tensor's l at a time while that brings the model's outputs closer to the fp32
model's, so each grid is judged by what its error does downstream, not by the error alone.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from absl import logging

from faq_tf.compat import keras, tf
from faq_tf.quantizers import MIN_EXPONENT, exponent_for_range

__all__ = [
    "CALIBRATION_METHODS",
    "DEFAULT_BATCHES",
    "DEFAULT_PERCENTILE_8BIT",
    "DEFAULT_PERCENTILE_LOW_BIT",
    "CalibrationError",
    "TensorRange",
    "default_percentile",
    "percentile_nearest_rank",
    "check_percentile",
    "collect_ranges",
    "mse_exponents",
    "output_exponents",
    "first_batches",
    "as_batches",
]

DEFAULT_BATCHES = 5
DEFAULT_PERCENTILE_8BIT = 99.99
DEFAULT_PERCENTILE_LOW_BIT = 99.9
# How each activation tensor's exponent is chosen: the paper's percentile, the least squared
# error of the tensor, or (starting from that) the least squared error of the model's outputs.
CALIBRATION_METHODS = ("percentile", "mse", "output")
# The exponents `mse_exponents` tries, relative to the percentile's: from 4x finer to 2x coarser.
MSE_SPAN = (-2, -1, 0, 1)


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
    names = list(tensors)
    percentiles = [check_percentile(tensors[n]) for n in names]
    tap_model = _tap_model(model, names)

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
    for i, x in _checked_batches(model, data, num_batches, batch_size):
        ymax, mins, finite = measure(x)
        if not bool(finite):
            raise CalibrationError(
                f"calibration batch {i} produced NaN or Inf activations in '{model.name}': "
                "check the model's weights and the input preprocessing."
            )
        y_max = np.maximum(y_max, [float(v) for v in ymax])
        minimum = np.minimum(minimum, [float(v) for v in mins])
    return {
        n: TensorRange(float(y), float(m) if math.isfinite(m) else 0.0, p)
        for n, y, m, p in zip(names, y_max, minimum, percentiles)
    }


def _check_num_batches(num_batches: Any) -> None:
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches must be a positive integer, got {num_batches!r}")


def _tap_model(model: keras.Model, names: list[str]) -> keras.Model:
    """A model with the outputs of the named layers of a single-input `model`."""
    if len(model.inputs) != 1:
        raise CalibrationError(f"calibration supports single-input models; '{model.name}' has {len(model.inputs)}")
    return keras.Model(model.inputs, [model.get_layer(n).output for n in names])


def _checked_batches(
    model: keras.Model, data: Any, num_batches: int, batch_size: int
) -> Iterable[tuple[int, tf.Tensor]]:
    """Yields (index, batch) for the first `num_batches` non-empty batches, checked for shape and NaN."""
    _check_num_batches(num_batches)
    expected = tuple(model.inputs[0].shape[1:])
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
        seen += 1
        yield i, x
    if seen == 0:
        raise CalibrationError(
            "calibration_data is empty: pass a tf.data.Dataset, an array or an iterable "
            "of input batches from the training set."
        )


def first_batches(data: Any, num_batches: int = DEFAULT_BATCHES, batch_size: int = 32) -> list:
    """The first `num_batches` non-empty input batches of `data` (see `as_batches`), as a list.

    For calibrating twice on the same batches: a generator is used up by one pass, and a
    shuffled Dataset yields other batches the next time.
    """
    _check_num_batches(num_batches)
    batches = []
    for batch in as_batches(data, batch_size):
        if len(batches) >= num_batches:
            break
        if batch.shape[0] != 0:
            batches.append(batch)
    return batches


def mse_exponents(
    model: keras.Model,
    grids: Mapping[str, tuple[int, int, int]],
    data: Any,
    num_batches: int = DEFAULT_BATCHES,
    batch_size: int = 32,
    span: tuple[int, ...] = MSE_SPAN,
) -> dict[str, int]:
    """Picks each tensor's exponent l as the one whose grid has the least squared error.

    For every named layer output y and every candidate l = start + d (d in `span`), the
    error is the sum over the calibration batches of (2^l * clip(round(y / 2^l), q_min,
    q_max) - y)^2, on the levels the tensor is stored with. A coarser l clips less and rounds
    more. Of equal errors the larger l wins.

    Args:
      model: the single-input model `collect_ranges` measured (the same batches belong here).
      grids: maps a layer name to (q_min, q_max, start): the stored levels and the exponent
        to search around (the percentile's, `TensorRange.exponent`).
      data: calibration batches (see `as_batches`).
      num_batches: N, how many batches to use.
      batch_size: rows per batch when `data` is a single array.
      span: the offsets d tried (l is kept at MIN_EXPONENT or above).

    Returns:
      The chosen l per layer name.

    Raises:
      CalibrationError: for empty data, NaN/Inf inputs or inputs of the wrong shape.
    """
    names = list(grids)
    if not names:
        return {}
    tap_model = _tap_model(model, names)
    candidates = {n: [max(grids[n][2] + d, MIN_EXPONENT) for d in span] for n in names}
    levels = [(float(grids[n][0]), float(grids[n][1])) for n in names]
    steps = [tf.constant(np.exp2(candidates[n]), tf.float32) for n in names]

    @tf.function(reduce_retracing=True)
    def errors(x):
        outs = tap_model(x, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        result = []
        for y, (q_min, q_max), step in zip(outs, levels, steps):
            y = tf.reshape(tf.cast(y, tf.float32), [1, -1])
            s = step[:, None]
            q = tf.clip_by_value(tf.math.floor(y / s + 0.5), q_min, q_max) * s  # HALF_UP, as training
            result.append(tf.reduce_sum(tf.cast(q - y, tf.float64) ** 2, axis=1))
        return result

    total = np.zeros((len(names), len(span)))
    for _, x in _checked_batches(model, data, num_batches, batch_size):
        total += np.stack([e.numpy() for e in errors(x)])
    chosen = {}
    for n, row in zip(names, total):
        ls = candidates[n]
        best = max(range(len(ls)), key=lambda k: (-row[k], ls[k]))  # least error, then the larger l
        chosen[n] = int(ls[best])
    return chosen


def output_exponents(
    model: keras.Model,
    reference: keras.Model,
    exponents: Mapping[str, tf.Variable],
    data: Any,
    num_batches: int = DEFAULT_BATCHES,
    batch_size: int = 32,
    max_sweeps: int = 3,
) -> dict[str, int]:
    """Moves each tensor's l to the neighbour that brings the quantized outputs closest to fp32's.

    The error is the sum over the calibration batches of (model(x) - reference(x))^2 over
    every output, both at inference. In model order, each named tensor tries l - 1 and
    l + 1 with every other l as it stands, and keeps whichever of the three has the least
    error (the current one on a tie, l - 1 when both neighbours tie below it); sweeps repeat
    until none moves, at most `max_sweeps`. No labels are needed: the fp32 model's outputs
    are the target. The inference pass must be deterministic for the search to be.

    Args:
      model: the quantized model (`faq_tf.quantize_model`'s, before fine-tuning).
      reference: the fp32 model it was made from, taking the same inputs.
      exponents: maps a tensor's name to the variable holding its l in `model`; the
        variables (and so `model`) are left at the chosen values.
      data: calibration batches (see `as_batches`).
      num_batches: N, how many batches to use.
      batch_size: rows per batch when `data` is a single array.
      max_sweeps: the most passes over `exponents`.

    Returns:
      The chosen l per name.

    Raises:
      CalibrationError: for empty data, NaN/Inf inputs or inputs of the wrong shape, or
        models whose outputs differ in number or shape.
      ValueError: if `max_sweeps` < 1.
    """
    if max_sweeps < 1:
        raise ValueError(f"max_sweeps must be >= 1, got {max_sweeps}")
    if model.output_shape != reference.output_shape:
        raise CalibrationError(
            f"the quantized model's outputs {model.output_shape} are not the fp32 model's "
            f"{reference.output_shape}: pass the model it was quantized from"
        )
    batches = [x for _, x in _checked_batches(reference, data, num_batches, batch_size)]
    targets = [[tf.cast(t, tf.float64) for t in tf.nest.flatten(reference(x, training=False))] for x in batches]
    forward = tf.function(lambda x: tf.nest.flatten(model(x, training=False)), reduce_retracing=True)

    def error() -> float:
        total = 0.0
        for x, target in zip(batches, targets):
            for out, t in zip(forward(x), target):
                total += float(tf.reduce_sum(tf.square(tf.cast(out, tf.float64) - t)))
        return total

    start, best, passes = time.perf_counter(), error(), 1
    initial = {name: int(v.numpy()) for name, v in exponents.items()}
    for _ in range(max_sweeps):
        moved = False
        for variable in exponents.values():
            current = int(variable.numpy())
            choice = current
            for candidate in (current - 1, current + 1):
                if candidate < MIN_EXPONENT:
                    continue
                variable.assign(float(candidate))
                e, passes = error(), passes + 1
                if e < best:
                    best, choice = e, candidate
            variable.assign(float(choice))
            moved = moved or choice != current
        if not moved:
            break
    chosen = {name: int(v.numpy()) for name, v in exponents.items()}
    logging.info(
        "output calibration: %d of %d grids moved (%s), %d passes over %d batches in %.1f s",
        sum(chosen[n] != initial[n] for n in chosen),
        len(chosen),
        ", ".join(f"{n} {initial[n]} -> {chosen[n]}" for n in chosen if chosen[n] != initial[n]) or "none",
        passes,
        len(batches),
        time.perf_counter() - start,
    )
    return chosen
