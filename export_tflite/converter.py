"""Converting a faq_tf QAT model into a fully integer .tflite model.

The quantizers already mark every stored tensor with its power-of-two scale (see
`faq_tf.quantizers`), so the stock TFLite converter produces integer ops that keep
those scales. This module adds what the converter cannot decide:

* outputs the policy left float (the w4a4 logits, "kept wide" in the paper) get an 8-bit
  signed power-of-two range calibrated on representative data, and a softmax after them
  gets TFLite's fixed 1/256 scale;
* a fixed batch size (1 by default, as the Edge TPU needs);
* int8, uint8 or float32 input/output;
* the verifier runs on the result, and a model that is not fully integer is refused
  with the offending ops and tensors named.
"""

from __future__ import annotations

import numpy as np

from export_tflite.verify import Report, verify
from faq_tf import calibration, graph, introspect
from faq_tf.accumulator import snap_to_accumulator_grid
from faq_tf.compat import keras, tf, tfmot
from faq_tf.layers import QuantizeInput
from faq_tf.quantize import quantize_scope
from faq_tf.quantizers import ActivationQuantizer, FixedExponentQuantizer, exponent_for_range, packed_sub8bit_weights

__all__ = ["ExportError", "convert", "quantize_float_outputs", "IO_DTYPES"]

IO_DTYPES = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}
_Wrapper = tfmot.quantization.keras.QuantizeWrapperV2


class ExportError(RuntimeError):
    """The model cannot be exported as a fully integer model; the message says why."""

    def __init__(self, message: str, report: Report | None = None):
        super().__init__(message)
        self.report = report


def _quantized_output(layer) -> bool:
    if isinstance(layer, QuantizeInput):
        return True
    return isinstance(layer, _Wrapper) and bool(layer.quantize_config.get_output_quantizers(layer.layer))


def _float_tail(model: keras.Model) -> list[str]:
    """Layers between the model outputs and the last quantized tensors that compute float values."""
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
        passthrough = isinstance(inner, (keras.layers.Flatten, keras.layers.Reshape, keras.layers.Dropout))
        if not passthrough:
            tail.append(name)
        stack.extend(g.producers[name])
    return tail


def quantize_float_outputs(model: keras.Model, representative_data=None, percentile: float = 99.99) -> keras.Model:
    """Returns `model` with its float output tensors quantized (8-bit, power of two).

    The w4a4 policy leaves the logits float, as the paper does; an integer runtime
    needs a scale for them. Logits get a signed 8-bit range calibrated on
    `representative_data`; softmax/sigmoid outputs get the fixed 2^-8 step.

    Raises:
      ExportError: if calibration is needed and no representative data is given.
    """
    tail = _float_tail(model)
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
        raise ExportError(
            f"Outputs of {names} are float (the w4a4 policy keeps the logits wide). Pass representative "
            "data (a few training batches) so their 8-bit range can be calibrated, or quantize them in training "
            f"with layer_overrides={{'{names[0]}': 'a8'}}."
        )
    ranges = calibration.collect_ranges(model, dict.fromkeys(calibrate, percentile), representative_data, 5)
    for name in calibrate:
        r = ranges[name]
        fixed[name] = ActivationQuantizer(8, r.signed, exponent_for_range(r.y_max, 8, r.signed))

    def make_layers(layer):
        chain = [graph.clone_layer(layer)]
        if layer.name in fixed:
            chain.append(QuantizeInput(fixed[layer.name], name=f"{layer.name}_export_quantize"))
        return chain

    with quantize_scope():
        new, _ = graph.rebuild(model, make_layers, name=model.name)
    return new


def convert(
    model: keras.Model,
    io_dtype: str = "int8",
    batch_size: int | None = 1,
    representative_data=None,
    check: bool = True,
    pack_int4: bool = False,
    snap_biases: bool = True,
) -> bytes:
    """Converts a faq_tf QAT model to a fully integer .tflite model.

    Args:
      model: a model from `faq_tf.quantize_model` (any policy), fine-tuned or not.
      io_dtype: "int8" (default), "uint8" or "float32" input and output.
      batch_size: the static batch size (1 for Edge TPU); None keeps it dynamic.
      representative_data: input batches, needed when the model has float outputs
        (w4a4 logits) to calibrate their range.
      check: run the verifier and raise if the result is not fully integer.
      pack_int4: store 4-bit (and lower) conv/dense weights as packed INT4 tensors (about
        half the size; not for the Edge TPU). Default: int8 storage of the 4-bit values.
      snap_biases: first move `model`'s biases and BN offsets onto the int32 accumulator
        grid, in place (`faq_tf.accumulator`); without it the converter rounds them and a
        few activations differ by a step from the Keras model. A no-op for models saved
        by faq-train, which snaps before saving.

    Returns:
      The .tflite bytes.

    Raises:
      ExportError: for a model that is not quantized or not fully integer (names the ops).
      ValueError: for a bad io_dtype or batch size.
    """
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"io_dtype must be one of {sorted(IO_DTYPES)}, got {io_dtype!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if not introspect.quantized_tensors(model):
        raise ExportError(
            f"Model '{model.name}' has no faq_tf quantizers: quantize it with faq_tf.quantize_model first "
            "(the exporter does not do post-training quantization)."
        )
    if snap_biases:
        snap_to_accumulator_grid(model)
    model = quantize_float_outputs(model, representative_data)
    shape = [batch_size, *model.input_shape[1:]]
    fn = tf.function(lambda x: model(x, training=False))
    with packed_sub8bit_weights(pack_int4):  # decides the weight storage while tracing
        concrete = fn.get_concrete_function(tf.TensorSpec(shape, model.inputs[0].dtype))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if io_dtype != "float32":
        converter.inference_input_type = IO_DTYPES[io_dtype]
        converter.inference_output_type = IO_DTYPES[io_dtype]
    try:
        content = converter.convert()
    except Exception as e:  # noqa: BLE001 - the converter's errors are re-raised with context
        raise ExportError(f"The TFLite converter failed on '{model.name}': {e}") from e
    if check:
        report = verify(content)
        if not report.ok:
            layers = sorted(_layers_named_in(report.violations, model))
            raise ExportError(
                f"'{model.name}' did not convert to a fully integer model (layers involved: {layers}):\n  "
                + "\n  ".join(report.violations[:20]),
                report,
            )
    return content


def _layers_named_in(violations: list[str], model: keras.Model) -> set[str]:
    names = {getattr(layer, "layer", layer).name: layer.name for layer in model.layers}
    found = set()
    for v in violations:
        for inner, outer in names.items():
            if f"/{outer}/" in v or f"/{inner}/" in v:
                found.add(inner)
    return found


def sample_inputs(representative_data, n: int = 16) -> np.ndarray:
    """Collects up to n input rows from representative data (for level counting)."""
    rows = []
    for batch in calibration.as_batches(representative_data):
        rows.extend(np.asarray(batch))
        if len(rows) >= n:
            break
    return np.stack(rows[:n]) if rows else np.zeros((0,))
