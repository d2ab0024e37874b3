"""Converting a faq_tf QAT model into a fully integer .tflite model.

The quantizers already mark every stored tensor with its power-of-two scale (see
`faq_tf.quantizers`), so the stock TFLite converter produces integer ops that keep
those scales. This module adds what the converter cannot decide:

* outputs the policy left float (the w4a4 logits, "kept wide" in the paper) get an 8-bit
  signed power-of-two range calibrated on representative data, and a softmax after them
  gets TFLite's fixed 1/256 scale;
* a fixed batch size (1 by default, as the Edge TPU needs);
* int8, uint8 or float32 input/output;
* a compact file: repeated vectors (per-channel zero points, shared scales) stored once,
  short tensor names (`export_tflite.rewriter.compact`);
* the verifier runs on the result, and a model that is not fully integer is refused
  with the offending ops and tensors named;
* a deployment target (`faq_tf.targets`): the runtime whose integer arithmetic the Keras
  model then reproduces (`xnnpack`, LiteRT's default; `reference`, its builtin kernels;
  `micro`, TFLM), recorded in the file and checked against that runtime's rules;
* optionally, standard TFLite metadata (class labels, input normalization), written last
  (`export_tflite.metadata`).
"""

from __future__ import annotations

import re

import numpy as np

from export_tflite.metadata import ImageClassifierMetadata, add_metadata
from export_tflite.reader import TARGET_METADATA, unpack
from export_tflite.rewriter import TENSOR_NAMES, compact, pack, set_model_metadata, snap_scales
from export_tflite.verify import Report, verify
from faq_tf import calibration, introspect
from faq_tf.accumulator import snap_to_accumulator_grid
from faq_tf.compat import keras, tf
from faq_tf.outputs import quantize_float_outputs
from faq_tf.targets import Target, as_target
from faq_tf.tracing import export_trace, packed_sub8bit_weights

__all__ = ["ExportError", "convert", "check_on_runtime", "quantize_float_outputs", "IO_DTYPES"]


IO_DTYPES = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}


class ExportError(RuntimeError):
    """The model cannot be exported as a fully integer model; the message says why."""

    def __init__(self, message: str, report: Report | None = None):
        super().__init__(message)
        self.report = report


def convert(
    model: keras.Model,
    io_dtype: str = "int8",
    batch_size: int | None = 1,
    representative_data=None,
    check: bool = True,
    pack_int4: bool = False,
    snap_biases: bool = True,
    tensor_names: str = "short",
    metadata: ImageClassifierMetadata | None = None,
    target: Target | str = Target.XNNPACK,
) -> bytes:
    """Converts a faq_tf QAT model to a fully integer .tflite model.

    On `target`'s runtime the file computes what `model` computes after
    `faq_tf.set_target(model, target, pack_int4)`, bit for bit, once any float outputs
    have the 8-bit quantizers the file stores them with (`quantize_float_outputs`, which
    faq-train applies before saving). `model` keeps the arithmetic it has: its
    calibration and evaluation do not change with an export. `check_on_runtime` compares.

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
      tensor_names: "short" (default: "<layer>/<op>", "<layer>/weights", "<layer>/bias"),
        "full" (the converter's: every fused TF op) or "none" (graph inputs and outputs
        only). Whatever the names, the file stores each repeated vector once
        (`export_tflite.rewriter.compact`).
      metadata: TFLite metadata to write (labels, input normalization), or None for none.
        Added as the last step, after the verifier (`export_tflite.metadata.add_metadata`).
      target: the runtime the file is for (a `faq_tf.targets.Target` or its value: "xnnpack", LiteRT's
        default; "reference", LiteRT's builtin kernels; "micro", TFLM; or a runtime name of
        `export_tflite.evaluate.RUNTIMES`). Recorded in the file (`export_tflite.reader.file_target`); "micro"
        also checks TFLM's ops and tensor types (`verify(..., micro=True)`).

    Returns:
      The .tflite bytes.

    Raises:
      ExportError: for a model that is not quantized or not fully integer (names the ops).
      ValueError: for a bad io_dtype, batch size or target, or metadata that does not fit the
        model (e.g. a label count other than its outputs).
    """
    target = as_target(target)
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"io_dtype must be one of {sorted(IO_DTYPES)}, got {io_dtype!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if tensor_names not in TENSOR_NAMES:
        raise ValueError(f"tensor_names must be one of {TENSOR_NAMES}, got {tensor_names!r}")
    classes = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None  # one output
    if metadata is not None and metadata.labels is not None and classes and len(metadata.labels) != classes:
        raise ValueError(  # before the conversion, as add_metadata would after it
            f"metadata.labels: {len(metadata.labels)} names for the {classes} outputs of '{model.name}'; "
            "give one per output"
        )
    if not introspect.quantized_tensors(model):
        raise ExportError(
            f"Model '{model.name}' has no faq_tf quantizers: quantize it with faq_tf.quantize_model first, "
            "or fine-tune it with faq-train --pretrained=<its .h5 weights or .keras file> (the exporter "
            "does not do post-training quantization)."
        )
    if snap_biases:
        snap_to_accumulator_grid(model)
    try:
        model = quantize_float_outputs(model, representative_data)
    except ValueError as e:
        raise ExportError(str(e)) from e
    shape = [batch_size, *model.input_shape[1:]]
    fn = tf.function(lambda x: model(x, training=False))
    with packed_sub8bit_weights(pack_int4), export_trace():  # weight storage; convertible ops only
        concrete = fn.get_concrete_function(tf.TensorSpec(shape, model.inputs[0].dtype))
    # No trackable object: given the Keras model, the converter first tries to save it as a
    # SavedModel, which traces every layer (minutes for an application) and, for a QAT
    # model, fails and falls back to converting the concrete function, as here. Same bytes.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if io_dtype != "float32":
        converter.inference_input_type = IO_DTYPES[io_dtype]
        converter.inference_output_type = IO_DTYPES[io_dtype]
    try:
        content = converter.convert()
    except Exception as e:  # noqa: BLE001 - the converter's errors are re-raised with context
        raise ExportError(f"The TFLite converter failed on '{model.name}': {e}") from e
    content, _ = snap_scales(content)  # folded BN scales: exact 2^l * m_c, not an ulp below
    content = compact(content, tensor_names)  # shared vectors, sentinel buffer, names
    unpacked = unpack(content)
    set_model_metadata(unpacked, TARGET_METADATA, target.value.encode())
    content = pack(unpacked, len(content) + 64)
    if check:
        report = verify(content, micro=target is Target.MICRO)
        if not report.ok:
            layers = sorted(_layers_named_in(report.violations, model))
            raise ExportError(
                f"'{model.name}' did not convert to a fully integer model (layers involved: {layers}):\n  "
                + "\n  ".join(report.violations[:20]),
                report,
            )
    if metadata is not None:
        content = add_metadata(content, metadata)
    return content


def _layers_named_in(violations: list[str], model: keras.Model) -> set[str]:
    """The Keras layers whose names appear as a path component of a tensor in `violations`."""
    found = set()
    for layer in model.layers:
        inner = getattr(layer, "layer", layer).name
        names = "|".join(re.escape(n) for n in {layer.name, inner})
        pattern = re.compile(rf"(?:^|[/'\"; ])(?:{names})/")
        if any(pattern.search(v) for v in violations):
            found.add(inner)
    return found


def sample_inputs(representative_data, n: int = 16) -> np.ndarray:
    """Collects up to n input rows from representative data (for level counting)."""
    rows = []
    for batch in calibration.as_batches(representative_data):
        rows.extend(np.asarray(batch))
        if len(rows) >= n:
            break


def check_on_runtime(
    model: keras.Model, content: bytes, inputs: np.ndarray, target: Target | str, pack_int4: bool = False
) -> tuple[int, dict[str, str]]:
    """Runs `content` on `target`'s runtime and `model` with its arithmetic on the same inputs.

    Args:
      model: the model `content` was converted from (with its output quantizers, as
        `quantize_float_outputs` adds them; its target is set, then set back to xnnpack).
      content: the .tflite bytes.
      inputs: a batch of float inputs as the model takes them.
      target: the target (a `faq_tf.targets.Target` or its value).
      pack_int4: whether the file stores packed INT4 weights.

    Returns:
      (the number of inputs whose outputs are all identical, the layers whose arithmetic the
      Keras model does not reproduce on that target: `faq_tf.targets.TargetReport.not_emulated`).

    Raises:
      ImportError: for the micro target without tflite-micro.
      ValueError, RuntimeError: if the runtime cannot load or run the file.
    """
    from export_tflite.evaluate import TfliteRunner
    from faq_tf.targets import RUNTIME_OF, set_target

    target = as_target(target)
    runner = TfliteRunner(content, runtime=RUNTIME_OF[target])
    report = set_target(model, target, pack_int4=pack_int4)
    try:
        same = np.all((runner(inputs) == model.predict(inputs, verbose=0)).reshape(len(inputs), -1), axis=1)
    finally:
        set_target(model, Target.XNNPACK)
    return int(np.sum(same)), report.not_emulated
