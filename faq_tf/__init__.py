"""faq_tf: Fine-tuning After Quantization (FAQ) for Keras models.

The quantization core:

  >>> import faq_tf
  >>> qat = faq_tf.quantize_model(model, "w4a4", calibration_data=train_batches)
  >>> print(faq_tf.precision_summary(qat))

Where things live: `faq_tf.quantizers` (the Q(b, l) maths), `faq_tf.configs`
(QuantizeConfig), `faq_tf.registry` (which layers, how), `faq_tf.policy` (which bits
where, and the converter's scale-sharing rules), `faq_tf.calibration` (activation
ranges), `faq_tf.graph` (model rewriting), `faq_tf.quantize` (`quantize_model`, the
public entry point), `faq_tf.saving` (`save_model`, `load_model`, `quantize_scope`) and
`faq_tf.keras3` (`from_keras3`: Keras 3 models and `.keras` files into tf_keras).
For integer deployment: `faq_tf.tracing` (the export-only trace modes),
`faq_tf.accumulator` (biases and BN onto the runtime's grids), `faq_tf.outputs`
(8-bit scales for the outputs a policy keeps wide) and `faq_tf.targets` (`set_target`:
the Keras model computes what XNNPACK, LiteRT's builtin kernels or TFLM compute, with
`faq_tf.fixedpoint` for TFLM's fixed-point softmax).
"""

from faq_tf import compat  # noqa: F401  (must run before TensorFlow is imported)
from faq_tf.accumulator import snap_to_accumulator_grid
from faq_tf.calibration import CalibrationError
from faq_tf.introspect import precision_summary, quantized_tensors
from faq_tf.keras3 import Keras3ConversionError, from_keras3
from faq_tf.outputs import float_outputs, quantize_float_outputs
from faq_tf.policy import Precision, parse_precision
from faq_tf.quantize import quantize_model
from faq_tf.registry import UnsupportedLayerError
from faq_tf.saving import load_model, quantize_scope, save_model
from faq_tf.targets import Target, set_target

__version__ = "0.1.0"

__all__ = [
    "CalibrationError",
    "Keras3ConversionError",
    "Precision",
    "float_outputs",
    "from_keras3",
    "UnsupportedLayerError",
    "load_model",
    "parse_precision",
    "precision_summary",
    "quantize_float_outputs",
    "quantize_model",
    "quantize_scope",
    "quantized_tensors",
    "save_model",
    "set_target",
    "snap_to_accumulator_grid",
    "Target",
]
