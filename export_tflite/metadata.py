"""Standard TFLite metadata for an image classifier: its class labels and input normalization.

Apps, TFLite's code generators and task libraries read what a model's input and output
mean from the TFLite metadata schema (tflite-support's `metadata_schema.fbs`, file
identifier "M001"). A model carries it as tflite-support's MetadataPopulator writes it:

* a `Model.metadata` entry named "TFLITE_METADATA" whose buffer holds the ModelMetadata
  flatbuffer (the converter's own entries, `min_runtime_version` and `CONVERSION_METADATA`,
  stay);
* associated files (labels.txt) appended after the flatbuffer as an uncompressed zip
  archive, which TFLite runtimes ignore (`export_tflite.rewriter.append_files`).

`add_metadata` writes, for the one input and one output of the model:

* input: ImageProperties (color space, size), a NormalizationOptions process unit (mean,
  std) and Stats (the float input's min and max for pixels 0 and 255);
* output: FeatureProperties, labels.txt as a TENSOR_AXIS_LABELS associated file and,
  if given, Stats of the scores.

The maintained writer (the tflite-support package) does not install next to faq_tf's
dependencies (it pins protobuf < 4; its compiled parts are numpy 1's), so this module
writes and reads the schema's tables itself with `flatbuffers`; tests/test_metadata.py
reads its output back with tflite-support's generated code.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import flatbuffers
import numpy as np
from flatbuffers import encode, packer, table
from flatbuffers import number_types as N

from export_tflite.reader import TensorInfo, TfliteFormatError, associated_files, model_metadata, read_model, unpack
from export_tflite.rewriter import append_files, pack, set_model_metadata

__all__ = [
    "ImageClassifierMetadata",
    "add_metadata",
    "input_recipe",
    "normalization_of",
    "parse_labels",
    "read_metadata",
]

METADATA_NAME = "TFLITE_METADATA"
_IDENTIFIER = b"M001"
_MIN_PARSER_VERSION = "1.0.0"  # every field written here is in the schema's first version
_LABELS_FILE = "labels.txt"
_COLOR_SPACES = {"UNKNOWN": 0, "RGB": 1, "GRAYSCALE": 2}  # ColorSpaceType
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES = 1, 2  # union ContentProperties
_NORMALIZATION_OPTIONS = 1  # union ProcessUnitOptions

# The fields of each table written or read here, in the schema's order: field k is vtable
# slot k. A union takes two slots, "<name>_type" then "<name>".
_FIELDS = {
    "ModelMetadata": "name description version subgraph_metadata author license associated_files min_parser_version",
    "SubGraphMetadata": "name description input_tensor_metadata output_tensor_metadata",
    "TensorMetadata": "name description dimension_names content process_units stats associated_files",
    "Content": "content_properties_type content_properties range",
    "FeatureProperties": "",
    "ImageProperties": "color_space default_size",
    "ImageSize": "width height",
    "ProcessUnit": "options_type options",
    "NormalizationOptions": "mean std",
    "Stats": "max min",
    "AssociatedFile": "name description type locale version",
}


def _float32(value: float) -> float:
    """`value` as the schema stores it (float32), written as its shortest decimal (58.395, not 58.39500045...)."""
    return float(str(np.float32(value)))


def _floats(name: str, values) -> tuple[float, ...]:
    values = tuple(_float32(v) for v in values)
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be one or more finite numbers, got {values}")
    return values


@dataclasses.dataclass(frozen=True)
class ImageClassifierMetadata:
    """What `add_metadata` writes for an image classifier: one image input, one score per class.

    Input normalization has the schema's meaning: for pixels in [0, 255], the model's float
    input is (pixel - mean) / std, per channel or one value for all channels. An integer
    input then holds round(that / scale) + zero_point (`input_recipe` says it for a file).
    Numbers are kept as the schema stores them (float32, written as their shortest decimal).

    Attributes:
      name: the model's name.
      mean: the input normalization's mean, one value or one per channel; None (with std)
        when the model's preprocessing is not a per-channel affine map of the pixels
        (see `normalization_of`): the metadata then gives none.
      std: the input normalization's standard deviation (positive), as mean.
      description: what the model is, for people.
      version: the model's version ("" leaves it out; as author and license).
      author: who made the model.
      license: the model's license.
      labels: the class names, one per output, in output order (labels.txt), or None.
      color_space: "RGB", "GRAYSCALE" or "UNKNOWN"; None takes it from the input's
        channels (3: RGB, 1: GRAYSCALE, else UNKNOWN).
      input_name: the input's name for code generators.
      input_description: what the input holds.
      output_name: the output's name for code generators.
      output_description: what the output holds.
      output_range: (min, max) of the output scores, or None.

    Raises:
      ValueError: for a bad field, naming it (labels that are empty or span lines, a std
        that is not positive, mean and std of different lengths, ...).
    """

    name: str
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    description: str = ""
    version: str = ""
    author: str = ""
    license: str = ""
    labels: tuple[str, ...] | None = None
    color_space: str | None = None
    input_name: str = "image"
    input_description: str = "An image: pixels in [0, 255], normalized as (pixel - mean) / std, then quantized."
    output_name: str = "scores"
    output_description: str = "One score per class, in the order of the labels."
    output_range: tuple[float, float] | None = None

    def __post_init__(self):
        strings = ("name", "description", "version", "author", "license")
        for field in (*strings, "input_name", "input_description", "output_name", "output_description"):
            if not isinstance(getattr(self, field), str):
                raise ValueError(f"{field} must be a string, got {getattr(self, field)!r}")
        if not self.name:
            raise ValueError("name must not be empty")
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"mean and std must both be given or both be None, got mean={self.mean}, std={self.std}")
        if self.mean is not None:
            mean, std = _floats("mean", self.mean), _floats("std", self.std)
            if min(std) <= 0:
                raise ValueError(f"std must be positive, got {std}")
            if len(mean) != len(std) and 1 not in (len(mean), len(std)):
                raise ValueError(f"mean and std must have one value or one per channel each, got {mean} and {std}")
            object.__setattr__(self, "mean", mean)
            object.__setattr__(self, "std", std)
        if self.labels is not None:
            labels = tuple(self.labels)
            if not labels:
                raise ValueError("labels must not be empty (None writes no labels)")
            for i, label in enumerate(labels):
                if not isinstance(label, str) or not label.strip() or "\n" in label or "\r" in label:
                    raise ValueError(f"labels[{i}] must be a non-empty name on one line, got {label!r}")
            object.__setattr__(self, "labels", labels)
        if self.color_space is not None and self.color_space not in _COLOR_SPACES:
            raise ValueError(f"color_space must be one of {sorted(_COLOR_SPACES)} or None, got {self.color_space!r}")
        if self.output_range is not None:
            low, high = _floats("output_range", self.output_range) if len(self.output_range) == 2 else (0, 0)
            if not low < high:
                raise ValueError(f"output_range must be (min, max) with min < max, got {self.output_range}")
            object.__setattr__(self, "output_range", (low, high))

    def input_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(min, max) of the float input, per channel as mean and std: pixels 0 and 255 normalized."""
        if self.mean is None:
            return None
        n = max(len(self.mean), len(self.std))
        mean = self.mean * n if len(self.mean) == 1 else self.mean
        std = self.std * n if len(self.std) == 1 else self.std
        return tuple((0 - m) / s for m, s in zip(mean, std)), tuple((255 - m) / s for m, s in zip(mean, std))

    def summary(self, max_labels: int = 5) -> str:
        """One line for people: the name, the labels (count and the first few) and the normalization."""
        if self.labels is None:
            labels = "no labels"
        else:
            more = ", ..." if len(self.labels) > max_labels else ""
            labels = f"{len(self.labels)} labels ({', '.join(self.labels[:max_labels])}{more})"
        if self.mean is None:
            norm = "no input normalization"
        else:
            norm = f"input normalization (pixel - mean) / std with mean {_fmt(self.mean)}, std {_fmt(self.std)}"
        return f"{self.name}: {labels}; {norm}"


def _fmt(values) -> str:
    text = [f"{v:.6g}" for v in values]
    return text[0] if len(text) == 1 else "(" + ", ".join(text) + ")"


def parse_labels(text: str) -> tuple[str, ...]:
    """Class names from a labels file: one per line, in output order (faq-train's labels.txt).

    Args:
      text: the file's text; trailing empty lines are ignored.

    Returns:
      The names.

    Raises:
      ValueError: for a file with no names or an empty line between names (naming the line).
    """
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError("no class names in it (expected one per line, in output order)")
    for i, line in enumerate(lines):
        if not line.strip():
            raise ValueError(f"line {i + 1} is empty (expected one class name per line, in output order)")
    return tuple(lines)


def normalization_of(preprocess: Callable, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The input normalization (mean, std) that a preprocessing function applies, measured.

    The function is run on images of 0s, of 255s and of a pattern that varies over pixels
    and channels. If its output is a * pixel + b per channel (the same on every pixel, each
    channel from itself only), then mean = -b / a and std = 1 / a, the schema's
    (pixel - mean) / std. The values are rounded to what a float32 measurement resolves
    (mean to 1e-4, std to 6 significant digits), and one value is returned for all channels
    when they agree.

    Args:
      preprocess: maps float pixels in [0, 255], shape (N, H, W, channels), to the model's
        input (`faq_tf.models.ModelSpec.preprocess`, `faq_tf.models.PREPROCESSING`).
      channels: the image channels.

    Returns:
      (mean, std), or None when the function is not such a map: Keras' "caffe" mode
      (ResNet50, VGG) swaps RGB to BGR, a function may fail on or reshape the probe, or
      reverse the pixel order (a <= 0).

    Raises:
      ValueError: if channels is not a positive integer.
    """
    from faq_tf.compat import tf

    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels!r}")
    probe = np.zeros((3, 2, 3, channels), np.float32)
    probe[1] = 255.0
    pattern = np.arange(2 * 3 * channels).reshape(2, 3, channels)
    probe[2] = (17 + 53 * pattern) % 256  # every pixel and channel different
    try:
        out = np.asarray(preprocess(tf.constant(probe)), np.float64)
    except (ValueError, TypeError, tf.errors.OpError):  # e.g. a 3-channel mean on a grayscale image
        return None
    if out.shape != probe.shape or not np.all(np.isfinite(out)):
        return None
    b = out[0, 0, 0]
    a = (out[1, 0, 0] - b) / 255.0
    tol = 1e-5 * max(1.0, float(np.abs(out).max()))
    if np.any(a <= 0) or not np.allclose(out, a * probe.astype(np.float64) + b, rtol=0, atol=tol):
        return None
    mean = tuple(round(float(-bc / ac), 4) + 0.0 for ac, bc in zip(a, b))  # + 0.0: no -0.0
    std = tuple(float(f"{1 / ac:.6g}") for ac in a)
    if len(set(mean)) == 1 and len(set(std)) == 1:
        mean, std = mean[:1], std[:1]
    return mean, std


# --- writing ---


def _table(b: flatbuffers.Builder, kind: str, **fields) -> int:
    """Writes one table. Fields: an offset (int) already written, a ("Int8"|"Uint8"|"Uint32", value) scalar, or None."""
    names = _FIELDS[kind].split()
    b.StartObject(len(names))
    for field, value in fields.items():
        if value is None:
            continue
        slot = names.index(field)
        if isinstance(value, tuple):
            getattr(b, f"Prepend{value[0]}Slot")(slot, value[1], 0)
        else:
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
    return b.EndObject()


def _tables(b: flatbuffers.Builder, offsets: list[int]) -> int | None:
    if not offsets:
        return None
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def _string(b: flatbuffers.Builder, text: str) -> int | None:
    return b.CreateString(text) if text else None


def _float_vector(b: flatbuffers.Builder, values) -> int | None:
    return None if values is None else b.CreateNumpyVector(np.asarray(values, np.float32))


def _model_metadata(md: ImageClassifierMetadata, height: int, width: int, color_space: str) -> bytes:
    """The ModelMetadata flatbuffer (with its "M001" identifier) for `md`."""
    b = flatbuffers.Builder(1024)
    size = _table(b, "ImageSize", width=("Uint32", width), height=("Uint32", height))
    image = _table(b, "ImageProperties", color_space=("Int8", _COLOR_SPACES[color_space]), default_size=size)
    units, stats = [], None
    if md.mean is not None:
        norm = _table(b, "NormalizationOptions", mean=_float_vector(b, md.mean), std=_float_vector(b, md.std))
        units.append(_table(b, "ProcessUnit", options_type=("Uint8", _NORMALIZATION_OPTIONS), options=norm))
        low, high = md.input_stats()
        stats = _table(b, "Stats", max=_float_vector(b, high), min=_float_vector(b, low))
    inp = _table(
        b,
        "TensorMetadata",
        name=_string(b, md.input_name),
        description=_string(b, md.input_description),
        content=_table(b, "Content", content_properties_type=("Uint8", _IMAGE_PROPERTIES), content_properties=image),
        process_units=_tables(b, units),
        stats=stats,
    )
    files = []
    if md.labels is not None:
        files.append(
            _table(
                b,
                "AssociatedFile",
                name=_string(b, _LABELS_FILE),
                description=_string(b, "The class names, one per line, in output order."),
                type=("Int8", _TENSOR_AXIS_LABELS),
            )
        )
    out_stats = None
    if md.output_range is not None:
        low, high = md.output_range
        out_stats = _table(b, "Stats", max=_float_vector(b, [high]), min=_float_vector(b, [low]))
    feature = _table(b, "FeatureProperties")
    out = _table(
        b,
        "TensorMetadata",
        name=_string(b, md.output_name),
        description=_string(b, md.output_description),
        content=_table(
            b, "Content", content_properties_type=("Uint8", _FEATURE_PROPERTIES), content_properties=feature
        ),
        stats=out_stats,
        associated_files=_tables(b, files),
    )
    subgraph = _table(
        b, "SubGraphMetadata", input_tensor_metadata=_tables(b, [inp]), output_tensor_metadata=_tables(b, [out])
    )
    root = _table(
        b,
        "ModelMetadata",
        name=_string(b, md.name),
        description=_string(b, md.description),
        version=_string(b, md.version),
        subgraph_metadata=_tables(b, [subgraph]),
        author=_string(b, md.author),
        license=_string(b, md.license),
        min_parser_version=_string(b, _MIN_PARSER_VERSION),
    )
    b.Finish(root, file_identifier=_IDENTIFIER)
    return bytes(b.Output())


def add_metadata(content: bytes, metadata: ImageClassifierMetadata) -> bytes:
    """Writes TFLite metadata (labels, input normalization) into an image classifier's .tflite.

    Any TFLITE_METADATA already there is replaced, with its associated files; the other
    `Model.metadata` entries stay. The model itself is unchanged (stored as
    `export_tflite.compact` stores it), so it computes exactly what it computed before.

    Args:
      content: .tflite bytes of a model with one image input (batch, height, width,
        channels) and one output (..., classes).
      metadata: what to write.

    Returns:
      The new .tflite bytes: the flatbuffer, then labels.txt in a zip archive if there are labels.

    Raises:
      TfliteFormatError: for bytes that are not a .tflite model.
      ValueError: for a model that is not such a classifier, or metadata that does not fit
        it (a label count other than the output size, a normalization with a value count
        other than 1 or the channels, a color space other than the channels'), naming the field.
      TypeError: if `metadata` is not an `ImageClassifierMetadata`.
    """
    if not isinstance(metadata, ImageClassifierMetadata):
        raise TypeError(f"metadata must be an ImageClassifierMetadata, got {type(metadata).__name__}")
    info = read_model(content)
    if len(info.inputs) != 1 or len(info.outputs) != 1:
        raise ValueError(
            f"add_metadata describes a model with one image input and one output; this one has "
            f"{len(info.inputs)} inputs and {len(info.outputs)} outputs"
        )
    inp, out = info.tensors[info.inputs[0]], info.tensors[info.outputs[0]]
    if len(inp.shape) != 4:
        raise ValueError(
            f"the model's input '{inp.name}' has shape {inp.shape}; expected (batch, height, width, channels)"
        )
    _, height, width, channels = inp.shape
    classes = out.shape[-1] if out.shape else 1
    if metadata.labels is not None and len(metadata.labels) != classes:
        raise ValueError(
            f"labels: {len(metadata.labels)} names for the {classes} outputs of '{out.name}'; give one per output"
        )
    for field in ("mean", "std"):
        values = getattr(metadata, field)
        if values is not None and len(values) not in (1, channels):
            raise ValueError(
                f"{field}: {len(values)} values for an input with {channels} channels; give 1 or {channels}"
            )
    natural = {1: "GRAYSCALE", 3: "RGB"}.get(channels, "UNKNOWN")
    color_space = metadata.color_space or natural
    if color_space != "UNKNOWN" and color_space != natural:
        raise ValueError(f"color_space: {color_space} does not fit an input with {channels} channels")

    model = unpack(content)
    data = _model_metadata(metadata, height, width, color_space)
    set_model_metadata(model, METADATA_NAME, data)
    packed = pack(model, len(content) + len(data))
    if metadata.labels is None:
        return packed
    return append_files(packed, {_LABELS_FILE: ("\n".join(metadata.labels) + "\n").encode("utf-8")})


# --- reading ---


class _Table:
    """One table of a metadata flatbuffer, its fields found by name (`_FIELDS`)."""

    def __init__(self, buf: bytes, pos: int, kind: str):
        self._t = table.Table(buf, pos)
        self._kind = kind

    def _offset(self, field: str) -> int:
        return self._t.Offset(4 + 2 * _FIELDS[self._kind].split().index(field))

    def string(self, field: str) -> str:
        o = self._offset(field)
        return self._t.String(o + self._t.Pos).decode("utf-8") if o else ""

    def scalar(self, field: str, flags) -> int:
        o = self._offset(field)
        return self._t.Get(flags, o + self._t.Pos) if o else 0

    def table(self, field: str, kind: str) -> _Table | None:
        o = self._offset(field)
        return _Table(self._t.Bytes, self._t.Indirect(o + self._t.Pos), kind) if o else None

    def tables(self, field: str, kind: str) -> list[_Table]:
        o = self._offset(field)
        if not o:
            return []
        start = self._t.Vector(o)
        return [_Table(self._t.Bytes, self._t.Indirect(start + 4 * i), kind) for i in range(self._t.VectorLen(o))]

    def floats(self, field: str) -> tuple[float, ...] | None:
        o = self._offset(field)
        return tuple(_float32(v) for v in self._t.GetVectorAsNumpy(N.Float32Flags, o)) if o else None


def _parse(buf: bytes, content: bytes) -> ImageClassifierMetadata:
    pos = encode.Get(packer.uoffset, buf, 0)
    root = _Table(buf, pos, "ModelMetadata")
    subgraphs = root.tables("subgraph_metadata", "SubGraphMetadata")
    if not subgraphs:
        raise ValueError("it describes no subgraph")
    inputs = subgraphs[0].tables("input_tensor_metadata", "TensorMetadata")
    outputs = subgraphs[0].tables("output_tensor_metadata", "TensorMetadata")
    fields = {"name": root.string("name") or "(unnamed)", "mean": None, "std": None}
    for field in ("description", "version", "author", "license"):
        fields[field] = root.string(field)
    if inputs:
        fields.update(input_name=inputs[0].string("name"), input_description=inputs[0].string("description"))
        for unit in inputs[0].tables("process_units", "ProcessUnit"):
            if unit.scalar("options_type", N.Uint8Flags) == _NORMALIZATION_OPTIONS:
                norm = unit.table("options", "NormalizationOptions")
                fields["mean"], fields["std"] = norm.floats("mean"), norm.floats("std")
        content_ = inputs[0].table("content", "Content")
        if content_ is not None and content_.scalar("content_properties_type", N.Uint8Flags) == _IMAGE_PROPERTIES:
            code = content_.table("content_properties", "ImageProperties").scalar("color_space", N.Int8Flags)
            fields["color_space"] = {v: k for k, v in _COLOR_SPACES.items()}.get(code, "UNKNOWN")
    if outputs:
        fields.update(output_name=outputs[0].string("name"), output_description=outputs[0].string("description"))
        for file in outputs[0].tables("associated_files", "AssociatedFile"):
            if file.scalar("type", N.Int8Flags) == _TENSOR_AXIS_LABELS:
                name, files = file.string("name"), associated_files(content)
                if name not in files:
                    raise ValueError(
                        f"it names the labels file {name!r}, which the file does not carry "
                        f"(associated files appended: {sorted(files) or 'none'})"
                    )
                try:
                    fields["labels"] = parse_labels(files[name].decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as e:
                    raise ValueError(f"its labels file {name!r}: {e}") from e
        stats = outputs[0].table("stats", "Stats")
        if stats is not None and stats.floats("min") and stats.floats("max"):
            fields["output_range"] = (stats.floats("min")[0], stats.floats("max")[0])
    return ImageClassifierMetadata(**fields)


def read_metadata(content: bytes) -> ImageClassifierMetadata | None:
    """The TFLite metadata of a .tflite file (as `add_metadata` writes it), or None if it has none.

    Reads the first input's normalization and color space and the first output's labels
    (from the appended labels file); fields the schema has but `ImageClassifierMetadata`
    does not are ignored.

    Args:
      content: .tflite bytes, with their appended associated files.

    Returns:
      The metadata, or None for a file without a TFLITE_METADATA entry.

    Raises:
      TfliteFormatError: for bytes that are not a .tflite model, or metadata that is
        damaged, not "M001", or names a labels file the file does not carry.
    """
    buf = model_metadata(content, METADATA_NAME)
    if buf is None:
        return None
    if len(buf) < 8 or buf[4:8] != _IDENTIFIER:
        raise TfliteFormatError(
            f"the {METADATA_NAME} buffer is not TFLite metadata (no {_IDENTIFIER.decode()} identifier)"
        )
    try:
        return _parse(buf, content)
    except TfliteFormatError as e:
        raise TfliteFormatError(f"{METADATA_NAME}: {e}") from e
    except Exception as e:  # noqa: BLE001 - out-of-range offsets and the like: a damaged buffer
        raise TfliteFormatError(f"damaged {METADATA_NAME}: {type(e).__name__}: {e}") from e


def input_recipe(metadata: ImageClassifierMetadata, tensor: TensorInfo) -> str:
    """What an app feeds the model's input, from its normalization and the input's quantization.

    The schema's normalization is the float model's; an integer input holds
    q = round((pixel - mean) / std / scale) + zero_point. When scale = 1 / std and
    zero_point = mean (uint8) or mean - 128 (int8), the same for every channel, that is
    the pixel itself or the pixel - 128.

    Args:
      metadata: the model's metadata.
      tensor: the model's input tensor (`export_tflite.reader.read_model`).

    Returns:
      A sentence.
    """
    if metadata.mean is None:
        return "the metadata gives no input normalization: feed what the model was trained on, quantized"
    mean, std = _fmt(metadata.mean), _fmt(metadata.std)
    if tensor.dtype == "FLOAT32" or not tensor.scales:
        return f"feed float32 (pixel - mean) / std with mean {mean}, std {std}"
    if len(tensor.scales) != 1:
        return (
            "the input is quantized per channel: q = round((pixel - mean) / std / scale) + zero_point "
            f"with each channel's scale and zero point, mean {mean}, std {std}"
        )
    scale, zero = tensor.scales[0], tensor.zero_points[0] if tensor.zero_points else 0
    uniform = len(set(metadata.mean)) == 1 and len(set(metadata.std)) == 1
    if uniform and math.isclose(scale * metadata.std[0], 1.0, rel_tol=1e-6):
        offset = {"UINT8": 0, "INT8": -128}.get(tensor.dtype)
        if offset is not None and math.isclose(zero, metadata.mean[0] + offset, abs_tol=1e-4):
            return "feed raw uint8 pixels (q = pixel)" if offset == 0 else "feed pixel - 128 as int8 (q = pixel - 128)"
    info = np.iinfo(np.int8 if tensor.dtype == "INT8" else np.uint8 if tensor.dtype == "UINT8" else np.int16)
    return (
        f"feed q = round((pixel - mean) / std / {scale:.6g}) + {zero}, clipped to [{info.min}, {info.max}], "
        f"with mean {mean}, std {std}"
    )
