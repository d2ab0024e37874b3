"""Reading a .tflite flatbuffer into plain Python records (ops, tensors, scales).

Uses the schema that ships with the LiteRT runtime (`ai_edge_litert.schema_py_generated`),
so the verifier reads the file itself rather than trusting the converter.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from ai_edge_litert import schema_py_generated as schema

__all__ = ["TensorInfo", "OpInfo", "ModelInfo", "read_model", "snap_scales", "TfliteFormatError"]

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


def read_model(content: bytes) -> ModelInfo:
    """Parses .tflite bytes.

    Raises:
      TfliteFormatError: for truncated, empty or non-tflite bytes.
    """
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise TfliteFormatError("not a .tflite file (missing the TFL3 identifier); was it truncated or renamed?")
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
        graph = model.subgraphs[0]
    except Exception as e:  # noqa: BLE001 - any parse failure means a damaged file
        raise TfliteFormatError(f"damaged .tflite file: {type(e).__name__}: {e}") from e
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
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = _OP_NAMES.get(builtin, f"OP_{builtin}")
        if name == "CUSTOM":
            name = f"CUSTOM:{code.customCode.decode() if code.customCode else '?'}"
        ops.append(OpInfo(i, name, int(code.version), _ints(op.inputs), _ints(op.outputs)))
    return ModelInfo(ops, tensors, _ints(graph.inputs), _ints(graph.outputs), len(model.subgraphs))


def _nearest_short_mantissa(scale: float, bits: int, rel_tol: float) -> float | None:
    """scale rounded to 2^k * m with an integer |m| < 2^bits, if it is within rel_tol of one."""
    if not (scale > 0 and math.isfinite(scale)):
        return None
    mantissa, exp = math.frexp(scale)
    for b in range(1, bits + 1):
        m = mantissa * 2**b
        if abs(m - round(m)) <= rel_tol * m:
            return math.ldexp(round(m), exp - b)
    return None


def snap_scales(content: bytes, bits: int = 7, rel_tol: float = 1e-6) -> tuple[bytes, int]:
    """Makes every quantization scale that is a float32 ulp or so from 2^k * m exact.

    The TFLite converter folds a BatchNormalization into per-channel weight scales
    2^l * m_c (m_c the 8-bit BN multiplier) in float32 arithmetic and can land one ulp
    below the exact value; bias scales inherit it. The integer weights and biases are
    the same either way, but the runtime's requantization multiplier is then a hair
    off, which flips exact rounding ties. This rewrites those scales in place (the
    file layout does not change).

    Args:
      content: .tflite bytes.
      bits: significant bits of m (7: an 8-bit signed BN multiplier).
      rel_tol: how close a scale must be to 2^k * m to be snapped.

    Returns:
      The new bytes and the number of scale values changed.
    """
    buf = bytearray(content)
    model = schema.Model.GetRootAs(buf, 0)
    changed = 0
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for i in range(graph.TensorsLength()):
            q = graph.Tensors(i).Quantization()
            if q is None or q.ScaleLength() == 0:
                continue
            view = q.ScaleAsNumpy()  # a view into buf
            for j, scale in enumerate(view.tolist()):
                exact = _nearest_short_mantissa(scale, bits, rel_tol)
                if exact is not None and np.float32(exact) != view[j]:
                    view[j] = np.float32(exact)
                    changed += 1
    return bytes(buf), changed
