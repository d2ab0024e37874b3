"""Microcontrollers: TensorFlow Lite for Microcontrollers (TFLM) as a runtime, and what a model needs.

`MicroInterpreter` runs a .tflite file on TFLM's reference kernels through the
`tflite-micro` package's Python interpreter, behind the few LiteRT interpreter methods
`export_tflite.evaluate.TfliteRunner` uses (so `--runtime=micro` works everywhere a
runtime is chosen). `micro_report` says whether a model fits a device:

- flash: the .tflite bytes, split into weights, biases, metadata and the rest (graph,
  operator tables, names);
- SRAM: the tensor arena TFLM allocates for it, measured by TFLM's recording allocator
  (head: activations, planned to share memory; tail: persistent per-op data), and the
  largest single activation tensor.

Example:

  report = micro_report(open("model.tflite", "rb").read())
  print(report.text())
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import tempfile

import numpy as np

from export_tflite.reader import read_model, unpack

__all__ = ["MicroInterpreter", "MicroReport", "micro_report", "MICRO_INSTALL"]

MICRO_INSTALL = "pip install tflite-micro (or pip install 'faq_tf[micro]')"

_BYTES = {"INT8": 1, "UINT8": 1, "INT4": 0.5, "INT16": 2, "INT32": 4, "FLOAT32": 4, "INT64": 8, "BOOL": 1}


def _runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as e:
        raise ImportError(f"the micro runtime needs the tflite-micro package: {MICRO_INSTALL}") from e
    return runtime


class MicroInterpreter:
    """A TFLM interpreter with LiteRT's interface (one input, one output, as faq_tf exports).

    Args:
      content: .tflite bytes.
      arena_size: tensor arena bytes; None gives 10x the file size plus 64 KiB.

    Raises:
      ImportError: if tflite-micro is not installed (says how to install it).
      RuntimeError: if TFLM cannot run the model (an op it lacks, an arena too small).
    """

    def __init__(self, content: bytes, arena_size: int | None = None):
        runtime = _runtime()
        size = arena_size if arena_size is not None else 10 * len(content) + 65536
        self.interpreter = runtime.Interpreter.from_bytes(bytes(content), arena_size=size)
        self._outputs: dict[int, np.ndarray] = {}

    @staticmethod
    def _details(raw: dict, index: int) -> dict:
        q = raw["quantization_parameters"]
        scale = float(q["scales"][0]) if len(q["scales"]) else 0.0
        zero = int(q["zero_points"][0]) if len(q["zero_points"]) else 0
        return {"index": index, "shape": np.asarray(raw["shape"]), "dtype": raw["dtype"], "quantization": (scale, zero)}

    def get_input_details(self) -> list[dict]:
        return [self._details(self.interpreter.get_input_details(0), 0)]

    def get_output_details(self) -> list[dict]:
        return [self._details(self.interpreter.get_output_details(0), 0)]

    def allocate_tensors(self) -> None:
        """TFLM allocates when it is built; kept for LiteRT's interface."""

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        self.interpreter.set_input(value, index)

    def invoke(self) -> None:
        self.interpreter.invoke()

    def get_tensor(self, index: int) -> np.ndarray:
        return self.interpreter.get_output(index)

    def arena_usage(self) -> dict[str, int]:
        """The arena bytes TFLM allocated: total, head (activations), tail (persistent).

        Read from TFLM's RecordingMicroAllocator, which prints them to the C stderr.
        """
        with tempfile.TemporaryFile() as captured:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(captured.fileno(), 2)
            try:
                self.interpreter.print_allocations()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
        usage = {}
        for part in ("total", "head", "tail"):
            match = re.search(rf"Arena allocation {part} (\d+) bytes", text)
            if match is None:
                raise RuntimeError(f"TFLM did not report its arena {part}; its output was: {text[:300]!r}")
            usage[part] = int(match.group(1))
        return usage


@dataclasses.dataclass(frozen=True)
class MicroReport:
    """Flash and SRAM a .tflite model needs on a microcontroller (bytes).

    Attributes:
      file_bytes: the whole .tflite file (what goes into flash).
      weight_bytes: constant tensors other than biases (packed INT4 counts half a byte).
      bias_bytes: constant int32 tensors (biases, and any small shape constants).
      metadata_bytes: the metadata buffers (labels, normalization).
      other_bytes: the rest: the graph, operator tables, quantization parameters, names.
      arena_bytes: the tensor arena TFLM allocated (SRAM), measured by TFLM.
      arena_head_bytes: its part for activations (planned, so tensors share memory).
      arena_tail_bytes: its persistent part (per-op data, tensor structs).
      largest_activation_bytes: the largest non-constant tensor.
      largest_activation: that tensor's name.
    """

    file_bytes: int
    weight_bytes: int
    bias_bytes: int
    metadata_bytes: int
    other_bytes: int
    arena_bytes: int
    arena_head_bytes: int
    arena_tail_bytes: int
    largest_activation_bytes: int
    largest_activation: str

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    def text(self) -> str:
        return "\n".join(
            [
                "microcontroller (TFLM) footprint:",
                f"  flash  {self.file_bytes:>9,d} bytes: weights {self.weight_bytes:,d}, biases {self.bias_bytes:,d}, "
                f"metadata {self.metadata_bytes:,d}, graph and tables {self.other_bytes:,d}",
                f"  SRAM   {self.arena_bytes:>9,d} bytes of tensor arena (measured by TFLM): activations "
                f"{self.arena_head_bytes:,d}, persistent {self.arena_tail_bytes:,d}",
                f"  largest activation {self.largest_activation_bytes:,d} bytes ({self.largest_activation})",
            ]
        )


def _tensor_bytes(dtype: str, shape: list[int]) -> int:
    return int(np.ceil(_BYTES.get(dtype, 4) * int(np.prod(shape or [1]))))


def micro_report(content: bytes, arena_size: int | None = None) -> MicroReport:
    """Measures the flash and SRAM `content` needs under TFLM (see `MicroReport`).

    Raises:
      TfliteFormatError: for a damaged file.
      ImportError: without tflite-micro.
      RuntimeError: if TFLM cannot allocate or run the model.
    """
    info = read_model(content)
    model = unpack(content)
    weights = biases = 0
    largest, largest_name = 0, "-"
    for t in info.tensors:
        size = _tensor_bytes(t.dtype, t.shape)
        if t.is_constant:
            if t.dtype == "INT32":
                biases += size
            else:
                weights += size
        elif size > largest:
            largest, largest_name = size, t.name
    metadata = 0
    for entry in model.metadata or []:
        data = model.buffers[entry.buffer].data
        metadata += 0 if data is None else len(data)
    interpreter = MicroInterpreter(content, arena_size)
    details = interpreter.get_input_details()[0]
    interpreter.set_tensor(0, np.zeros(details["shape"], details["dtype"]))
    interpreter.invoke()
    arena = interpreter.arena_usage()
    return MicroReport(
        file_bytes=len(content),
        weight_bytes=weights,
        bias_bytes=biases,
        metadata_bytes=metadata,
        other_bytes=len(content) - weights - biases - metadata,
        arena_bytes=arena["total"],
        arena_head_bytes=arena["head"],
        arena_tail_bytes=arena["tail"],
        largest_activation_bytes=largest,
        largest_activation=largest_name,
    )
