"""export_tflite: integer conversion that agrees with Keras, the verifier, the evaluator."""

import json
import os

import numpy as np
import pytest

import faq_tf
from conftest import residual_model
from export_tflite import ExportError, TfliteFormatError, convert, quantize_float_outputs, verify
from export_tflite.evaluate import TfliteRunner, compare
from export_tflite.evaluate import main as evaluate_main
from export_tflite.verify import is_pow2_times_int8, is_power_of_two
from export_tflite.verify import main as verify_main
from faq_tf.compat import keras, tf

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
def test_integer_model_agrees_with_keras_within_one_step(exported, data, precision):
    qat, content = exported[precision]
    reference = quantize_float_outputs(qat, data[:64])  # w4a4: logits get their 8-bit range
    runner = TfliteRunner(content)
    tflite, keras_logits = runner(data), reference.predict(data, verbose=0)
    result = compare(tflite, keras_logits, np.zeros(len(data), int), runner.output_scale)
    assert result["top1_agreement"] >= 99.0, result
    assert result["max_logit_diff_steps"] <= 4.0, result
    # w4a4 misses the one-step target today: with power-of-two scales the requantization
    # multiplier has few significant bits, so exact .5 ties are common (1 in 64 values of a
    # 4-bit layer); FakeQuant rounds them up, XNNPACK to even (README, "Export fidelity").
    assert result["within_one_step"] >= (99.0 if precision == "w8a8" else 75.0), result


@pytest.mark.parametrize("precision", ["w8a8", "w4a4"])
def test_exported_model_is_integer_with_power_of_two_scales(exported, data, precision):
    _, content = exported[precision]
    report = verify(content, edgetpu=True, sample_data=data[:8])
    assert report.ok, report.violations
    inp = [t for t in report.tensors if t["index"] == 0 or not t["constant"]]
    assert all(t["dtype"] in ("INT8", "INT32") for t in report.tensors)
    assert any(t["scale_ok"] for t in inp)
    if precision == "w4a4":
        assert report.level_counts and max(report.level_counts.values()) <= 16


def test_pack_int4_stores_4bit_weights_packed(exported, data):
    qat, int8_storage = exported["w4a4"]
    packed = convert(qat, representative_data=data[:64], pack_int4=True)
    dtypes = {t["dtype"] for t in verify(packed).tensors}
    assert "INT4" in dtypes
    assert len(packed) < len(int8_storage)
    np.testing.assert_array_equal(TfliteRunner(packed)(data), TfliteRunner(int8_storage)(data))
    assert not verify(packed, edgetpu=True).ok  # the Edge TPU has no INT4


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


def test_verifier_flags_float_hybrid_and_non_power_of_two(data):
    model = residual_model()
    float_report = verify(_tflite_from_keras(model))
    assert any("float tensor" in v for v in float_report.violations)
    hybrid = verify(_tflite_from_keras(model, quantize=True))  # dynamic-range: int8 weights, float math
    assert any("float tensor" in v for v in hybrid.violations)
    ptq = verify(_tflite_from_keras(model, quantize=True, data=data))  # PTQ picks arbitrary scales
    assert any("is not a power of two" in v for v in ptq.violations)


def test_power_of_two_helpers():
    assert is_power_of_two(2.0**-7) and not is_power_of_two(0.3) and not is_power_of_two(0.0)
    assert is_pow2_times_int8(53 * 2.0**-8) and is_pow2_times_int8(2.0**-4)
    assert not is_pow2_times_int8(0.1)


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


def test_cli_round_trip(tmp_path, exported, data, capsys):
    qat, _ = exported["w8a8"]
    faq_tf.save_model(qat, tmp_path / "m.h5")
    from export_tflite.__main__ import main as export_main

    out = tmp_path / "m.tflite"
    assert export_main(["--model", str(tmp_path / "m.h5"), "--output", str(out)]) == 0
    assert "fully integer: True" in capsys.readouterr().out
    assert verify_main([str(out), "--json", "--edgetpu"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def _bias_tensor(content: bytes, layer: str) -> np.ndarray:
    """The dequantized int32 bias of the conv/dense op whose output `layer` computes."""
    from export_tflite.flatbuffer import read_model

    info = read_model(content)
    for op in info.ops:
        out = info.tensors[op.outputs[0]]
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and f"/quant_{layer}/" in out.name:
            if len(op.inputs) < 3 or op.inputs[2] < 0:
                return np.zeros(info.tensors[op.outputs[0]].shape[-1])  # the converter drops all-zero biases
            bias = info.tensors[op.inputs[2]]
            return bias.data.astype(np.float64) * np.asarray(bias.scales)
    raise AssertionError(f"no conv/dense op computes {layer}")


def test_biases_are_on_the_accumulator_grid(exported):
    from faq_tf.accumulator import snap_to_accumulator_grid

    for precision in ("w8a8", "w4a4"):
        qat, content = exported[precision]
        assert snap_to_accumulator_grid(qat).moved == 0  # convert() already snapped it
        # BN folded into a conv with a bias: offset = beta + (b - mean) * m must be what the
        # runtime stores, to float32 precision (before snapping it was off by up to 1/2 step).
        bn, conv = qat.get_layer("quant_res_bn"), qat.get_layer("quant_res_conv")
        weights = {v.name.split("/")[-1].split(":")[0]: v.numpy() for v in bn.weights + conv.weights}
        sd = np.sqrt(weights["moving_variance"] + bn.layer.epsilon)
        m = np.floor(weights["gamma"] / sd * 16 + 0.5) / 16
        offset = weights["beta"] + (weights["bias"] - weights["moving_mean"]) * m
        stored = _bias_tensor(content, "res_conv")
        np.testing.assert_allclose(stored, offset, rtol=0, atol=1e-5 * np.abs(offset).max() + 1e-7)
        dense = qat.get_layer("quant_logits")
        bias = next(v.numpy() for v in dense.weights if v.name.split("/")[-1].startswith("bias"))
        np.testing.assert_allclose(_bias_tensor(content, "logits"), bias, rtol=0, atol=1e-7)


def test_snapping_moves_biases_by_at_most_half_a_step(data):
    from faq_tf.accumulator import snap_to_accumulator_grid

    keras.utils.set_random_seed(3)
    base = residual_model()
    for layer in base.layers:  # large random biases, so that the grid matters
        if isinstance(layer, L.BatchNormalization):
            layer.beta.assign(np.random.RandomState(0).normal(0, 1, layer.beta.shape))
    qat = faq_tf.quantize_model(base, "w8a8", data[:64], verbose=False)
    before = qat.predict(data[:16], verbose=0)
    report = snap_to_accumulator_grid(qat)
    assert report.moved > 0 and 0 < report.max_shift_steps <= 0.5 + 1e-3, report
    assert "res_bn" in report.layers and "stem_bn" in report.layers
    after = qat.predict(data[:16], verbose=0)
    assert np.mean(np.argmax(before, 1) == np.argmax(after, 1)) >= 0.9
    assert snap_to_accumulator_grid(qat).moved == 0
