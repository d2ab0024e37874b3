"""Verifies that a .tflite model is fully integer with FAQ's power-of-two scales.

  python -m export_tflite.verify model.tflite [--edgetpu] [--micro] [--json] [--sample_data=x.npy]

Reads the flatbuffer itself and reports the op list with versions, every tensor's dtype
and scale, whether each scale is a power of two (or, for per-channel folded weights, a
power of two times an 8-bit BN constant), and Edge TPU compatibility by its documented
rules (int8/uint8 only, static shapes, batch 1, mapped ops within version limits); the
Edge TPU compiler itself cannot run here, and the report says so. With --micro it checks what
TensorFlow Lite for Microcontrollers runs (its op resolver's ops, int8/int16/int32 tensors,
packed INT4 only as conv, depthwise and per-tensor dense weights, static shapes) and measures
the microcontroller footprint (flash, TFLM's tensor arena). It also prints the TFLite
metadata (`export_tflite.metadata`): the model's name, class labels, input normalization and
what an app feeds the input; a file without it gets a note, labels that do not match the
outputs a violation.

Exit codes: 0 no violations; 1 violations (the report lists them all); 2 a user error (one
line on stderr): a missing, empty or damaged .tflite file, an unreadable --sample_data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys

import numpy as np

from export_tflite.cli import EXIT_OK, EXIT_VIOLATIONS, UsageError, fail, read_tflite
from export_tflite.metadata import input_recipe, read_metadata
from export_tflite.reader import ModelInfo, TfliteFormatError, file_target, nearest_short_mantissa, read_model

__all__ = ["Report", "verify", "is_power_of_two", "is_pow2_times_int8"]

_INTEGER = {"INT8", "UINT8", "INT32", "INT4", "INT16", "INT64"}
# Ops the Edge TPU compiler maps, with the highest op version its documentation lists.
EDGETPU_OPS = {
    "ADD": 2, "AVERAGE_POOL_2D": 2, "CONCATENATION": 3, "CONV_2D": 3, "DEPTHWISE_CONV_2D": 3,
    "FULLY_CONNECTED": 4, "L2_NORMALIZATION": 2, "LOGISTIC": 2, "MAX_POOL_2D": 2, "MAXIMUM": 2,
    "MEAN": 2, "MINIMUM": 2, "MUL": 2, "PAD": 2, "PACK": 2, "QUANTIZE": 2, "DEQUANTIZE": 2,
    "RELU": 2, "RELU6": 2, "RELU_N1_TO_1": 2, "RESHAPE": 1, "RESIZE_BILINEAR": 3,
    "RESIZE_NEAREST_NEIGHBOR": 3, "SOFTMAX": 2, "SPACE_TO_DEPTH": 2, "SPLIT": 2, "SQUEEZE": 1,
    "STRIDED_SLICE": 2, "SUB": 2, "SUM": 2, "TANH": 2, "TRANSPOSE": 2, "SLICE": 2, "GATHER": 2,
}  # fmt: skip

# The builtin ops of tflite-micro's Python interpreter (its python_ops_resolver.cc), by TFLite name.
MICRO_OPS = frozenset(
    """
    ABS ADD ADD_N ARG_MAX ARG_MIN ASSIGN_VARIABLE AVERAGE_POOL_2D BATCH_MATMUL BATCH_TO_SPACE_ND
    BROADCAST_ARGS BROADCAST_TO CALL_ONCE CAST CEIL CONCATENATION CONV_2D COS CUMSUM DEPTH_TO_SPACE
    DEPTHWISE_CONV_2D DEQUANTIZE DIV DYNAMIC_UPDATE_SLICE ELU EMBEDDING_LOOKUP EQUAL EXP EXPAND_DIMS
    FILL FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GATHER_ND GREATER GREATER_EQUAL HARD_SWISH IF
    L2_NORMALIZATION L2_POOL_2D LEAKY_RELU LESS LESS_EQUAL LOG LOG_SOFTMAX LOGICAL_AND LOGICAL_NOT
    LOGICAL_OR LOGISTIC MAX_POOL_2D MAXIMUM MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL PACK PAD PADV2
    PRELU QUANTIZE READ_VARIABLE REDUCE_MAX REDUCE_MIN RELU RELU6 RESHAPE RESIZE_BILINEAR
    RESIZE_NEAREST_NEIGHBOR REVERSE_V2 ROUND RSQRT SELECT_V2 SHAPE SIN SLICE SOFTMAX SPACE_TO_BATCH_ND
    SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM SVDF TANH
    TRANSPOSE TRANSPOSE_CONV UNIDIRECTIONAL_SEQUENCE_LSTM UNPACK VAR_HANDLE WHILE ZEROS_LIKE
""".split()
)
_MICRO_INT4_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")  # packed INT4 weights, unpacked by the kernel


def is_power_of_two(scale: float) -> bool:
    """True if `scale` is exactly 2^k."""
    if not (scale > 0 and math.isfinite(scale)):
        return False
    mantissa, _ = math.frexp(scale)
    return mantissa == 0.5


def is_pow2_times_int8(scale: float, rel_tol: float = 0.0) -> bool:
    """True if `scale` = 2^k * m with an integer 1 <= |m| <= 127 (BN folded per channel).

    Exact by default: `export_tflite.convert` repairs the converter's one-ulp folding
    error (`export_tflite.rewriter.snap_scales`), and the runtime's requantization
    depends on the exact value.
    """
    return nearest_short_mantissa(scale, 7, rel_tol) is not None  # |m| has at most 7 bits


@dataclasses.dataclass
class Report:
    """The verifier's findings. `violations` empty means the model passed.

    `metadata` is the file's TFLite metadata (`ImageClassifierMetadata`'s fields, and "feed":
    what an app feeds the input), None for a file without it.
    """

    ops: list[dict]
    tensors: list[dict]
    violations: list[str]
    notes: list[str]
    level_counts: dict[str, int]
    metadata: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self) | {"ok": self.ok}, indent=1)

    def text(self) -> str:
        lines = ["ops:"]
        for op in self.ops:
            lines.append(f"  {op['index']:3d} {op['name']} v{op['version']}")
        lines.append("tensors (non-constant):")
        for t in self.tensors:
            if not t["constant"]:
                lines.append(f"  {t['name'][:70]:70s} {t['dtype']:8s} scale={t['scale']} pow2={t['scale_ok']}")
        for name, n in self.level_counts.items():
            lines.append(f"  levels used by {name}: {n}")
        if self.metadata is not None:
            lines += _metadata_lines(self.metadata)
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"VIOLATION: {v}" for v in self.violations]
        lines.append(
            "OK: fully integer, power-of-two scales" if self.ok else f"FAILED: {len(self.violations)} violation(s)"
        )
        return "\n".join(lines)


def _metadata_lines(metadata: dict, max_labels: int = 5) -> list[str]:
    """The metadata part of `Report.text`."""
    version = f" {metadata['version']}" if metadata["version"] else ""
    lines = [f"metadata: {metadata['name']}{version}"]
    if metadata["description"]:
        lines.append(f"  description: {metadata['description']}")
    labels = metadata["labels"]
    if labels is None:
        lines.append("  labels: none")
    else:
        more = ", ..." if len(labels) > max_labels else ""
        lines.append(f"  labels: {len(labels)} ({', '.join(labels[:max_labels])}{more})")
    if metadata["mean"] is None:
        lines.append("  input normalization: none")
    else:
        mean, std = (", ".join(f"{v:.6g}" for v in metadata[k]) for k in ("mean", "std"))
        lines.append(
            f"  input normalization: (pixel - mean) / std, mean [{mean}], std [{std}], {metadata['color_space']}"
        )
    lines.append(f"  input: {metadata['feed']}")
    return lines


def _check_metadata(content: bytes, info: ModelInfo, violations: list[str], notes: list[str]) -> dict | None:
    """The file's metadata for the report, with its violations and notes added."""
    try:
        metadata = read_metadata(content)
    except TfliteFormatError as e:
        violations.append(f"metadata: {e}")
        return None
    if metadata is None:
        notes.append(
            "no TFLite metadata (class labels, input normalization): python -m export_tflite writes it "
            "unless --no_metadata; export_tflite.add_metadata adds it to any file"
        )
        return None
    inp, out = info.tensors[info.inputs[0]], info.tensors[info.outputs[0]]
    classes = out.shape[-1] if out.shape else 1
    if metadata.labels is not None and len(metadata.labels) != classes:
        violations.append(f"metadata: {len(metadata.labels)} labels for the {classes} outputs of '{out.name}'")
    channels = inp.shape[-1] if inp.shape else 1
    for field in ("mean", "std"):
        values = getattr(metadata, field)
        if values is not None and len(values) not in (1, channels):
            violations.append(f"metadata: {len(values)} {field} values for the {channels} channels of '{inp.name}'")
    return dataclasses.asdict(metadata) | {"feed": input_recipe(metadata, inp)}


def _four_bit_tensors(info: ModelInfo) -> list[int]:
    """Outputs of MINIMUM ops: FAQ's 4-bit activations (a clip to 15 steps, int8 storage)."""
    return [o for op in info.ops if op.name == "MINIMUM" for o in op.outputs]


def _count_levels(content: bytes, tensor_indices: list[int], sample: np.ndarray) -> dict[int, int]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_content=content,
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], [1, *inp["shape"][1:]])
    interp.allocate_tensors()
    seen: dict[int, set] = {i: set() for i in tensor_indices}
    for x in sample:
        x = x[None]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interp.invoke()
        for i in tensor_indices:
            seen[i].update(np.unique(interp.get_tensor(i)).tolist())
    return {i: len(v) for i, v in seen.items()}


def _micro_violations(info: ModelInfo) -> list[str]:
    """What TFLM's kernels do not run: ops outside its resolver, tensor types and shapes it refuses."""
    found = []
    for op in info.ops:
        if op.name not in MICRO_OPS:
            found.append(f"TFLM: op {op.index} {op.name} is not in TFLM's op resolver")
        for position, t in ((k, info.tensors[i]) for k, i in enumerate(op.inputs) if i >= 0):
            if t.dtype == "INT4":
                if op.name not in _MICRO_INT4_OPS or position != 1:
                    found.append(
                        f"TFLM: INT4 tensor '{t.name}' at op {op.index} {op.name} (INT4 only as conv/dense weights)"
                    )
                elif op.name == "FULLY_CONNECTED" and len(t.scales) > 1:
                    found.append(f"TFLM: per-channel INT4 weights '{t.name}' of FULLY_CONNECTED (per-tensor only)")
            elif t.dtype == "UINT8" and op.name not in ("QUANTIZE", "DEQUANTIZE"):
                found.append(f"TFLM: uint8 tensor '{t.name}' at op {op.index} {op.name} (int8 kernels only)")
    for t in info.tensors:
        if any(s < 0 for s in t.shape_signature):
            found.append(f"TFLM: tensor '{t.name}' has a dynamic shape {t.shape_signature} (TFLM needs static shapes)")
    return found


def verify(content: bytes, edgetpu: bool = False, sample_data: np.ndarray | None = None, micro: bool = False) -> Report:
    """Checks a .tflite model. See the module docstring for the rules.

    Damaged TFLite metadata, or labels that do not match the outputs, are violations; the
    metadata itself is in `Report.metadata`.

    Args:
      content: the .tflite bytes (with any associated files appended).
      edgetpu: also check the Edge TPU rules.
      sample_data: inputs (float, as the Keras model takes them) to count the integer
        levels each 4-bit tensor uses.
      micro: also check what TFLM runs (`MICRO_OPS`, its tensor types, static shapes).

    Raises:
      TfliteFormatError: for bytes that are not a .tflite model.
    """
    info = read_model(content)
    violations, notes = [], []
    io = set(info.inputs) | set(info.outputs)
    ops = [{"index": o.index, "name": o.name, "version": o.version} for o in info.ops]
    for op in info.ops:
        for t in (info.tensors[i] for i in op.inputs + op.outputs if i >= 0):
            if t.dtype not in _INTEGER and not (t.index in io and op.name in ("QUANTIZE", "DEQUANTIZE")):
                violations.append(f"float tensor '{t.name}' ({t.dtype}) at op {op.index} {op.name}")
        if op.name.startswith("CUSTOM") or op.name == "DELEGATE":
            violations.append(f"op {op.index} {op.name} is not a builtin integer op")
    tensors = []
    for t in info.tensors:
        per_channel = len(t.scales) > 1
        if t.dtype in ("INT8", "UINT8", "INT4") and t.scales:
            check = is_pow2_times_int8 if per_channel else is_power_of_two
            ok = all(check(s) for s in t.scales)
            if not ok:
                kind = "power of two times an 8-bit BN constant" if per_channel else "a power of two"
                bad = [s for s in t.scales if not check(s)][:3]
                violations.append(f"tensor '{t.name}' scale {bad} is not {kind}")
        else:
            ok = None
        tensors.append(
            {
                "index": t.index,
                "name": t.name,
                "dtype": t.dtype,
                "shape": t.shape,
                "scale": t.scales[0] if len(t.scales) == 1 else (f"{len(t.scales)} per-channel" if t.scales else None),
                "zero_point": t.zero_points[0] if len(t.zero_points) == 1 else None,
                "scale_ok": ok,
                "constant": t.is_constant,
            }
        )
    if info.num_subgraphs != 1:
        violations.append(f"{info.num_subgraphs} subgraphs (expected 1)")
    level_counts = {}
    four = _four_bit_tensors(info)
    if four and sample_data is not None:
        for i, n in _count_levels(content, four, sample_data).items():
            level_counts[info.tensors[i].name] = n
            if n > 16:
                violations.append(f"4-bit tensor '{info.tensors[i].name}' holds {n} levels (> 16)")
    elif four:
        notes.append(f"{len(four)} 4-bit activation tensors; pass sample data to count their levels")
    if edgetpu:
        notes.append("Edge TPU: checked against the documented rules; the Edge TPU compiler was not run")
        for t in info.tensors:
            if t.dtype not in ("INT8", "UINT8", "INT32"):
                violations.append(f"Edge TPU: tensor '{t.name}' has type {t.dtype} (int8/uint8 only; int32 for biases)")
            if any(s < 0 for s in t.shape_signature):
                violations.append(f"Edge TPU: tensor '{t.name}' has a dynamic shape {t.shape_signature}")
        for i in info.inputs:
            if info.tensors[i].shape[:1] != [1]:
                violations.append(f"Edge TPU: input batch is {info.tensors[i].shape[:1]}, must be 1")
        for op in info.ops:
            limit = EDGETPU_OPS.get(op.name)
            if limit is None:
                violations.append(f"Edge TPU: op {op.index} {op.name} is not mapped by the Edge TPU compiler")
            elif op.version > limit:
                violations.append(f"Edge TPU: op {op.index} {op.name} v{op.version} exceeds the supported v{limit}")
    if micro:
        violations += _micro_violations(info)
    target = file_target(content)
    if target is not None:
        notes.append(f"exported for the {target} target (python -m export_tflite --target)")
    metadata = _check_metadata(content, info, violations, notes) if info.inputs and info.outputs else None
    return Report(ops, tensors, violations, notes, level_counts, metadata)


def _run(args: argparse.Namespace) -> Report:
    """The report on `args.model`; user errors raise `UsageError`."""
    content = read_tflite(args.model)
    if not args.sample_data:
        return verify(content, args.edgetpu, micro=args.micro)
    try:
        sample = np.load(args.sample_data)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read --sample_data={args.sample_data} (a .npy of float inputs): {e}") from e
    try:
        return verify(content, args.edgetpu, sample, micro=args.micro)
    except ValueError as e:  # inputs that do not fit the model's input shape
        raise UsageError(f"--sample_data={args.sample_data} does not fit {args.model}: {e}") from e


def _micro(args: argparse.Namespace):
    """The TFLM footprint of `args.model`; user errors raise `UsageError`."""
    from export_tflite.micro import micro_report

    try:
        return micro_report(read_tflite(args.model))
    except ImportError as e:
        raise UsageError(f"--micro: {e}") from e
    except RuntimeError as e:
        raise UsageError(f"--micro: TFLM cannot run {args.model}: {e}") from e


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export_tflite.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="the .tflite file")
    parser.add_argument("--edgetpu", action="store_true", help="also check the Edge TPU rules")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--sample_data", help=".npy of float inputs, to count 4-bit levels")
    parser.add_argument(
        "--micro",
        action="store_true",
        help="also TFLM's rules and the microcontroller footprint: flash, TFLM arena (needs tflite-micro)",
    )
    args = parser.parse_args(argv)
    try:
        report = _run(args)
        micro = _micro(args) if args.micro else None
    except UsageError as e:
        return fail(parser.prog, e)
    if args.json:
        data = json.loads(report.to_json())
        if micro is not None:
            data["micro"] = dataclasses.asdict(micro)
        print(json.dumps(data, indent=1))
    else:
        print(report.text() + ("\n" + micro.text() if micro is not None else ""))
    return EXIT_OK if report.ok else EXIT_VIOLATIONS


if __name__ == "__main__":
    sys.exit(main())
