"""Rewriting .tflite bytes without changing what the model computes.

* `snap_scales`: makes the converter's folded per-channel scales exact (2^l * m_c), in place;
* `compact`: a smaller file (each repeated vector stored once, the empty sentinel buffer
  for tensors without data, short tensor names);
* `pack`: an unpacked (and edited) model back into bytes, as `compact` stores it;
* `append_files`: files appended as a zip archive (TFLite metadata's associated files);
* `set_model_metadata`: a named `Model.metadata` buffer (TFLite metadata, the export target).

Each keeps the TFLite metadata and associated files of a file. Reading a file into records
is `export_tflite.reader`; the rewrites start from its `unpack`.
"""

from __future__ import annotations

import io
import zipfile

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from export_tflite.reader import associated_files, graph_io, nearest_short_mantissa, op_name, unpack

__all__ = ["TENSOR_NAMES", "append_files", "compact", "pack", "set_model_metadata", "snap_scales"]

TENSOR_NAMES = ("full", "short", "none")
_WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
_BUFFER_ALIGNMENT = 16  # as the TFLite converter aligns constant data


def snap_scales(content: bytes, bits: int = 7, rel_tol: float = 1e-6) -> tuple[bytes, int]:
    """Makes every quantization scale that is a float32 ulp or so from 2^k * m exact.

    The TFLite converter folds a BatchNormalization into per-channel weight scales
    2^l * m_c (m_c the 8-bit BN multiplier) in float32 arithmetic and can land one ulp
    below the exact value; bias scales inherit it. The integer weights and biases are
    the same either way, but the runtime's requantization multiplier is then a hair
    off, which flips exact rounding ties. This rewrites those scales in place (the
    file layout does not change: metadata and appended files stay as they are).

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
                exact = nearest_short_mantissa(scale, bits, rel_tol)
                if exact is not None and np.float32(exact) != view[j]:
                    view[j] = np.float32(exact)
                    changed += 1
    return bytes(buf), changed


class _SharingBuilder(flatbuffers.Builder):
    """A flatbuffers Builder that writes each distinct numeric vector and string once.

    A flatbuffer field is an offset, so any number of tables may point at one vector:
    the per-channel zero points of every conv with C output channels (all zeros), the
    per-tensor scales activations share, equal shapes. Byte vectors (constant data)
    keep the converter's 16-byte alignment.
    """

    def __init__(self, size: int):
        super().__init__(size)
        self._vectors: dict[tuple, int] = {}
        self._strings: dict[bytes, int] = {}

    def CreateNumpyVector(self, x):  # noqa: N802 - flatbuffers' name
        key = (x.dtype.str, x.size, x.tobytes())
        if key not in self._vectors:
            if x.dtype == np.uint8 and x.size >= _BUFFER_ALIGNMENT:
                self.StartVector(1, x.size, _BUFFER_ALIGNMENT)
                self.head -= x.size
                self.Bytes[self.head : self.head + x.size] = x.tobytes()
                self._vectors[key] = self.EndVector()
            else:
                self._vectors[key] = super().CreateNumpyVector(x)
        return self._vectors[key]

    def CreateString(self, s, encoding="utf-8", errors="strict"):  # noqa: N802 - flatbuffers' name
        key = s.encode(encoding, errors) if isinstance(s, str) else bytes(s)
        if key not in self._strings:
            self._strings[key] = super().CreateString(key)
        return self._strings[key]


def _short_names(graph: schema.SubGraphT, codes: list[schema.OperatorCodeT]) -> list[bytes]:
    """Readable short names: "<layer>/<Op>" for activations, "<layer>/weights|bias" for constants.

    The converter names a tensor after every TF op fused into it ("model/quant_conv/Conv2D;
    model/quant_bn/FusedBatchNormV3;..."). This keeps the first op's Keras layer (without the
    model's scope and tfmot's "quant_" prefix) and its op; graph inputs and outputs keep
    their names. Repeated names get a "_<k>" suffix.
    """
    full = [bytes(t.name or b"") for t in graph.tensors]
    firsts = [n.split(b";")[0].split(b"/") for n in full]
    io = graph_io(graph)
    scopes = {p[0] for i, p in enumerate(firsts) if len(p) > 1 and i not in io}
    scope = scopes.pop() if len(scopes) == 1 else None  # the model's name scope, on every op's tensors
    names = []
    for parts in firsts:
        if scope is not None and len(parts) > 1 and parts[0] == scope:
            parts = parts[1:]
        if parts[0].startswith(b"quant_") and len(parts[0]) > 6:
            parts = [parts[0][6:], *parts[1:]]
        names.append(b"/".join(parts))
    for op in graph.operators or []:
        if op_name(codes[op.opcodeIndex]) not in _WEIGHTED_OPS:
            continue
        inputs = list(op.inputs)
        if len(inputs) > 1 and inputs[1] >= 0:
            layer = names[inputs[1]].split(b"/")[0]
            names[inputs[1]] = layer + b"/weights"
            if len(inputs) > 2 and inputs[2] >= 0:
                names[inputs[2]] = layer + b"/bias"
    for i in io:
        names[i] = full[i]
    seen: dict[bytes, int] = {}
    unique = []
    for name in names:
        k = seen.get(name, 0)
        seen[name] = k + 1
        unique.append(name if k == 0 else name + b"_%d" % k)
    return unique


def compact(content: bytes, tensor_names: str = "short") -> bytes:
    """Rewrites .tflite bytes smaller without changing what the model computes.

    * identical numeric vectors and strings are stored once (see `_SharingBuilder`);
      per-channel quantization needs a zero point per channel (int64, all zero), which
      for small or channel-heavy networks is a large part of the file;
    * tensors without data point at the schema's empty sentinel buffer 0 instead of an
      empty buffer each, and static shapes drop their duplicate `shape_signature`;
    * tensor names: "full" keeps the converter's (every fused TF op, often 150+ bytes),
      "short" (default) keeps the Keras layer and op (`_short_names`), "none" empties
      them; graph inputs and outputs keep theirs in every mode.

    Operators, constant data, scales and zero points are unchanged, and so are the
    `Model.metadata` entries (TFLite metadata included) and the associated files appended
    after the flatbuffer (`export_tflite.reader.associated_files`). Models whose buffers
    live outside the flatbuffer (over 2 GB) are returned as they are.

    Args:
      content: .tflite bytes (from any writer).
      tensor_names: one of `TENSOR_NAMES`, as above.

    Returns:
      The rewritten bytes; `compact(compact(x, m), m) == compact(x, m)`.

    Raises:
      TfliteFormatError: for bytes that are not a .tflite model.
      ValueError: for an unknown `tensor_names`.
    """
    if tensor_names not in TENSOR_NAMES:
        raise ValueError(f"tensor_names must be one of {TENSOR_NAMES}, got {tensor_names!r}")
    model = unpack(content)
    buffers = model.buffers or []
    if any(b.offset > 1 for b in buffers):
        return content
    used = {0}
    for md in model.metadata or []:
        used.add(md.buffer)
    used.update(model.metadataBuffer if model.metadataBuffer is not None else [])
    for graph in model.subgraphs:
        for t in graph.tensors:
            has_data = (
                0 < t.buffer < len(buffers) and buffers[t.buffer].data is not None and len(buffers[t.buffer].data)
            )
            if has_data or t.isVariable:
                used.add(t.buffer)
    remap = {old: new for new, old in enumerate(sorted(used))}
    model.buffers = [buffers[old] for old in sorted(used)]
    for md in model.metadata or []:
        md.buffer = remap[md.buffer]
    if model.metadataBuffer is not None:
        model.metadataBuffer = [remap[b] for b in model.metadataBuffer]
    for graph in model.subgraphs:
        io = graph_io(graph)
        names = _short_names(graph, model.operatorCodes) if tensor_names == "short" else None
        for i, t in enumerate(graph.tensors):
            t.buffer = remap.get(t.buffer, 0)
            sig = t.shapeSignature
            if sig is not None and t.shape is not None and list(sig) == list(t.shape):
                t.shapeSignature = None
            if names is not None:
                t.name = names[i]
            elif tensor_names == "none" and i not in io:
                t.name = b""
    files = associated_files(content)
    packed = pack(model, len(content))
    return append_files(packed, files) if files else packed


def pack(model: schema.ModelT, size_hint: int = 1024) -> bytes:
    """Serializes an unpacked model (`export_tflite.reader.unpack`), each repeated vector stored once.

    Constant data keeps the converter's 16-byte alignment (see `_SharingBuilder`).

    Args:
      model: the model, as unpacked and possibly edited.
      size_hint: the initial builder size in bytes (it grows as needed).

    Returns:
      .tflite bytes (the flatbuffer alone: associated files are `append_files`).
    """
    builder = _SharingBuilder(max(size_hint, 1024))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def set_model_metadata(model: schema.ModelT, name: str, data: bytes) -> None:
    """Sets the unpacked model's `Model.metadata` entry `name` to a buffer holding `data`, in place.

    An entry of that name is replaced (one that points at no buffer is dropped first).

    Raises:
      ValueError: for a model whose buffers live outside the flatbuffer (over 2 GB).
    """
    buffers = model.buffers or []
    if any(b.offset > 1 for b in buffers):
        raise ValueError(
            f"cannot add the {name} metadata to a model whose buffers live outside the flatbuffer (over 2 GB)"
        )
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, np.uint8)

    def named(entry) -> bool:
        entry_name = entry.name
        return (
            entry_name.decode("utf-8", "replace") if isinstance(entry_name, bytes) else str(entry_name or "")
        ) == name

    entries = model.metadata or []
    entry = next((e for e in entries if named(e) and 0 < e.buffer < len(buffers)), None)
    if entry is not None:
        buffers[entry.buffer] = buffer
    else:
        entries = [e for e in entries if not named(e)]
        buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = name.encode()
        entry.buffer = len(buffers) - 1
        entries.append(entry)
    model.buffers, model.metadata = buffers, entries


def append_files(content: bytes, files: dict[str, bytes]) -> bytes:
    """Appends files to .tflite bytes as a zip archive, as TFLite metadata's associated files travel.

    Stored uncompressed (readers such as tflite-support's map them in place) with a fixed
    timestamp, so the same model and files give the same bytes. TFLite runtimes ignore
    the archive.

    Args:
      content: .tflite bytes without an appended archive (`pack`'s output).
      files: name -> contents.

    Returns:
      The bytes with the archive appended.

    Raises:
      ValueError: if `content` already ends with an archive (pack the model again first).
    """
    if zipfile.is_zipfile(io.BytesIO(content)):
        raise ValueError(
            "the .tflite bytes already end with a zip archive: pack the model again before appending files"
        )
    out = io.BytesIO(content)
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return out.getvalue()
