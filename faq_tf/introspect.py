"""Finding the quantizers of a QAT model, their l values, and a readable summary."""

from __future__ import annotations

import dataclasses

from faq_tf.compat import keras, tf, tfmot
from faq_tf.configs import FaqQuantizeConfig
from faq_tf.layers import QuantizeInput
from faq_tf.quantizers import BatchNormMultiplierQuantizer, WeightQuantizer, weight_exponent

__all__ = [
    "QuantizedTensor",
    "quantized_tensors",
    "quantized_tensors_of",
    "initialize_weight_exponents",
    "precision_summary",
]

_Wrapper = tfmot.quantization.keras.QuantizeWrapperV2
_QuantizeLayer = QuantizeInput


@dataclasses.dataclass
class QuantizedTensor:
    """One quantized tensor of a QAT model.

    Attributes:
      layer: the layer name (without the "quant_" wrapper prefix).
      tensor: "output", "input" or a weight attribute such as "kernel".
      quantizer: its quantizer.
      exponent_variable: the variable holding l, or None for a constant l.
      weight: the float weight variable, for weight tensors.
    """

    layer: str
    tensor: str
    quantizer: object
    exponent_variable: tf.Variable | None
    weight: tf.Variable | None = None

    @property
    def bits(self) -> int:
        return self.quantizer.bits

    @property
    def exponent(self) -> int | None:
        if self.exponent_variable is not None:
            return int(self.exponent_variable.numpy())
        return getattr(self.quantizer, "exponent", None)


def _short(v: tf.Variable) -> str:
    return v.name.split("/")[-1].split(":")[0]


def _exponent_vars(layer) -> dict[str, tf.Variable]:
    found = {}
    for v in layer.non_trainable_weights:
        short = _short(v)
        if short.endswith("_exponent"):
            found[short[: -len("_exponent")]] = v
    return found


def quantized_tensors_of(layer) -> list[QuantizedTensor]:
    """Lists the quantized tensors of one layer of a faq_tf QAT model (empty for float layers).

    Args:
      layer: a layer of the QAT model (a `QuantizeInput`, a QuantizeWrapper or another layer).

    Returns:
      Its weights' `QuantizedTensor`s, then its output's (or its input's for a `QuantizeInput`).
    """
    result = []
    if isinstance(layer, _QuantizeLayer) and layer.quantizer is not None:
        var = _exponent_vars(layer).get(layer.name)
        result.append(QuantizedTensor(layer.name, "input", layer.quantizer, var))
    elif isinstance(layer, _Wrapper) and isinstance(layer.quantize_config, FaqQuantizeConfig):
        vars_ = _exponent_vars(layer)
        inner = layer.layer
        cfg = layer.quantize_config
        # The wrapper swaps the layer's attributes for quantized tensors, so find
        # the float variables by name among the wrapper's weights.
        by_name = {_short(v): v for v in layer.weights}
        for attr, q in cfg.weight_quantizers.items():
            if attr in by_name:
                result.append(QuantizedTensor(inner.name, attr, q, vars_.get(attr), by_name[attr]))
        for q in cfg.get_output_quantizers(inner):
            result.append(QuantizedTensor(inner.name, "output", q, vars_.get("output")))
    return result


def quantized_tensors(model: keras.Model) -> list[QuantizedTensor]:
    """Lists every quantized tensor of a QAT model built by faq_tf, in layer order.

    Args:
      model: a QAT model from `faq_tf.quantize_model` (or reloaded from disk).

    Returns:
      One `QuantizedTensor` per quantized weight, output and input.
    """
    return [qt for layer in model.layers for qt in quantized_tensors_of(layer)]


def initialize_weight_exponents(model: keras.Model) -> None:
    """Sets every weight quantizer's l from the current weights (as a training step would).

    Args:
      model: a QAT model; its exponent variables are assigned in place.
    """
    for qt in quantized_tensors(model):
        if isinstance(qt.quantizer, WeightQuantizer) and qt.exponent_variable is not None:
            l = weight_exponent(qt.weight, qt.quantizer.bits, qt.quantizer.clip_sigmas)
            qt.exponent_variable.assign(l)


def _describe(q) -> str:
    if isinstance(q, BatchNormMultiplierQuantizer):
        return f"{q.bits}b l={q.exponent}"
    return f"{q.bits}b"


def precision_summary(model: keras.Model) -> str:
    """Returns a table of the precision applied: layer, weight bits, activation bits, l.

    Args:
      model: a QAT model from `faq_tf.quantize_model` (or reloaded from disk).

    Returns:
      The table as text, one row per layer, and a last line counting the quantized tensors.
    """
    rows = [("layer", "class", "weights", "w l", "activation", "a l")]
    by_layer: dict[str, list[QuantizedTensor]] = {}
    for qt in quantized_tensors(model):
        by_layer.setdefault(qt.layer, []).append(qt)
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        name = layer.name if isinstance(layer, _QuantizeLayer) else inner.name
        if isinstance(layer, keras.layers.InputLayer):
            continue
        tensors = by_layer.get(name, [])
        w = [t for t in tensors if t.tensor not in ("output", "input")]
        a = [t for t in tensors if t.tensor in ("output", "input")]
        kernel = [t for t in w if isinstance(t.quantizer, WeightQuantizer)]
        if kernel:
            wbits, wl = f"{kernel[0].bits}", f"{kernel[0].exponent}"
        elif w:
            wbits, wl = "/".join(_describe(t.quantizer) for t in w), ""
        else:
            has_float_weights = bool(inner.weights) and not isinstance(layer, _QuantizeLayer)
            wbits, wl = ("float" if has_float_weights else "-"), ""
        if a:
            signed = "s" if getattr(a[0].quantizer, "signed", False) else "u"
            abits, al = f"{a[0].bits}{signed}", f"{a[0].exponent}"
        else:
            abits, al = "-", ""
        rows.append((name, type(inner).__name__, wbits, wl, abits, al))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(wd) for c, wd in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    n_act = sum(1 for qts in by_layer.values() for t in qts if t.tensor in ("output", "input"))
    n_w = sum(1 for qts in by_layer.values() for t in qts if isinstance(t.quantizer, WeightQuantizer))
    lines.append(
        f"{n_w} weight tensors and {n_act} activation tensors quantized "
        "(activation: u = unsigned, s = signed; '-' = float/fused)."
    )
    return "\n".join(lines)
