"""TFLite metadata (export_tflite.metadata): class labels and input normalization in the .tflite.

What export_tflite writes is read back twice: by `read_metadata`, and by tflite-support's own
generated reader of the schema (metadata_schema_py_generated.py from tflite-support 0.4.4, which
`make test` extracts into the environment; the package itself does not install on this stack).
"""

import importlib.util
import io
import json
import os
import sys
import zipfile

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import faq_tf
from conftest import residual_model, tiny_run_config
from export_tflite import (
    ImageClassifierMetadata,
    TfliteFormatError,
    add_metadata,
    compact,
    convert,
    read_metadata,
    read_model,
    verify,
)
from export_tflite.__main__ import main as export_main
from export_tflite.evaluate import _class_names
from export_tflite.evaluate import main as evaluate_main
from export_tflite.metadata import input_recipe, normalization_of, parse_labels
from export_tflite.reader import TensorInfo, associated_files, unpack
from export_tflite.rewriter import append_files, pack, snap_scales
from export_tflite.verify import main as verify_main
from faq_tf.data.datasets import ImageSource
from faq_tf.models import MODELS, PREPROCESSING
from faq_tf.training import run

REFERENCE = os.path.join(sys.prefix, "reference", "metadata_schema_py_generated.py")
LABELS = tuple(f"class {i}" for i in range(10))
TORCH = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))  # torchvision's mean and std, times 255


def _reference():
    """tflite-support's generated reader of the metadata schema, loaded from its file; a failure if it is missing."""
    if not os.path.isfile(REFERENCE):
        pytest.fail(
            f"{REFERENCE} is missing: run `make test` (or `make bazel-test`), which extracts it from "
            f"tflite-support 0.4.4; or only that step: `make VENV={sys.prefix} {REFERENCE}`"
        )
    spec = importlib.util.spec_from_file_location("tflite_support_metadata_schema", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data():
    return np.random.RandomState(1).rand(32, 16, 16, 3).astype("float32")


@pytest.fixture(scope="module")
def exported(data):
    """A w8a8 residual model (16x16 RGB, 10 outputs), converted without and with metadata."""
    faq_tf.compat.keras.utils.set_random_seed(0)  # module fixtures run before the per-test seed
    qat = faq_tf.quantize_model(residual_model(), "w8a8", data, verbose=False)
    metadata = ImageClassifierMetadata("residual", *TORCH, description="a test model", labels=LABELS)
    return convert(qat), convert(qat, metadata=metadata), metadata


def _outputs(content: bytes, inputs: np.ndarray) -> np.ndarray:
    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for x in inputs:
        interpreter.set_tensor(inp["index"], x[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"]))
    return np.concatenate(outputs)


def _tensors(info) -> list[tuple]:
    return [(t.name, t.dtype, t.shape, t.scales, t.zero_points, t.is_constant) for t in info.tensors]


def _metadata_entries(content: bytes) -> list[str]:
    return [e.name.decode() for e in unpack(content).metadata]


def test_model_with_metadata_computes_what_it_computed(exported):
    plain, with_metadata, metadata = exported
    assert add_metadata(plain, metadata) == with_metadata  # convert(metadata=...) adds it last
    assert read_metadata(plain) is None and read_metadata(with_metadata).labels == LABELS
    inputs = np.random.RandomState(0).randint(-128, 128, (8, 16, 16, 3)).astype(np.int8)
    np.testing.assert_array_equal(_outputs(with_metadata, inputs), _outputs(plain, inputs))
    assert _tensors(read_model(with_metadata)) == _tensors(read_model(plain))
    assert verify(with_metadata).ok
    # The converter's own entries stay; the rewrites keep the metadata and labels.txt.
    assert _metadata_entries(with_metadata) == _metadata_entries(plain) + ["TFLITE_METADATA"]
    assert {"min_runtime_version", "CONVERSION_METADATA"} <= set(_metadata_entries(plain))
    assert compact(with_metadata) == with_metadata
    assert snap_scales(with_metadata) == (with_metadata, 0)
    assert read_metadata(compact(with_metadata, "full")) == read_metadata(with_metadata)


def test_tflite_support_reads_what_is_written(exported):
    """Every field, read with tflite-support's generated code (not export_tflite's) and zipfile."""
    reference = _reference()
    _, content, _ = exported
    model = unpack(content)
    (entry,) = [e for e in model.metadata if e.name == b"TFLITE_METADATA"]
    buf = bytes(model.buffers[entry.buffer].data)
    assert reference.ModelMetadata.ModelMetadataBufferHasIdentifier(buf, 0)  # "M001"
    md = reference.ModelMetadataT.InitFromPackedBuf(buf, 0)
    assert (md.name, md.description, md.minParserVersion) == (b"residual", b"a test model", b"1.0.0")
    (subgraph,) = md.subgraphMetadata
    (inp,) = subgraph.inputTensorMetadata
    assert inp.name == b"image"
    assert inp.content.contentPropertiesType == reference.ContentProperties.ImageProperties
    image = inp.content.contentProperties
    assert image.colorSpace == reference.ColorSpaceType.RGB
    assert (image.defaultSize.width, image.defaultSize.height) == (16, 16)
    (unit,) = inp.processUnits
    assert unit.optionsType == reference.ProcessUnitOptions.NormalizationOptions
    np.testing.assert_array_equal(unit.options.mean, np.float32(TORCH[0]))
    np.testing.assert_array_equal(unit.options.std, np.float32(TORCH[1]))
    # Stats: the float input for pixels 0 and 255, (pixel - mean) / std per channel.
    mean, std = np.array(TORCH)
    np.testing.assert_allclose(inp.stats.min, -mean / std, rtol=1e-6)
    np.testing.assert_allclose(inp.stats.max, (255 - mean) / std, rtol=1e-6)
    (out,) = subgraph.outputTensorMetadata
    assert out.content.contentPropertiesType == reference.ContentProperties.FeatureProperties
    (labels_file,) = out.associatedFiles
    assert labels_file.name == b"labels.txt"
    assert labels_file.type == reference.AssociatedFileType.TENSOR_AXIS_LABELS
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        (info,) = archive.infolist()
        assert info.compress_type == zipfile.ZIP_STORED  # readers map it in place
        assert archive.read("labels.txt").decode().splitlines() == list(LABELS)


@pytest.mark.parametrize(
    "metadata",
    [
        ImageClassifierMetadata("all fields", *TORCH, "d", "v2", "me", "Apache-2.0", LABELS, "RGB", "in", "i", "out", "o", (-4.0, 4.0)),
        ImageClassifierMetadata("one value", (0.0,), (256.0,), labels=LABELS, color_space="RGB"),
        ImageClassifierMetadata("no labels", (127.5,), (127.5,), color_space="UNKNOWN"),
        ImageClassifierMetadata("no normalization", None, None, labels=LABELS, color_space="RGB"),
    ],
    ids=lambda m: m.name,
)  # fmt: skip
def test_round_trip(exported, metadata):
    plain, with_metadata, _ = exported
    assert read_metadata(add_metadata(plain, metadata)) == metadata
    replaced = add_metadata(with_metadata, metadata)  # replaces the metadata and labels.txt
    assert read_metadata(replaced) == metadata
    assert _metadata_entries(replaced).count("TFLITE_METADATA") == 1
    assert associated_files(replaced) == (
        {"labels.txt": ("\n".join(LABELS) + "\n").encode()} if metadata.labels else {}
    )


def test_color_space_comes_from_the_channels(exported):
    plain, _, _ = exported
    written = read_metadata(add_metadata(plain, ImageClassifierMetadata("m", (0.0,), (1.0,))))
    assert written.color_space == "RGB"  # 3 channels


@pytest.mark.parametrize(
    "preprocess, channels, expected",
    [
        (PREPROCESSING["unit"], 3, ((0.0,), (256.0,))),  # x / 256 = (x - 0) / 256
        (PREPROCESSING["unit"], 1, ((0.0,), (256.0,))),
        (PREPROCESSING["symmetric"], 3, ((128.0,), (128.0,))),  # x / 128 - 1 = (x - 128) / 128
        (PREPROCESSING["none"], 3, ((0.0,), (1.0,))),  # raw pixels (a model with its own Rescaling)
        (PREPROCESSING["torch"], 3, TORCH),  # (x - 255 m_c) / (255 s_c), m and s torchvision's
        (PREPROCESSING["torch"], 1, None),  # three means for one channel: the output has three
        (MODELS["MobileNet"].preprocess, 3, ((127.5,), (127.5,))),  # Keras "tf" mode: x / 127.5 - 1
        (MODELS["DenseNet121"].preprocess, 3, TORCH),  # Keras "torch" mode: torchvision's
        (MODELS["ResNet50"].preprocess, 3, None),  # Keras "caffe" mode: RGB -> BGR, not channel-diagonal
        (lambda x: (x / 255.0) ** 2, 3, None),  # not affine
        (lambda x: 1.0 - x / 255.0, 3, None),  # affine, but a < 0
        (lambda x: x[..., :1], 3, None),  # drops channels
    ],
    ids=["unit", "unit-gray", "symmetric", "none", "torch", "torch-gray", "tf", "keras-torch", "caffe", "square", "negative", "shape"],
)  # fmt: skip
def test_normalization_of_measures_the_preprocessing(preprocess, channels, expected):
    assert normalization_of(preprocess, channels) == expected


def test_input_recipe_says_what_an_app_feeds():
    def tensor(dtype, scale, zero):
        return TensorInfo(0, "image", dtype, [1, 16, 16, 3], [1, 16, 16, 3], [scale], [zero], 0, False, None)

    unit = ImageClassifierMetadata("m", (0.0,), (256.0,))  # x / 256, as the 8-bit input grid Q(8, -8) holds it
    symmetric = ImageClassifierMetadata("m", (128.0,), (128.0,))
    torch = ImageClassifierMetadata("m", *TORCH)
    assert input_recipe(unit, tensor("UINT8", 2**-8, 0)) == "feed raw uint8 pixels (q = pixel)"
    assert input_recipe(unit, tensor("INT8", 2**-8, -128)) == "feed pixel - 128 as int8 (q = pixel - 128)"
    assert input_recipe(symmetric, tensor("INT8", 2**-7, 0)) == "feed pixel - 128 as int8 (q = pixel - 128)"
    assert input_recipe(symmetric, tensor("UINT8", 2**-7, 128)) == "feed raw uint8 pixels (q = pixel)"
    assert input_recipe(unit, tensor("INT8", 2**-7, -128)) == (
        "feed q = round((pixel - mean) / std / 0.0078125) + -128, clipped to [-128, 127], with mean 0, std 256"
    )
    assert input_recipe(torch, tensor("INT8", 2**-5, 0)).startswith(
        "feed q = round((pixel - mean) / std / 0.03125) + 0, clipped to [-128, 127], with mean (123.675, 116.28, 103.53)"
    )
    float_input = TensorInfo(0, "image", "FLOAT32", [1, 16, 16, 3], [1, 16, 16, 3], [], [], 0, False, None)
    assert input_recipe(unit, float_input) == "feed float32 (pixel - mean) / std with mean 0, std 256"


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(name=""), "name"),
        (dict(mean=(0.0,), std=None), "mean and std"),
        (dict(std=(0.0,)), "std must be positive"),
        (dict(std=(float("nan"),)), "std must be"),
        (dict(mean=(0.0, 1.0), std=(1.0, 2.0, 3.0)), "mean and std"),
        (dict(labels=()), "labels must not be empty"),
        (dict(labels=("a", "")), r"labels\[1\]"),
        (dict(labels=("a", "b\nc")), r"labels\[1\]"),
        (dict(color_space="BGR"), "color_space"),
        (dict(output_range=(1.0, 0.0)), "output_range"),
    ],
)
def test_bad_metadata_is_refused_naming_the_field(fields, match):
    with pytest.raises(ValueError, match=match):
        ImageClassifierMetadata(**({"name": "m", "mean": (0.0,), "std": (1.0,)} | fields))


def test_metadata_that_does_not_fit_the_model_is_refused(exported):
    plain, _, _ = exported
    with pytest.raises(ValueError, match="labels: 3 names for the 10 outputs"):
        add_metadata(plain, ImageClassifierMetadata("m", (0.0,), (1.0,), labels=("a", "b", "c")))
    with pytest.raises(ValueError, match="mean: 2 values for an input with 3 channels"):
        add_metadata(plain, ImageClassifierMetadata("m", (0.0, 1.0), (1.0,)))
    with pytest.raises(ValueError, match="color_space: GRAYSCALE"):
        add_metadata(plain, ImageClassifierMetadata("m", (0.0,), (1.0,), color_space="GRAYSCALE"))
    with pytest.raises(ValueError, match="metadata.labels: 2 names for the 10 outputs of 'residual'"):
        convert(residual_model(), metadata=ImageClassifierMetadata("m", (0.0,), (1.0,), labels=("a", "b")))
    assert parse_labels("a\nb c\n\n") == ("a", "b c")
    for text, match in (("", "no class names"), ("a\n\nb\n", "line 2 is empty")):
        with pytest.raises(ValueError, match=match):
            parse_labels(text)


def test_damaged_metadata_is_a_format_error_and_a_violation(exported, capsys):
    _, content, _ = exported
    flat = pack(unpack(content))  # the flatbuffer without its labels.txt
    with pytest.raises(TfliteFormatError, match="names the labels file 'labels.txt', which the file does not carry"):
        read_metadata(flat)
    report = verify(flat)
    assert report.metadata is None and any("labels.txt" in v for v in report.violations)
    model = unpack(content)
    (entry,) = [e for e in model.metadata if e.name == b"TFLITE_METADATA"]
    model.buffers[entry.buffer].data = np.frombuffer(b"\x08\x00\x00\x00XXXX" + bytes(8), np.uint8)
    with pytest.raises(TfliteFormatError, match="no M001 identifier"):
        read_metadata(pack(model))


def test_verify_prints_the_metadata(tmp_path, exported, capsys):
    plain, content, _ = exported
    path = tmp_path / "m.tflite"
    path.write_bytes(content)
    assert verify_main([str(path)]) == 0
    text = capsys.readouterr().out
    assert "metadata: residual\n  description: a test model\n" in text
    assert "  labels: 10 (class 0, class 1, class 2, class 3, class 4, ...)\n" in text
    assert (
        "  input normalization: (pixel - mean) / std, mean [123.675, 116.28, 103.53], std [58.395, 57.12, 57.375], RGB\n"
        in text
    )
    assert "  input: feed q = round((pixel - mean) / std / " in text
    assert verify_main([str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metadata"]["labels"] == list(LABELS) and report["metadata"]["feed"].startswith("feed q = round(")
    path.write_bytes(plain)
    assert verify_main([str(path), "--json"]) == 0  # no metadata: a note, not a violation
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["metadata"] is None and any("no TFLite metadata" in n for n in report["notes"])
    # Labels that do not match the outputs (add_metadata refuses them; another writer may not).
    path.write_bytes(append_files(pack(unpack(content)), {"labels.txt": b"a\nb\n"}))
    assert verify_main([str(path)]) == 1
    assert "VIOLATION: metadata: 2 labels for the 10 outputs of " in capsys.readouterr().out


def test_evaluator_names_classes_with_the_labels(caplog):
    def source(class_names):
        return ImageSource("d", 3, 1, None, None, class_names=class_names)

    labels = ("cat", "dog", "bird")
    assert _class_names(labels, source(None), 3) == labels  # the dataset has no names
    assert _class_names(labels, source(None), 4) == ("0", "1", "2", "output 3")  # do not fit the outputs
    assert "3 labels do not fit its 4 outputs" in caplog.text
    assert _class_names(None, source(None), 3) == ("0", "1", "2")
    caplog.clear()
    assert _class_names(labels, source(("cat", "dog", "fish")), 3) == ("cat", "dog", "fish")
    assert "output 2 is 'bird' in the .tflite and 'fish' in the dataset" in caplog.text
    caplog.clear()
    assert _class_names(labels, source(labels), 3) == labels and not caplog.text


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A faq-train run (small_resnet, w8a8, "unit" preprocessing) on a 3-class image folder."""
    root = tmp_path_factory.mktemp("run")
    faq_tf.compat.keras.utils.set_random_seed(0)
    run(tiny_run_config(root, epochs=1, steps_per_epoch=2))
    return root


def test_cli_writes_the_runs_labels_and_normalization(model_dir, capsys):
    out = model_dir / "m.tflite"
    assert export_main(["--model_dir", str(model_dir / "run"), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "metadata: " in printed and "3 labels (class_0, class_1, class_2)" in printed
    metadata = read_metadata(out.read_bytes())
    assert metadata.labels == ("class_0", "class_1", "class_2")
    assert (metadata.mean, metadata.std) == ((0.0,), (256.0,))  # the run's preprocessing: pixels / 256
    assert "faq_tf" in metadata.description and "w8a8" in metadata.description
    assert "small_resnet" in metadata.description
    assert verify_main([str(out)]) == 0
    assert "  input: feed pixel - 128 as int8 (q = pixel - 128)" in capsys.readouterr().out
    argv = [f"--tflite={out}", f"--dataset=folder:{model_dir / 'images'}", "--limit=8"]
    assert evaluate_main(argv) == 0
    assert "labels in the .tflite: 3 (class_0, class_1, class_2)" in capsys.readouterr().out


def test_cli_labels_flag_and_no_metadata(model_dir, capsys):
    labels, out = model_dir / "names.txt", model_dir / "u.tflite"
    labels.write_text("cat\ndog\nbird\n")
    h5 = ["--model", str(model_dir / "run" / "model.h5"), "--output", str(out)]
    assert export_main([*h5, "--model_name=small_resnet", f"--labels={labels}", "--io_dtype=uint8"]) == 0
    metadata = read_metadata(out.read_bytes())
    assert metadata.labels == ("cat", "dog", "bird") and (metadata.mean, metadata.std) == ((0.0,), (256.0,))
    assert verify_main([str(out)]) == 0
    assert "  input: feed raw uint8 pixels (q = pixel)" in capsys.readouterr().out
    assert export_main(h5) == 0  # a model file's preprocessing is unknown without --model_name
    assert "give --model_name to record the input normalization" in capsys.readouterr().out
    metadata = read_metadata(out.read_bytes())
    assert metadata.labels is None and metadata.mean is None
    argv = ["--model_dir", str(model_dir / "run"), "--output", str(out)]
    assert export_main([*argv, "--no_metadata"]) == 0
    assert read_metadata(out.read_bytes()) is None
    capsys.readouterr()
    labels.write_text("cat\ndog\n")
    assert export_main([*argv, f"--labels={labels}"]) == 2
    assert f"--labels={labels} has 2 class names but " in capsys.readouterr().err
    labels.write_text("\n")
    assert export_main([*argv, f"--labels={labels}"]) == 2
    assert f"--labels={labels}: no class names in it" in capsys.readouterr().err
    assert export_main([*argv, f"--labels={labels}", "--no_metadata"]) == 2
    assert "--labels has no effect with --no_metadata" in capsys.readouterr().err
