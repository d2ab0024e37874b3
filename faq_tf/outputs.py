"""Quantizing the outputs a precision policy left float, for integer deployment.

The paper keeps the w4a4 logits wide (32-bit fixed point) during fine-tuning; an int8
runtime stores every tensor in 8 bits, so the deployed model needs a scale for them.
`quantize_float_outputs` appends that quantizer: an 8-bit power-of-two range calibrated
like any other activation (logits; signed when calibration sees a negative value), or the
fixed 2^-8 step (softmax/sigmoid).
faq-train applies it to the model it saves, so the saved Keras model is the one the
integer model reproduces; `export_tflite.convert` applies it to models that lack it.

Example:

  deployable = quantize_float_outputs(qat_model, calibration_batches)
"""

from __future__ import annotations

from faq_tf import calibration, graph, registry
from faq_tf.compat import keras, tfmot
from faq_tf.layers import QuantizeInput
from faq_tf.quantizers import ActivationQuantizer, FixedExponentQuantizer, Rounding, exponent_for_range
from faq_tf.registry import OutputKind
from faq_tf.saving import quantize_scope

__all__ = ["float_outputs", "quantize_float_outputs"]

_Wrapper = tfmot.quantization.keras.QuantizeWrapperV2


def _quantized_output(layer) -> bool:
    if isinstance(layer, QuantizeInput):
        return True
    return isinstance(layer, _Wrapper) and bool(layer.quantize_config.get_output_quantizers(layer.layer))


def float_outputs(model: keras.Model) -> list[str]:
    """Names of the layers between the model outputs and the last quantized tensors that compute
    float values (the w4a4 logits and what follows them); empty for a fully quantized model.

    Args:
      model: a faq_tf QAT model.

    Returns:
      Layer names, from the outputs back; pass-through layers are not listed.
    """
    g = graph.model_graph(model)
    tail, stack, seen = [], list(g.outputs), set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        layer = g.layers[name]
        if _quantized_output(layer) or isinstance(layer, keras.layers.InputLayer):
            continue
        inner = getattr(layer, "layer", layer)
        passthrough = registry.supports(inner) and registry.get_layer_info(inner).output is OutputKind.PASSTHROUGH
        if not passthrough:
            tail.append(name)
        stack.extend(g.producers[name])
    return tail


def _rounding(g: graph.Graph, name: str) -> Rounding:
    """The tie rule of the op computing layer `name`'s output (through linear activations)."""
    while True:
        layer = g.layers[name]
        inner = getattr(layer, "layer", layer)
        if not registry.supports(inner):
            return Rounding.HALF_UP
        info = registry.get_layer_info(inner)
        if info.output is OutputKind.COMPUTED or len(g.producers[name]) != 1:
            return info.rounding
        name = g.producers[name][0]


def quantize_float_outputs(model: keras.Model, representative_data=None, percentile: float = 99.99) -> keras.Model:
    """Returns `model` with its float output tensors quantized (8-bit, power of two).

    The w4a4 policy leaves the logits float, as the paper does; an integer runtime
    needs a scale for them. Logits get an 8-bit range calibrated on
    `representative_data` (signed when a calibration value is negative), rounding ties
    as the op that computes them; softmax/sigmoid outputs get the fixed 2^-8 step.

    Args:
      model: a faq_tf QAT model; it is not modified.
      representative_data: a few batches of inputs (see `faq_tf.calibration.as_batches`);
        5 are used. Not needed when no output has to be calibrated.
      percentile: P of the calibration (that of 8-bit tensors by default).

    Returns:
      `model` itself when no output is float, else a new model with a `QuantizeInput`
      after each float output layer.

    Raises:
      ValueError: if calibration is needed and no representative data is given.
    """
    tail = float_outputs(model)
    if not tail:
        return model
    fixed = {}
    calibrate = []
    for name in tail:
        inner = getattr(model.get_layer(name), "layer", model.get_layer(name))
        act = getattr(inner, "activation", None)
        act_name = keras.activations.serialize(act) if act is not None else None
        if isinstance(inner, keras.layers.Activation) and act_name in ("softmax", "sigmoid"):
            fixed[name] = FixedExponentQuantizer(8, -8, signed=False, constant=False)
        else:
            calibrate.append(name)
    if calibrate and representative_data is None:
        names = [getattr(model.get_layer(n), "layer", model.get_layer(n)).name for n in calibrate]
        raise ValueError(
            f"Outputs of {names} are float (the w4a4 policy keeps the logits wide). Pass representative "
            "data (a few training batches) so their 8-bit range can be calibrated, or quantize them in training "
            f"with layer_overrides={{'{names[0]}': 'a8'}}."
        )
    ranges = calibration.collect_ranges(model, dict.fromkeys(calibrate, percentile), representative_data, 5)
    g = graph.model_graph(model)
    for name in calibrate:
        r = ranges[name]
        fixed[name] = ActivationQuantizer(8, r.signed, exponent_for_range(r.y_max, 8, r.signed), _rounding(g, name))

    def make_layers(layer):
        chain = [graph.clone_layer(layer)]
        if layer.name in fixed:
            chain.append(QuantizeInput(fixed[layer.name], name=f"{layer.name}_export_quantize"))
        return chain

    with quantize_scope():
        new, _ = graph.rebuild(model, make_layers, name=model.name)
    return new
