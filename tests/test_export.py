"""export_tflite: integer conversion that agrees with Keras, the verifier, the evaluator."""

import json
import math
import os
import re

import numpy as np
import pytest

import faq_tf
from conftest import OP_MODELS, densenet_model, image_folder, randomize_batch_norms, residual_model
from export_tflite import ExportError, TfliteFormatError, convert, quantize_float_outputs, read_model, verify
from export_tflite.evaluate import TfliteRunner
from export_tflite.evaluate import main as evaluate_main
from export_tflite.verify import is_pow2_times_int8, is_power_of_two
from export_tflite.verify import main as verify_main
from faq_tf.compat import keras, tf
from faq_tf.tracing import export_trace

L = keras.layers


@pytest.fixture(scope="module")
def data():
    return np.random.RandomState(1).rand(96, 16, 16, 3).astype("float32")


@pytest.fixture(scope="module")
def exported(data):
    keras.utils.set_random_seed(0)  # module fixtures run before the per-test seed
    out = {}
    for precision in ("w8a8", "w4a4"):
        qat = faq_tf.quantize_model(residual_model(), precision, data[:64], verbose=False)
        out[precision] = (qat, convert(qat, representative_data=data[:64]))
    return out


@pytest.mark.parametrize("precision", ["w8a8", "w4a4"])
@pytest.mark.parametrize("build", OP_MODELS)
def test_integer_model_computes_what_keras_computes(data, precision, build):
    """Every op of the integer model (XNNPACK, LiteRT's default) matches Keras bit for bit."""
    base = randomize_batch_norms(build())
    qat = faq_tf.quantize_model(base, precision, data[:64], verbose=False)
    content = convert(qat, representative_data=data[:64])
    reference = quantize_float_outputs(qat, data[:64])  # w4a4: the logits get their 8-bit range
    runner = TfliteRunner(content)
    tflite, keras_logits = runner(data), reference.predict(data, verbose=0)
    np.testing.assert_array_equal(tflite, keras_logits)
    ops = {op.name for op in read_model(content).ops}
    assert build is not densenet_model or "DEPTHWISE_CONV_2D" in ops  # standalone BN: 1x1 depthwise
    # The tie rules matter: with FakeQuant's ties-up everywhere (as traced for export) the two differ.
    with export_trace():
        untied = reference(data, training=False).numpy()
    assert not np.array_equal(untied, keras_logits)


def test_runners_name_their_runtimes(exported):
    _, content = exported["w8a8"]
    with pytest.raises(ValueError, match="runtime must be one of"):
        TfliteRunner(content, runtime="gpu")


@pytest.mark.parametrize("precision", ["w8a8", "w4a4"])
def test_exported_model_is_integer_with_power_of_two_scales(exported, data, precision):
    _, content = exported[precision]
    report = verify(content, edgetpu=True, sample_data=data[:8])
    assert report.ok, report.violations
    assert all(t["dtype"] in ("INT8", "INT32") for t in report.tensors)
    # Every activation, the graph's input and output included, is int8 with a power-of-two scale.
    activations = [t for t in report.tensors if not t["constant"]]
    io = {*read_model(content).inputs, *read_model(content).outputs}
    assert io <= {t["index"] for t in activations}
    for t in activations:
        assert t["dtype"] == "INT8" and t["scale_ok"] is True and is_power_of_two(t["scale"]), t
    # Int8 weights: checked too (per-channel ones may carry a folded BN constant). Int32 constants
    # (biases, MEAN's axes) have no int8 scale and are not checked.
    weights = [t for t in report.tensors if t["constant"] and t["dtype"] == "INT8"]
    assert weights and all(t["scale_ok"] is True for t in weights), weights
    assert all(t["scale_ok"] is None for t in report.tensors if t["dtype"] == "INT32")
    if precision == "w4a4":
        assert report.level_counts and max(report.level_counts.values()) <= 16


def test_pack_int4_stores_4bit_weights_packed(exported, data):
    qat, int8_storage = exported["w4a4"]
    packed = convert(qat, representative_data=data[:64], pack_int4=True)
    dtypes = {t["dtype"] for t in verify(packed).tensors}
    assert "INT4" in dtypes
    assert len(packed) < len(int8_storage)
    # Same numbers, stored differently: the same logits on the runtimes that run both alike.
    # (XNNPACK leaves INT4 convs to LiteRT's builtin kernels; each equals its Keras model: test_targets.py.)
    for runtime in ("builtin", "micro"):
        same = [TfliteRunner(c, runtime=runtime)(data) for c in (packed, int8_storage)]
        np.testing.assert_array_equal(*same)
    assert not verify(packed, edgetpu=True).ok  # the Edge TPU has no INT4


def test_pack_int4_packs_4bit_dense_weights(data):
    """A per-tensor (Dense) 4-bit kernel, here the classifier by override, is packed too."""
    keras.utils.set_random_seed(4)
    qat = faq_tf.quantize_model(residual_model(), "w4a4", data[:64], layer_overrides={"logits": "w4"}, verbose=False)
    files = {pack: convert(qat, representative_data=data[:64], pack_int4=pack) for pack in (False, True)}
    infos = {pack: read_model(content) for pack, content in files.items()}
    fc = {
        pack: [info.tensors[op.inputs[1]] for op in info.ops if op.name == "FULLY_CONNECTED"]
        for pack, info in infos.items()
    }
    assert [t.dtype for t in fc[True]] == ["INT4"] and [t.dtype for t in fc[False]] == ["INT8"]
    weights = fc[False][0]
    assert weights.scales == fc[True][0].scales and is_power_of_two(weights.scales[0])
    assert np.abs(weights.data).max() <= 7  # symmetric 4-bit values in int8 storage
    same = [TfliteRunner(c, runtime="builtin")(data) for c in (files[True], files[False])]
    np.testing.assert_array_equal(*same)


def test_micro_report_measures_flash_and_arena(tmp_path, exported, capsys):
    from export_tflite.micro import micro_report

    _, content = exported["w8a8"]
    report = micro_report(content)
    parts = report.weight_bytes + report.bias_bytes + report.metadata_bytes + report.other_bytes
    assert parts == report.file_bytes == len(content)
    assert report.weight_bytes > report.bias_bytes > 0
    assert report.arena_head_bytes + report.arena_tail_bytes == report.arena_bytes
    assert report.largest_activation_bytes <= report.arena_head_bytes
    assert report.largest_activation_bytes == 16 * 16 * 16  # the 16x16x16 int8 concat of residual_model
    path = tmp_path / "m.tflite"
    path.write_bytes(content)
    assert verify_main([str(path), "--micro"]) == 0
    assert f"{report.arena_bytes:,d} bytes of tensor arena (measured by TFLM)" in capsys.readouterr().out
    assert verify_main([str(path), "--micro", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["micro"]["arena_bytes"] == report.arena_bytes


def test_micro_runtime_without_tflite_micro_says_how_to_install(exported, monkeypatch, tmp_path, capsys):
    import builtins

    real_import = builtins.__import__

    def no_tflm(name, *args, **kwargs):
        if name.startswith("tflite_micro"):
            raise ImportError("No module named 'tflite_micro'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tflm)
    path = tmp_path / "m.tflite"
    path.write_bytes(exported["w8a8"][1])
    assert verify_main([str(path), "--micro"]) == 2
    assert "pip install tflite-micro" in capsys.readouterr().err


def test_batch_size_and_io_dtype(exported, data):
    qat, _ = exported["w8a8"]
    for io in ("uint8", "float32"):
        runner = TfliteRunner(convert(qat, io_dtype=io, batch_size=4))
        assert runner.batch == 4 and runner.input["dtype"] == {"uint8": np.uint8, "float32": np.float32}[io]
        assert runner(data[:6]).shape == (6, 10)
    dynamic = convert(qat, batch_size=None)
    assert not verify(dynamic, edgetpu=True).ok  # a dynamic batch breaks the Edge TPU rules
    with pytest.raises(ValueError, match="io_dtype"):
        convert(qat, io_dtype="int16")
    with pytest.raises(ValueError, match="batch_size"):
        convert(qat, batch_size=0)


def test_float_logits_need_representative_data(exported):
    qat, _ = exported["w4a4"]
    with pytest.raises(ExportError, match=r"Outputs of \['logits'\] are float.*representative"):
        convert(qat)


def test_refuses_unquantized_and_non_integer_models(data):
    with pytest.raises(ExportError, match="no faq_tf quantizers"):
        convert(residual_model())
    i = keras.Input((16, 16, 3))
    x = L.Conv2D(4, 3, name="c")(i)
    x = L.UpSampling2D(interpolation="bilinear", name="up")(x)
    x = L.Lambda(lambda t: tf.math.sin(t), name="sine")(x)
    m = keras.Model(i, L.Dense(2, name="d")(L.Flatten()(x)))
    qat = faq_tf.quantize_model(m, "w8a8", data[:8], layer_overrides={"up": "skip", "sine": "skip"}, verbose=False)
    with pytest.raises(
        ExportError, match=r"(?s)not convert to a fully integer model \(layers involved: \[.*'sine'.*SIN"
    ):
        convert(qat)


def _tflite_from_keras(model, quantize=False, data=None):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if data is not None:
            converter.representative_dataset = lambda: ([d[None]] for d in data[:16])
    return converter.convert()


_FLOAT_VIOLATION = re.compile(r"float tensor '(.*)' \((\w+)\) at op (\d+) (\w+)$")
_SCALE_VIOLATION = re.compile(r"tensor '(.*)' scale \[.*\] is not a power of two$")


def _float_violations(report) -> list[tuple[str, str, int, str]]:
    """(tensor, dtype, op index, op) of each "float tensor" violation."""
    found = [_FLOAT_VIOLATION.match(v) for v in report.violations]
    return [(m[1], m[2], int(m[3]), m[4]) for m in found if m]


def test_verifier_flags_float_hybrid_and_non_power_of_two(data):
    # 64 classes: the Dense kernel has 1024 weights, the smallest the converter's
    # dynamic-range quantization stores as int8 (smaller ones stay float).
    model = residual_model(classes=64)
    for name, content in [("float", _tflite_from_keras(model)), ("hybrid", _tflite_from_keras(model, quantize=True))]:
        info, report = read_model(content), verify(content)
        flagged = {(tensor, op) for tensor, _, op, _ in _float_violations(report)}
        # Float math: every op is flagged, once for each of its float tensors and for nothing else.
        expected = {
            (info.tensors[i].name, op.index)
            for op in info.ops
            for i in op.inputs + op.outputs
            if i >= 0 and info.tensors[i].dtype == "FLOAT32"
        }
        assert flagged == expected and {op for _, op in flagged} == {op.index for op in info.ops}, name
    int8_weights = {t.name for t in info.tensors if t.is_constant and t.dtype == "INT8"}
    assert int8_weights and not int8_weights & {tensor for tensor, _ in flagged}  # hybrid: int8 weights, float math
    ptq = _tflite_from_keras(model, quantize=True, data=data)  # int8 math, but PTQ picks arbitrary scales
    info, report = read_model(ptq), verify(ptq)
    assert not _float_violations(report), report.violations  # the float input/output only meet (DE)QUANTIZE
    activations = {t.name for t in info.tensors if not t.is_constant and t.dtype == "INT8"}
    flagged = {m[1] for m in map(_SCALE_VIOLATION.match, report.violations) if m}
    assert activations and flagged == activations, report.violations


def test_power_of_two_helpers():
    assert is_power_of_two(2.0**-7) and not is_power_of_two(0.3) and not is_power_of_two(0.0)
    assert is_pow2_times_int8(53 * 2.0**-8) and is_pow2_times_int8(2.0**-4)
    assert not is_pow2_times_int8(0.1)
    one_ulp_below = float(np.nextafter(np.float32(53 * 2.0**-8), np.float32(0)))  # the converter's folding
    assert not is_pow2_times_int8(one_ulp_below) and is_pow2_times_int8(one_ulp_below, rel_tol=1e-6)


def test_snap_scales_repairs_folded_scales_in_place(exported):
    from export_tflite.rewriter import snap_scales

    _, content = exported["w8a8"]
    assert snap_scales(content) == (content, 0)  # convert() already did
    from ai_edge_litert import schema_py_generated as schema

    buf = bytearray(content)
    graph = schema.Model.GetRootAs(buf, 0).Subgraphs(0)
    index = next(i for i, t in enumerate(read_model(content).tensors) if t.dtype == "INT8" and len(t.scales) > 1)
    scales = graph.Tensors(index).Quantization().ScaleAsNumpy()  # a view into buf
    scales[0] = np.nextafter(scales[0], np.float32(0))  # one ulp below, as the converter folds
    repaired, changed = snap_scales(bytes(buf))
    assert changed == 1 and repaired == content and len(repaired) == len(content)


def _vector_starts(content: bytes, field: str) -> list[int]:
    """Where each quantized tensor's `field` ("Scale" or "ZeroPoint") vector starts in the file."""
    from ai_edge_litert import schema_py_generated as schema

    buf = bytearray(content)
    base = np.frombuffer(buf, np.uint8).ctypes.data
    graph = schema.Model.GetRootAs(buf, 0).Subgraphs(0)
    starts = []
    for i in range(graph.TensorsLength()):
        q = graph.Tensors(i).Quantization()
        if q is not None and getattr(q, f"{field}Length")():
            starts.append(getattr(q, f"{field}AsNumpy")().ctypes.data - base)  # views into buf
    return starts


def test_compact_shares_vectors_and_computes_the_same(data):
    """On the stock converter's own int8 output (an independent writer): same ops, data and answers."""
    from export_tflite.rewriter import compact

    keras.utils.set_random_seed(5)
    converter = tf.lite.TFLiteConverter.from_keras_model(residual_model())
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([data[i : i + 1]] for i in range(16))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    raw = converter.convert()
    before = read_model(raw)
    sizes = {}
    for mode in ("full", "short", "none"):
        small = compact(raw, mode)
        sizes[mode] = len(small)
        after = read_model(small)
        assert [(o.name, o.version, o.inputs, o.outputs) for o in after.ops] == [
            (o.name, o.version, o.inputs, o.outputs) for o in before.ops
        ]
        for a, b in zip(after.tensors, before.tensors, strict=True):
            assert (a.dtype, a.shape, a.scales, a.zero_points, a.quantized_dimension) == (
                b.dtype,
                b.shape,
                b.scales,
                b.zero_points,
                b.quantized_dimension,
            )
            assert (a.data is None) == (b.data is None) and (a.data is None or np.array_equal(a.data, b.data))
        for runtime in ("xnnpack", "builtin"):
            np.testing.assert_array_equal(
                TfliteRunner(small, runtime=runtime)(data[:8]), TfliteRunner(raw, runtime=runtime)(data[:8])
            )
        # Equal vectors are stored once: all-zero per-channel zero points, shared activation scales.
        for field in ("ZeroPoint", "Scale"):
            values = {}
            for t in after.tensors:
                if t.scales:
                    values.setdefault(tuple(t.zero_points if field == "ZeroPoint" else t.scales), set())
            assert len(set(_vector_starts(small, field))) == len(values) < len(_vector_starts(raw, field))
        assert compact(small, mode) == small  # a fixpoint
    assert sizes["none"] < sizes["short"] < sizes["full"] < len(raw)


def test_short_tensor_names_name_the_keras_layers(exported):
    from export_tflite.rewriter import compact

    qat, content = exported["w8a8"]
    info = read_model(content)
    layers = {getattr(layer, "layer", layer).name for layer in qat.layers}
    io = {*info.inputs, *info.outputs}
    for op in info.ops:
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            layer, role = info.tensors[op.inputs[1]].name.split("/")
            assert layer in layers and role == "weights"
            if len(op.inputs) > 2 and op.inputs[2] >= 0:
                assert info.tensors[op.inputs[2]].name == f"{layer}/bias"
    names = [t.name for t in info.tensors if t.index not in io]
    assert len(set(names)) == len(names)
    assert all(name.split("/")[0] in layers and ";" not in name for name in names), names
    full = read_model(compact(content, "full"))  # convert() already shortened them: nothing to restore
    assert [t.name for t in full.tensors] == [t.name for t in info.tensors]
    none = read_model(compact(content, "none"))
    assert [t.index for t in none.tensors if t.name] == sorted(io)
    with pytest.raises(ValueError, match="tensor_names"):
        compact(content, "long")
    with pytest.raises(TfliteFormatError):
        compact(content[:100])


def test_compact_leaves_models_with_external_buffers_alone(exported):
    """Over 2 GB, constant data lives after the flatbuffer (Buffer.offset): nothing is rewritten."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from export_tflite.rewriter import compact

    model = schema.ModelT.InitFromPackedBuf(bytearray(exported["w8a8"][1]), 0)
    model.buffers[1].offset, model.buffers[1].size = 1 << 20, 16
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    content = bytes(builder.Output())
    assert compact(content) == content


@pytest.mark.parametrize("content", [b"", b"TFL3", os.urandom(512), b"\x1c\x00\x00\x00TFL3" + os.urandom(64)])
def test_damaged_tflite_files(tmp_path, content, capsys):
    with pytest.raises(TfliteFormatError):
        verify(content)
    path = tmp_path / "bad.tflite"
    path.write_bytes(content)
    assert verify_main([str(path)]) == 2
    assert "error:" in capsys.readouterr().err
    assert evaluate_main(["--tflite", str(path), "--dataset=fashion_mnist"]) == 2


def test_evaluator_rejects_wrong_inputs(exported):
    runner = TfliteRunner(exported["w8a8"][1])
    with pytest.raises(ValueError, match="shape"):
        runner(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="numeric"):
        runner(np.full((1, 16, 16, 3), "a"))


def test_time_invoke_times_each_model_side_by_side(exported, monkeypatch):
    """Every model is invoked once to warm up and rounds * runs times for its median; no speed bound."""
    from export_tflite import evaluate

    files = {name: content for name, (_, content) in exported.items()}
    names = {content: name for name, content in files.items()}
    calls: dict[str, int] = {}  # invocations per model name
    runtimes = set()

    class CountingRunner(evaluate.TfliteRunner):
        def __init__(self, content: bytes, **kwargs):
            super().__init__(content, **kwargs)
            runtimes.add(self.runtime)
            invoke = self.interpreter.invoke

            def counted():
                calls[names[content]] = calls.get(names[content], 0) + 1
                return invoke()

            self.interpreter.invoke = counted  # time_invoke looks invoke up on the instance

    monkeypatch.setattr(evaluate, "TfliteRunner", CountingRunner)
    for runtime, rounds, runs in (("xnnpack", 3, 2), ("builtin", 2, 5)):
        calls.clear()
        times = evaluate.time_invoke(files, runtime, rounds=rounds, runs=runs)
        assert set(times) == set(files) and runtimes == {runtime}, (times, runtimes)
        assert all(isinstance(t, float) and 0 < t < math.inf for t in times.values()), times
        assert calls == {name: 1 + rounds * runs for name in files}, calls
        runtimes.clear()
    with pytest.raises(ValueError, match="runtime"):
        evaluate.time_invoke(files, "gpu", rounds=1, runs=1)


def test_cli_round_trip(tmp_path, exported, data, capsys):
    qat, _ = exported["w8a8"]
    faq_tf.save_model(qat, tmp_path / "m.h5")
    from export_tflite.__main__ import main as export_main

    out = tmp_path / "m.tflite"
    assert export_main(["--model", str(tmp_path / "m.h5"), "--output", str(out)]) == 0
    assert "fully integer: True" in capsys.readouterr().out
    assert verify_main([str(out), "--json", "--edgetpu"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_evaluator_reports_per_class_results_by_name(tmp_path, exported, capsys):
    _, content = exported["w8a8"]
    path, out, png = tmp_path / "m.tflite", tmp_path / "r.json", tmp_path / "confusion.png"
    path.write_bytes(content)
    folder = image_folder(tmp_path, classes=3, per_class=20)
    argv = [f"--tflite={path}", f"--dataset=folder:{folder}", f"--json={out}", f"--plot={png}", "--runtime=micro"]
    assert evaluate_main(argv) == 0
    assert "per-class top-1: class_0" in capsys.readouterr().out
    result = json.loads(out.read_text())
    names, counts = result["confusion"]["classes"], np.array(result["confusion"]["counts"])
    assert names[:3] == ["class_0", "class_1", "class_2"] and counts.shape == (10, 10)  # the model has 10 outputs
    assert counts.sum() == result["examples"] and counts[3:].sum() == 0
    assert np.trace(counts) / counts.sum() * 100 == pytest.approx(result["top1"])
    for i, name in enumerate(names[:3]):
        assert result["per_class_top1"][name] == pytest.approx(counts[i, i] / counts[i].sum() * 100)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_no_check_writes_a_model_that_is_not_integer(tmp_path, data, capsys):
    """Refused with one line and exit code 2; with --no_check written, and the verifier lists why (exit code 1)."""
    from export_tflite.__main__ import main as export_main

    i = keras.Input((16, 16, 3))
    x = L.Activation("softsign", name="odd")(L.Conv2D(4, 3, name="conv")(i))  # ABS, ADD, DIV: float only
    qat = faq_tf.quantize_model(
        keras.Model(i, L.Dense(2, name="fc")(L.Flatten()(x))),
        "w8a8",
        data[:8],
        layer_overrides={"odd": "skip"},
        verbose=False,
    )
    faq_tf.save_model(qat, tmp_path / "m.h5")
    out = tmp_path / "m.tflite"
    argv = ["--model", str(tmp_path / "m.h5"), "--output", str(out)]
    assert export_main(argv) == 2 and not out.exists()
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "layers involved: [" in error and "'odd'" in error, error
    assert "violation(s), the first: float tensor" in error and "--no_check" in error, error
    assert export_main([*argv, "--no_check"]) == 1 and out.exists()
    assert "fully integer: False" in capsys.readouterr().out
    assert verify_main([str(out)]) == 1
    assert "FAILED" in capsys.readouterr().out


def _bias_tensor(content: bytes, layer: str) -> np.ndarray:
    """The dequantized int32 bias of the conv/dense op with the weights of `layer`."""
    from export_tflite.reader import read_model

    info = read_model(content)
    for op in info.ops:
        weights = info.tensors[op.inputs[1]] if len(op.inputs) > 1 else None
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and weights.name == f"{layer}/weights":
            if len(op.inputs) < 3 or op.inputs[2] < 0:
                return np.zeros(info.tensors[op.outputs[0]].shape[-1])  # the converter drops all-zero biases
            bias = info.tensors[op.inputs[2]]
            return bias.data.astype(np.float64) * np.asarray(bias.scales)
    raise AssertionError(f"no conv/dense op computes {layer}")


def test_biases_are_on_the_accumulator_grid(exported):
    from faq_tf.accumulator import snap_to_accumulator_grid

    for precision in ("w8a8", "w4a4"):
        qat, content = exported[precision]
        assert not snap_to_accumulator_grid(qat).changed  # convert() already snapped it
        # BN folded into a conv with a bias: offset = beta + (b - mean) * m is exactly what the
        # runtime stores (before snapping it was off by up to 1/2 step).
        bn, conv = qat.get_layer("quant_res_bn"), qat.get_layer("quant_res_conv")
        weights = {v.name.split("/")[-1].split(":")[0]: v.numpy() for v in bn.weights + conv.weights}
        sd = np.sqrt(weights["moving_variance"] + bn.layer.epsilon)
        m = np.floor(weights["gamma"] / sd * 16 + 0.5) / 16
        offset = weights["beta"] + (weights["bias"] - weights["moving_mean"]) * m
        np.testing.assert_array_equal(_bias_tensor(content, "res_conv"), offset.astype(np.float64))
        dense = qat.get_layer("quant_logits")
        bias = next(v.numpy() for v in dense.weights if v.name.split("/")[-1].startswith("bias"))
        np.testing.assert_allclose(_bias_tensor(content, "logits"), bias, rtol=0, atol=1e-7)


def test_snapping_moves_biases_onto_the_grid_and_rewrites_bn(data):
    from faq_tf.accumulator import snap_to_accumulator_grid

    keras.utils.set_random_seed(3)
    base = residual_model()
    for layer in base.layers:  # large random biases, so that the grid matters
        if isinstance(layer, L.BatchNormalization):
            layer.beta.assign(np.random.RandomState(0).normal(0, 1, layer.beta.shape))
    qat = faq_tf.quantize_model(base, "w8a8", data[:64], verbose=False)
    before = qat.predict(data[:16], verbose=0)
    report = snap_to_accumulator_grid(qat)
    assert report.moved > 0 and 0 < report.max_shift_steps, report
    assert "res_bn" in report.rewritten and "stem_bn" in report.rewritten
    res = [w for w in qat.get_layer("quant_res_bn").weights if "moving" in w.name]
    assert all(np.all(w.numpy() == (0 if "mean" in w.name else np.float32(1 - 1e-3))) for w in res)
    assert "res_bn" in report.layers and "stem_bn" in report.layers
    after = qat.predict(data[:16], verbose=0)
    assert np.mean(np.argmax(before, 1) == np.argmax(after, 1)) >= 0.9
    assert not snap_to_accumulator_grid(qat).changed
