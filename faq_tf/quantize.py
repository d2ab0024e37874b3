"""`quantize_model`: a pretrained fp32 Keras model in, a FAQ quantization-aware model out.

Steps: canonicalize the graph (`faq_tf.graph`), resolve the precision policy
(`faq_tf.policy.plan_model`), calibrate activation ranges on the unquantized network
(`faq_tf.calibration`), share the scales the converter shares
(`faq_tf.policy.share_runtime_scales`), then rebuild the model: each layer with something
to quantize is wrapped in a tfmot `QuantizeWrapperV2` (`BatchNormWrapper` for a
BatchNormalization) holding its `FaqQuantizeConfig`, the network input gets a
`QuantizeInput`, and skipped or unquantized layers stay as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faq_tf import calibration, graph, policy, registry
from faq_tf.compat import keras, tfmot
from faq_tf.input_scaling import InputScaling, fold_input_scaling
from faq_tf.introspect import initialize_weight_exponents, precision_summary, quantized_tensors
from faq_tf.keras3 import as_tf_keras
from faq_tf.layers import BatchNormWrapper, QuantizeInput
from faq_tf.policy import Role
from faq_tf.quantizers import ActivationQuantizer, control_exponent, exponent_for_range
from faq_tf.registry import ActivationKind, OutputKind
from faq_tf.saving import quantize_scope

_Wrapper = tfmot.quantization.keras.QuantizeWrapperV2

__all__ = ["quantize_model"]

_PIXEL_MAX = 255.0  # the largest uint8 pixel


def _nonnegative(g: graph.Graph) -> dict[str, bool]:
    """Static sign analysis for the uncalibrated control mode."""
    result: dict[str, bool] = {}
    for name, layer in g.layers.items():
        ins = [result[p] for p in g.producers[name]]
        try:
            info = registry.get_layer_info(layer)
        except registry.UnsupportedLayerError:
            result[name] = False
            continue
        if info.output is OutputKind.ACTIVATION:
            kind = registry.activation_kind(layer)
            if kind is ActivationKind.FIXED:
                result[name] = registry.activation_function_name(layer) in ("softmax", "sigmoid")
            else:  # a ReLU output is nonnegative; a linear activation keeps its input's sign
                result[name] = kind is ActivationKind.RELU or all(ins)
        elif info.output is OutputKind.PASSTHROUGH or type(layer) in (
            keras.layers.Concatenate,
            keras.layers.AveragePooling2D,
            keras.layers.MaxPooling2D,
            keras.layers.GlobalAveragePooling2D,
            keras.layers.Add,
        ):
            result[name] = bool(ins) and all(ins)
        else:
            result[name] = False
    return result


def quantize_model(
    model: keras.Model,
    precision: str | policy.Precision = "w4a4",
    calibration_data: Any = None,
    *,
    calibrate: bool = True,
    calibration_batches: int = calibration.DEFAULT_BATCHES,
    percentile_8bit: float = calibration.DEFAULT_PERCENTILE_8BIT,
    percentile_low_bit: float = calibration.DEFAULT_PERCENTILE_LOW_BIT,
    method_low_bit: str = "percentile",
    batch_size: int = 32,
    layer_overrides: Mapping[str, Any] | None = None,
    weight_clip_sigmas: float | None = None,
    fold_input: bool = True,
    verbose: bool = True,
) -> keras.Model:
    """Quantizes a pretrained fp32 model for FAQ fine-tuning.

    Args:
      model: a functional or Sequential model, tf_keras or Keras 3 (converted with
        `faq_tf.from_keras3`); nested models are flattened.
      precision: "w8a8", "w4a4", any "w<b>a<b>", a `Precision`, or "fp32" (returns the
        canonical float model, for baselines).
      calibration_data: training batches for calibration: a tf.data.Dataset (of x or
        (x, y)), an array, or an iterable of arrays.
      calibrate: False gives the random-init control of section 3.2 (no calibration,
        y_max = 2^(b/2) - 1); `calibration_data` is then not needed.
      calibration_batches: N, the number of batches (paper: 5).
      percentile_8bit: P for tensors of 8 bits and more (paper: 99.99).
      percentile_low_bit: P for tensors below 8 bits (paper: 99.9).
      method_low_bit: how tensors below 8 bits get their l: "percentile" (the paper),
        "mse", the power-of-two grid with the least squared error on the calibration
        batches, searched around the percentile's (`calibration.mse_exponents`), or
        "output": from mse's grids, each output tensor's l moved while that brings the
        quantized model's outputs closer to the fp32 model's (`calibration.output_exponents`).
      batch_size: rows per calibration batch when `calibration_data` is an array.
      layer_overrides: layer name or regex -> "skip", "w8", "a4", "w4a8" or a dict.
      weight_clip_sigmas: k for every weight quantizer; None uses the per-bit default.
      fold_input: fold a Rescaling / Normalization at the input into the first layers
        (`faq_tf.input_scaling`), so the integer model takes pixels; False keeps them as
        quantized layers (the integer export then refuses them).
      verbose: print the per-layer precision summary (`precision_summary`).

    Returns:
      A new QAT model (the input model is not modified).

    Raises:
      UnsupportedLayerError: for a layer that cannot be quantized (names it).
      CalibrationError: for unusable calibration data.
      ValueError: for a bad precision, override or percentile.
      Keras3ConversionError: for a Keras 3 model with a layer that has no tf_keras twin.
      TypeError: for a subclassed model.
    """
    parsed = policy.parse_precision(precision)
    for p in (percentile_8bit, percentile_low_bit):
        calibration.check_percentile(p)
    if method_low_bit not in calibration.CALIBRATION_METHODS:
        raise ValueError(
            f"method_low_bit must be one of {', '.join(calibration.CALIBRATION_METHODS)}, got {method_low_bit!r}"
        )
    if calibrate and parsed is not None and calibration_data is None:
        raise ValueError(
            "calibration_data is required to calibrate activation ranges (section 3.2): pass "
            "a few batches of training data, or calibrate=False for the uncalibrated control."
        )
    canonical = graph.canonicalize(as_tf_keras(model, verbose=verbose))
    if parsed is None:
        return canonical
    scaling = None
    if fold_input:
        canonical, scaling = fold_input_scaling(canonical)
        if scaling is not None and verbose:
            print(f"faq_tf: {scaling.describe()}; the model now takes pixels")
    plans = policy.plan_model(canonical, parsed, layer_overrides)
    g = graph.model_graph(canonical)
    quantized = {n: p for n, p in plans.items() if p.activation_bits is not None and p.role is not Role.FIXED}

    if calibrate:
        if method_low_bit != "percentile":  # more passes over the same batches
            calibration_data = calibration.first_batches(calibration_data, calibration_batches, batch_size)
        wanted = {
            n: calibration.default_percentile(p.activation_bits, percentile_8bit, percentile_low_bit)
            for n, p in quantized.items()
        }
        ranges = calibration.collect_ranges(canonical, wanted, calibration_data, calibration_batches, batch_size)
        for n, p in quantized.items():
            p.signed = ranges[n].signed and p.role is not Role.RELU
            p.exponent = ranges[n].exponent(p.activation_bits, p.signed)
        if method_low_bit != "percentile":
            grids = {
                n: (*ActivationQuantizer(p.activation_bits, p.signed).levels(), p.exponent)
                for n, p in quantized.items()
                if p.activation_bits < 8
            }
            chosen = calibration.mse_exponents(canonical, grids, calibration_data, calibration_batches, batch_size)
            for n, exponent in chosen.items():
                quantized[n].exponent = exponent
        for p in quantized.values():
            if scaling is not None and p.role is Role.INPUT and not p.signed:
                # Pixels: at least [0, 255] with step 1, so every uint8 pixel is stored as is.
                p.exponent = max(p.exponent, exponent_for_range(_PIXEL_MAX, p.activation_bits, False))
    else:
        nonneg = _nonnegative(g)
        for n, p in quantized.items():
            p.signed = not nonneg[n]
            p.exponent = control_exponent(p.activation_bits, p.signed)

    policy.share_runtime_scales(plans, g)

    def build() -> keras.Model:
        qat = _rebuild(canonical, g, plans, weight_clip_sigmas, f"{model.name}_{parsed.name}", scaling)
        initialize_weight_exponents(qat)
        return qat

    qat = build()
    if calibrate and method_low_bit == "output":
        tied = policy.shared_scale_layers(plans, g)
        low_bit = {
            t.layer: t.exponent_variable
            for t in quantized_tensors(qat)
            if t.tensor == "output" and t.bits < 8 and t.exponent_variable is not None and t.layer not in tied
        }
        if low_bit:  # nothing below 8 bits to move: the model stands
            chosen = calibration.output_exponents(
                qat, canonical, low_bit, calibration_data, calibration_batches, batch_size
            )
            for n, exponent in chosen.items():
                plans[n].exponent = exponent
            qat = build()
    if verbose:  # the report the caller asked for
        print(f"faq_tf {parsed.name} precision of '{model.name}':\n{precision_summary(qat)}")
    return qat


def _rebuild(
    canonical: keras.Model,
    g: graph.Graph,
    plans: dict[str, policy.LayerPlan],
    weight_clip_sigmas: float | None,
    model_name: str,
    scaling: InputScaling | None = None,
) -> keras.Model:
    """Rebuilds the canonical model with the quantizers `plans` asks for, layer by layer."""

    def make_layers(layer):
        plan = plans[layer.name]
        clone = graph.clone_layer(layer)
        if plan.role is Role.SKIPPED:
            return [clone]
        config = registry.get_quantize_config(
            layer, plan.weight_bits, plan.activation_bits, plan.signed, plan.exponent, weight_clip_sigmas, plan.rounding
        )
        if config is None:
            return [clone]
        if isinstance(clone, keras.layers.BatchNormalization):
            producers = g.producers[layer.name]
            folded = len(producers) == 1 and plans[producers[0]].role is Role.FUSED
            return [BatchNormWrapper(clone, config, standalone=not folded)]
        return [_Wrapper(clone, config)]

    def input_layers(name):
        plan = plans[name]
        if plan.activation_bits is None:
            return []
        q = ActivationQuantizer(plan.activation_bits, plan.signed, plan.exponent, plan.rounding)
        folded = scaling.get_config() if scaling is not None else None
        return [QuantizeInput(q, input_scaling=folded, name=f"{name}_quantize")]

    with quantize_scope():
        qat, _ = graph.rebuild(canonical, make_layers, input_layers, name=model_name)
    return qat
