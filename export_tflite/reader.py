"""Reading a .tflite flatbuffer into plain Python records (ops, tensors, scales).

Uses the schema that ships with the LiteRT runtime (`ai_edge_litert.schema_py_generated`),
so the verifier reads the file itself rather than trusting the converter. Rewriting a
file (`snap_scales`, `compact`) is `export_tflite.rewriter`; the TFLite metadata in a
file (labels, input normalization) is `export_tflite.metadata`.
"""

from __future__ import annotations

import dataclasses
import io
import math
import zipfile

import numpy as np
from ai_edge_litert import schema_py_generated as schema

__all__ = [
    "ModelInfo",
    "OpInfo",
    "TensorInfo",
    "TfliteFormatError",
    "associated_files",
    "TARGET_METADATA",
    "file_target",
    "graph_io",
    "has_int4_weights",
    "model_metadata",
    "nearest_short_mantissa",
    "op_name",
    "read_model",
    "unpack",
]

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


class TfliteFormatError(ValueError):
    """Raised for bytes that are not a readable .tflite model."""


@dataclasses.dataclass
class TensorInfo:
    """One tensor: name, dtype name ("INT8", "FLOAT32", ...), shape, scales, zero points."""

    index: int
    name: str
    dtype: str
    shape: list[int]
    shape_signature: list[int]
    scales: list[float]
    zero_points: list[int]
    quantized_dimension: int
    is_constant: bool
    data: np.ndarray | None


@dataclasses.dataclass
class OpInfo:
    """One operator: builtin name, version, input and output tensor indices."""

    index: int
    name: str
    version: int
    inputs: list[int]
    outputs: list[int]


@dataclasses.dataclass
class ModelInfo:
    """The main subgraph of a model."""

    ops: list[OpInfo]
    tensors: list[TensorInfo]
    inputs: list[int]
    outputs: list[int]
    num_subgraphs: int


_NP = {
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT16": np.int16,
    "INT32": np.int32,
    "FLOAT32": np.float32,
    "INT64": np.int64,
}


def _ints(values) -> list[int]:
    return [] if values is None else [int(v) for v in values]


def unpack(content: bytes) -> schema.ModelT:
    """Parses .tflite bytes into LiteRT's mutable schema objects (`schema.ModelT`).

    `read_model` and `export_tflite.rewriter.compact` both start here, so damaged bytes
    are refused with the same message whichever reads them first.

    Args:
      content: .tflite bytes.

    Returns:
      The whole model (all subgraphs, buffers, metadata), at least one subgraph.

    Raises:
      TfliteFormatError: for truncated, empty or non-tflite bytes.
    """
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise TfliteFormatError("not a .tflite file (missing the TFL3 identifier); was it truncated or renamed?")
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
        if not model.subgraphs:
            raise ValueError("no subgraph")
    except Exception as e:  # noqa: BLE001 - any parse failure means a damaged file
        raise TfliteFormatError(f"damaged .tflite file: {type(e).__name__}: {e}") from e
    return model


def associated_files(content: bytes) -> dict[str, bytes]:
    """The files appended to a .tflite as a zip archive: TFLite metadata's associated files (labels.txt).

    TFLite runtimes read the flatbuffer and ignore bytes after it, so files that describe
    the model travel at the end of the same file (as tflite-support's MetadataPopulator
    writes them; `export_tflite.rewriter.append_files`).

    Args:
      content: .tflite bytes.

    Returns:
      name -> contents, in the archive's order; {} for a file without an appended archive.

    Raises:
      TfliteFormatError: for an appended archive that is damaged.
    """
    if not zipfile.is_zipfile(io.BytesIO(content)):
        return {}
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            return {item.filename: archive.read(item) for item in archive.infolist()}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise TfliteFormatError(f"damaged associated files (the zip archive after the model): {e}") from e


def model_metadata(content: bytes, name: str) -> bytes | None:
    """The buffer of the file's `Model.metadata` entry `name` (TFLITE_METADATA, faq_tf_target, ...), or None.

    Reads the flatbuffer in place (no unpacking), so it is cheap on large files.

    Raises:
      TfliteFormatError: for bytes that are not a readable .tflite model.
    """
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise TfliteFormatError("not a .tflite file (missing the TFL3 identifier); was it truncated or renamed?")
    try:
        model = schema.Model.GetRootAs(content, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if (entry.Name() or b"").decode("utf-8", "replace") == name:
                data = model.Buffers(entry.Buffer()).DataAsNumpy()
                return bytes(data) if isinstance(data, np.ndarray) else b""
    except Exception as e:  # noqa: BLE001 - any parse failure means a damaged file
        raise TfliteFormatError(f"damaged .tflite file: {type(e).__name__}: {e}") from e
    return None


# The `Model.metadata` entry in which `export_tflite.convert` records the file's target.
TARGET_METADATA = "faq_tf_target"


def file_target(content: bytes) -> str | None:
    """The deployment target a .tflite was exported for (`faq_tf.targets.TARGETS`), or None if it does not say.

    Raises:
      TfliteFormatError: for bytes that are not a readable .tflite model.
    """
    data = model_metadata(content, TARGET_METADATA)
    return data.decode("ascii", "replace") if data is not None else None


def has_int4_weights(content: bytes) -> bool:
    """Whether the .tflite stores weights as packed INT4 (`export_tflite.convert(pack_int4=True)`).

    Raises:
      TfliteFormatError: for bytes that are not a readable .tflite model.
    """
    return any(t.dtype == "INT4" and t.is_constant for t in read_model(content).tensors)


def graph_io(graph: schema.SubGraphT) -> set[int]:
    """Indices of a subgraph's input and output tensors (their names are kept by every rewrite)."""
    return {int(i) for ids in (graph.inputs, graph.outputs) if ids is not None for i in ids}


def op_name(code: schema.OperatorCodeT) -> str:
    """An operator code's builtin name ("CONV_2D"), "CUSTOM:<name>" or "OP_<n>" for unknown codes.

    The larger of the two code fields: builtin codes above 127 only fit the newer field.
    """
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    name = _OP_NAMES.get(builtin, f"OP_{builtin}")
    if name == "CUSTOM":
        name = f"CUSTOM:{code.customCode.decode() if code.customCode else '?'}"
    return name


def read_model(content: bytes) -> ModelInfo:
    """Parses .tflite bytes into the main subgraph's ops and tensors.

    Args:
      content: .tflite bytes.

    Returns:
      The first subgraph's ops and tensors, with constant data as numpy arrays.

    Raises:
      TfliteFormatError: for truncated, empty or non-tflite bytes.
    """
    model = unpack(content)
    try:
        info = _records(model)
    except (IndexError, TypeError, ValueError, AttributeError) as e:  # fields that parse but do not fit together
        raise TfliteFormatError(f"damaged .tflite file: {type(e).__name__}: {e}") from e
    n = len(info.tensors)
    used = [i for op in info.ops for i in op.inputs + op.outputs] + info.inputs + info.outputs
    if any(i >= n for i in used):
        raise TfliteFormatError(f"damaged .tflite file: a tensor index is out of range (the graph has {n} tensors)")
    return info


def _records(model: schema.ModelT) -> ModelInfo:
    """The main subgraph of an unpacked model as `ModelInfo`."""
    graph = model.subgraphs[0]
    codes = model.operatorCodes
    buffers = model.buffers or []
    tensors = []
    for i, t in enumerate(graph.tensors):
        q = t.quantization
        scales = [float(s) for s in (q.scale if q is not None and q.scale is not None else [])]
        zps = _ints(q.zeroPoint if q is not None else None)
        dtype = _TYPE_NAMES.get(t.type, str(t.type))
        raw = buffers[t.buffer].data if 0 < t.buffer < len(buffers) else None
        data = None
        if raw is not None and len(raw) and dtype in _NP:
            data = np.frombuffer(bytes(bytearray(raw)), _NP[dtype])
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        tensors.append(
            TensorInfo(
                i,
                name,
                dtype,
                _ints(t.shape),
                _ints(t.shapeSignature if t.shapeSignature is not None else t.shape),
                scales,
                zps,
                int(q.quantizedDimension) if q is not None else 0,
                raw is not None and len(raw) > 0,
                data,
            )
        )
    ops = []
    for i, op in enumerate(graph.operators or []):
        code = codes[op.opcodeIndex]
        ops.append(OpInfo(i, op_name(code), int(code.version), _ints(op.inputs), _ints(op.outputs)))
    return ModelInfo(ops, tensors, _ints(graph.inputs), _ints(graph.outputs), len(model.subgraphs))


def nearest_short_mantissa(scale: float, bits: int, rel_tol: float = 0.0) -> float | None:
    """scale rounded to 2^k * m with an integer |m| < 2^bits, if it is within rel_tol of one.

    One helper for the verifier's check (`rel_tol=0`: exact) and `export_tflite.rewriter.snap_scales`'
    repair (a float32 ulp or so), so both agree on what "a short mantissa" is.

    Args:
      scale: a quantization scale.
      bits: significant bits allowed in m (7 for an 8-bit signed BN multiplier).
      rel_tol: how far (relative) `scale` may be from 2^k * m.

    Returns:
      The exact 2^k * m, or None if `scale` is not positive and finite or not close to one.
    """
    if not (scale > 0 and math.isfinite(scale)):
        return None
    mantissa, exp = math.frexp(scale)
    for b in range(1, bits + 1):
        m = mantissa * 2**b
        if abs(m - round(m)) <= rel_tol * m:
            return math.ldexp(round(m), exp - b)
    return None
