"""export_tflite: fully integer TFLite export of faq_tf models.

* `convert(model, ..., target="xnnpack"|"reference"|"micro") -> bytes`, or
  `python -m export_tflite --model_dir=DIR --output=m.tflite [--target=micro]`: afterwards the
  Keras model computes what the file computes on that runtime, logit for logit (`faq_tf.targets`)
* `compact(content)`: a smaller file for any .tflite (shared vectors, short names)
* `verify(content)`, or `python -m export_tflite.verify model.tflite [--edgetpu] [--json]`
* `python -m export_tflite.evaluate --tflite=m.tflite --dataset=... [--keras_model=...]
  [--runtime=xnnpack|builtin|micro]`
* `read_model(content)`: the ops and tensors of any .tflite (`export_tflite.reader`); the
  rewrites (`compact`, `snap_scales`) are `export_tflite.rewriter`
* `add_metadata(content, ImageClassifierMetadata(...))` / `read_metadata(content)`: standard
  TFLite metadata (class labels, input normalization), which `convert(..., metadata=...)` and
  `python -m export_tflite` write (`export_tflite.metadata`)

The binaries exit with 0 (ok), 1 (verifier violations) or 2 (a user error, one line on
stderr; see `export_tflite.cli`).
"""

import warnings

from export_tflite.converter import ExportError, convert, quantize_float_outputs
from export_tflite.metadata import ImageClassifierMetadata, add_metadata, read_metadata
from export_tflite.reader import TfliteFormatError, file_target, read_model
from export_tflite.rewriter import compact
from export_tflite.verify import Report, verify
from faq_tf import compat  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)

# `python -m export_tflite.verify` (or .evaluate) imports this package, which imports that
# module for the API below; runpy then warns that it was loaded before being run. Harmless.
warnings.filterwarnings("ignore", r".*found in sys\.modules after import of package 'export_tflite'", RuntimeWarning)

__all__ = [
    "ExportError",
    "ImageClassifierMetadata",
    "Report",
    "TfliteFormatError",
    "add_metadata",
    "compact",
    "convert",
    "file_target",
    "quantize_float_outputs",
    "read_metadata",
    "read_model",
    "verify",
]
