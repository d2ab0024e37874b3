"""The quantizers' graphs convert to fully integer TFLite with the trained power-of-two scales.

This checks the design of the quantization core with TensorFlow's stock converter
(the faq_tf exporter with its verifier is `export_tflite`). Conversion takes seconds.
"""

import math

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

import faq_tf
from faq_tf import introspect
from faq_tf.compat import tf
from faq_tf.tracing import export_trace


def _convert(qat):
    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    # The stock converter works when it traces the model inside export_trace(): outside it,
    # inference adds the runtime's tie rule as elementwise float ops (export_tflite does this).
    with export_trace():
        return converter.convert()


def _is_pow2(s: float) -> bool:
    m, _ = math.frexp(s)
    return m == 0.5


@pytest.mark.parametrize("precision,overrides", [("w8a8", None), ("w4a4", {"logits": "a8"})])
def test_fully_integer_with_power_of_two_scales(model, images, precision, overrides):
    qat = faq_tf.quantize_model(model, precision, images, layer_overrides=overrides, verbose=False)
    interp = Interpreter(
        model_content=_convert(qat),
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    tensors = interp.get_tensor_details()
    by_index = {t["index"]: t for t in tensors}
    ops = interp._get_ops_details()
    names = {d["op_name"] for d in ops}
    assert "DEQUANTIZE" not in names, names
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "CONCATENATION", "MEAN", "FULLY_CONNECTED"} <= names
    for d in ops:
        if d["op_name"] == "QUANTIZE":  # allowed only as an int8 -> int8 rescale
            assert by_index[d["inputs"][0]]["dtype"] == np.int8
    for t in tensors:
        assert t["dtype"] in (np.int8, np.int32), (t["name"], t["dtype"])
        scales = t["quantization_parameters"]["scales"]
        if t["dtype"] == np.int8 and len(scales) == 1:  # activations and per-tensor weights
            assert _is_pow2(float(scales[0])), (t["name"], scales)

    # Run one image; 4-bit activations hold at most 16 levels.
    inp = interp.get_input_details()[0]
    scale, zero = inp["quantization"]
    x = np.clip(np.round(images[:1] / scale + zero), -128, 127).astype(np.int8)
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    four_bit = [t for t in introspect.quantized_tensors(qat) if t.tensor == "output" and t.bits == 4]
    if precision == "w4a4":
        assert four_bit
        mins = [t for t in tensors if "clip" in t["name"] or "Minimum" in t["name"]]
        assert mins, "4-bit activations should appear as MINIMUM outputs"
        for t in mins:
            assert len(np.unique(interp.get_tensor(t["index"]))) <= 16, t["name"]
