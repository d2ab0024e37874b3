"""Putting biases on the integer accumulator grid, so Keras computes what the integer model does.

An integer runtime adds a layer's bias to its int32 accumulator, so the bias is stored in
units of the accumulator's scale, s_in * s_w (times the BN multiplier m_c where a
BatchNormalization is folded into the conv). The TFLite converter rounds each bias to
that grid. A bias trained on a finer grid (faq_tf's 32-bit biases use 2^-16) then moves
by up to half an accumulator step on export, and a few activations near a rounding
boundary land one step off in the integer model.

`snap_to_accumulator_grid(model)` moves every folded bias onto its grid in the Keras
model itself: conv/dense biases, and the offset beta - mean * m_c (+ conv bias * m_c) of a
BatchNormalization that follows a conv. Each value moves by at most half an accumulator
step where that grid is coarser than the bias's own 2^-16 grid, and by a few of the finer
steps otherwise (`SnapReport.max_shift_steps`); afterwards the Keras model and the
integer model add the same biases. Such a BN is also rewritten to the same function in
a form that float32 computes exactly: moving mean 0, moving variance 1 - eps (so that
sqrt(var + eps) is exactly 1), gamma = the 8-bit multiplier m_c, beta = the snapped
offset, conv bias 0. With `faq_tf.layers.BatchNormWrapper` the
Keras model then computes every pre-activation exactly, as the integer model does,
and the two round the same ties (`faq_tf.quantizers.Rounding`).

Accuracy moves a little, in either direction, which is why `faq-train` evaluates again
after snapping: it applies the snap before its final evaluation and save. (The `make demo`
runs measure top-1 on the test images before and after the snap; results in
docs/results.md.) `export_tflite.convert` applies it before converting.

Example:

  report = snap_to_accumulator_grid(qat_model)   # report.moved, report.max_shift_steps
"""

from __future__ import annotations

import dataclasses

import numpy as np

from faq_tf import graph, introspect, registry
from faq_tf.compat import keras, tfmot
from faq_tf.layers import BatchNormWrapper, QuantizeInput
from faq_tf.quantizers import BatchNormMultiplierQuantizer, FixedExponentQuantizer, WeightQuantizer
from faq_tf.registry import OutputKind

__all__ = ["SnapReport", "snap_to_accumulator_grid", "input_exponent", "output_exponent"]

_Wrapper = tfmot.quantization.keras.QuantizeWrapperV2
_WEIGHT_LAYERS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


@dataclasses.dataclass
class SnapReport:
    """What `snap_to_accumulator_grid` changed.

    Attributes:
      layers: names of the layers whose bias or BN offset was snapped.
      moved: number of bias/offset values that changed.
      max_shift_steps: the largest change, in accumulator steps: at most 0.5 where the
        accumulator grid is coarser than beta's 2^-16 grid; where it is finer the offset
        goes to a multiple of both, up to 127 * 2^-17 away (a few accumulator steps, and
        a few percent of an 8-bit activation step at most).
      rewritten: BatchNormalization layers rewritten to mean 0, variance + eps = 1,
        gamma = the 8-bit multiplier (the same function, now computed exactly).
    """

    layers: list[str] = dataclasses.field(default_factory=list)
    moved: int = 0
    max_shift_steps: float = 0.0
    rewritten: list[str] = dataclasses.field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether the model's weights changed."""
        return bool(self.moved or self.rewritten)


def output_exponent(g: graph.Graph, name: str) -> int | None:
    """l of the quantized tensor that layer `name` outputs: its own quantizer's, or through
    pass-through layers (padding, reshapes, dropout) its input's; None if it is float.

    Args:
      g: the layer graph of a faq_tf QAT model (`faq_tf.graph.model_graph`).
      name: a layer of `g`.
    """
    seen = set()
    while name not in seen:
        seen.add(name)
        layer = g.layers[name]
        if isinstance(layer, QuantizeInput):
            found = [qt for qt in introspect.quantized_tensors_of(layer) if qt.tensor == "input"]
            return found[0].exponent if found else None
        if isinstance(layer, _Wrapper):
            outs = [qt for qt in introspect.quantized_tensors_of(layer) if qt.tensor == "output"]
            if outs:
                return outs[0].exponent
            layer = layer.layer
        # Only layers the registry marks as pass-through keep their input's scale.
        if not registry.supports(layer) or registry.get_layer_info(layer).output is not OutputKind.PASSTHROUGH:
            return None
        producers = g.producers[name]
        if len(producers) != 1:
            return None
        name = producers[0]
    return None


def input_exponent(g: graph.Graph, name: str) -> int | None:
    """l of the quantized tensor feeding layer `name` (one input; see `output_exponent`).

    Args:
      g: the layer graph of a faq_tf QAT model.
      name: a layer of `g` with one producer.
    """
    producers = g.producers[name]
    return output_exponent(g, producers[0]) if len(producers) == 1 else None


def _by_attr(layer) -> dict:
    return {qt.tensor: qt for qt in introspect.quantized_tensors_of(layer)}


def _q(x: np.ndarray, step: float, q_max: float) -> np.ndarray:
    """Q with round-half-up, as the Keras quantizers compute it (float32)."""
    x = np.clip(x.astype(np.float32), np.float32(-q_max * step), np.float32(q_max * step))
    return (np.floor(x / np.float32(step) + np.float32(0.5)) * np.float32(step)).astype(np.float32)


def _bias_step(bias_qt) -> tuple[float, float] | None:
    q = bias_qt.quantizer if bias_qt is not None else None
    if isinstance(q, FixedExponentQuantizer):
        return 2.0**q.exponent, 2.0 ** (q.bits - 1) - 1
    return None


def snap_to_accumulator_grid(model: keras.Model) -> SnapReport:
    """Moves every foldable bias of a faq_tf QAT model onto its int32 accumulator grid.

    Args:
      model: a QAT model from `faq_tf.quantize_model` (calibrated, or loaded from disk).
        Its weights are changed in place.

    Returns:
      A `SnapReport`; `moved == 0` when the model was already on the grid.
    """
    g = graph.model_graph(model)
    report = SnapReport()
    for name, layer in g.layers.items():
        if isinstance(layer, BatchNormWrapper) and layer.standalone:
            l_in = input_exponent(g, name)
            if l_in is not None:  # exported as a 1x1 depthwise conv: accumulator unit s_in * 2^l_m
                moved, shift, rewritten = _snap_batch_norm(layer, None, 2.0**l_in, folded=False)
                _record(report, layer.layer.name, moved, shift, rewritten)
            continue
        if not isinstance(layer, _Wrapper) or not isinstance(layer.layer, _WEIGHT_LAYERS):
            continue
        tensors = _by_attr(layer)
        kernel = next((qt for qt in tensors.values() if isinstance(qt.quantizer, WeightQuantizer)), None)
        l_in = input_exponent(g, name)
        if kernel is None or kernel.exponent is None or l_in is None:
            continue
        step = 2.0 ** (l_in + kernel.exponent)
        consumers = g.consumers[name]
        bn_layer = g.layers[consumers[0]] if len(consumers) == 1 else None
        if (
            isinstance(bn_layer, _Wrapper)
            and isinstance(bn_layer.layer, keras.layers.BatchNormalization)
            and isinstance(layer.layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
        ):
            moved, shift, rewritten = _snap_batch_norm(bn_layer, tensors.get("bias"), step)
            _record(report, bn_layer.layer.name, moved, shift, rewritten)
        else:
            moved, shift = _snap_bias(layer, tensors.get("bias"), step)
            _record(report, layer.layer.name, moved, shift, False)
    return report


def _record(report: SnapReport, name: str, moved: int, shift: float, rewritten: bool) -> None:
    if rewritten:
        report.rewritten.append(name)
    if moved:
        report.layers.append(name)
        report.moved += moved
        report.max_shift_steps = max(report.max_shift_steps, shift)


def _snap_bias(layer, bias_qt, step: float) -> tuple[int, float]:
    grid = _bias_step(bias_qt)
    if bias_qt is None or grid is None or step <= grid[0]:
        return 0, 0.0  # the accumulator step divides the trained grid: already exact
    b = _q(bias_qt.weight.numpy(), *grid)
    snapped = _q(b, step, 2.0**31 - 1)
    changed = int(np.sum(snapped != b))
    if changed:
        bias_qt.weight.assign(snapped.astype(bias_qt.weight.dtype.as_numpy_dtype))
    return changed, float(np.max(np.abs(snapped - b)) / step) if changed else 0.0


def _snap_batch_norm(bn_layer, conv_bias_qt, step: float, folded: bool = True) -> tuple[int, float, bool]:
    """Rewrites a BN as y = x * m + c with m, c exact (see the module docstring).

    `step` is s_in * s_w for a BN folded into the conv before it (the runtime's grid is
    then step * |m| per channel), s_in for a standalone one (exported as a depthwise conv
    with kernel scale 2^l_m, so the grid is s_in * 2^l_m).
    """
    bn = bn_layer.layer
    tensors = _by_attr(bn_layer)
    gamma_qt, beta_qt = tensors.get("gamma"), tensors.get("beta")
    if gamma_qt is None or beta_qt is None or not isinstance(gamma_qt.quantizer, BatchNormMultiplierQuantizer):
        return 0, 0.0, False
    beta_grid = _bias_step(beta_qt)
    if beta_grid is None:
        return 0, 0.0, False
    var = bn.moving_variance.numpy().astype(np.float32)
    sd = np.sqrt(var + np.float32(bn.epsilon))
    mq = gamma_qt.quantizer
    m_step = 2.0**mq.exponent
    m = _q(gamma_qt.weight.numpy() / sd, m_step, 2.0 ** (mq.bits - 1) - 1)
    mean = bn.moving_mean.numpy().astype(np.float64)
    conv_bias = np.zeros_like(mean)
    if conv_bias_qt is not None and _bias_step(conv_bias_qt) is not None:
        conv_bias = _q(conv_bias_qt.weight.numpy(), *_bias_step(conv_bias_qt)).astype(np.float64)
    beta = _q(beta_qt.weight.numpy(), *beta_grid).astype(np.float64)
    total = beta + (conv_bias - mean) * m.astype(np.float64)
    # The runtime's grid for this channel is step * |m|; beta's own quantizer keeps it on
    # beta_grid too, so the offset goes to the nearest multiple of both.
    n = np.rint(np.abs(m) / m_step).astype(np.int64)
    if folded:
        grid = np.array([_common_multiple(step * m_step, int(k), beta_grid[0]) for k in n])
    else:
        grid = np.where(n > 0, max(step * m_step, beta_grid[0]), beta_grid[0])
    snapped = np.where(n > 0, np.floor(total / grid + 0.5) * grid, beta)
    new_beta = _q(snapped, *beta_grid)
    one_minus_eps = _variance_for_unit_sd(float(bn.epsilon))
    canonical = (
        np.all(mean == 0)
        and np.all(var == one_minus_eps)
        and np.all(gamma_qt.weight.numpy() == m)
        and np.all(beta == new_beta)
        and not np.any(conv_bias)
    )
    if canonical:
        return 0, 0.0, False
    runtime_steps = np.where(n > 0, step * (np.abs(m) if folded else m_step), 1.0)
    shift = np.abs(new_beta - total) / runtime_steps
    bn.moving_mean.assign(np.zeros_like(var))
    bn.moving_variance.assign(np.full_like(var, one_minus_eps))
    gamma_qt.weight.assign(m)
    beta_qt.weight.assign(new_beta.astype(np.float32))
    if conv_bias_qt is not None:
        conv_bias_qt.weight.assign(np.zeros(conv_bias_qt.weight.shape, conv_bias_qt.weight.dtype.as_numpy_dtype))
    return int(np.sum(new_beta != beta)), float(np.max(shift)), True


def _common_multiple(unit: float, k: int, grid: float) -> float:
    """The least common multiple of k * unit and grid, where unit and grid are powers of two."""
    if k == 0:
        return grid
    while k % 2 == 0:
        k //= 2
        unit *= 2
    return k * max(unit, grid)


def _variance_for_unit_sd(epsilon: float) -> np.float32:
    """A float32 variance v with float32(v + epsilon) == 1 exactly, so that sqrt/rsqrt give 1."""
    eps = np.float32(epsilon)
    v = np.float32(1) - eps
    for _ in range(8):
        total = v + eps
        if total == np.float32(1):
            return v
        v = np.nextafter(v, np.float32(0) if total > 1 else np.float32(2), dtype=np.float32)
    raise ValueError(f"no float32 variance gives variance + {epsilon} == 1")
