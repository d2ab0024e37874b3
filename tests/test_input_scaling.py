"""A Rescaling / Normalization at the input, folded into the first layers: pixels in, integer out."""

import numpy as np
import pytest

import faq_tf
from benchmarks.transfer_export import transfer_model
from conftest import listed_layers_model
from export_tflite import convert, quantize_float_outputs, read_model
from export_tflite.evaluate import TfliteRunner
from faq_tf import graph
from faq_tf.compat import keras
from faq_tf.input_scaling import InputScaling, fold_input_scaling
from faq_tf.models import own_model_preprocess, raw_pixels, unit_preprocess

L = keras.layers


def _pixels(n: int, shape=(16, 16, 3), seed: int = 0) -> np.ndarray:
    """Whole-number pixels in [0, 255], as a uint8 image holds them."""
    return np.random.RandomState(seed).randint(0, 256, (n, *shape)).astype("float32")


def _randomize(model: keras.Model, seed: int = 2) -> keras.Model:
    """Non-trivial biases and BN statistics, so that a wrong offset shows."""
    rng = np.random.RandomState(seed)
    for layer in graph.iter_layers(model):
        if isinstance(layer, L.BatchNormalization):
            n = layer.beta.shape[0]
            gamma = [rng.uniform(0.5, 2, n)] if layer.scale else []
            layer.set_weights(gamma + [rng.normal(0, 0.3, n), rng.normal(0, 0.3, n), rng.uniform(0.5, 2, n)])
        elif isinstance(layer, (L.Conv2D, L.Dense)) and getattr(layer, "use_bias", False):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.5, bias.shape).astype("float32")])
    return model


def _head(x, name: str):
    x = L.ReLU(name=f"{name}_relu")(x)
    return L.Dense(3, name="logits")(L.GlobalAveragePooling2D(name="gap")(x))


def _conv_bias():  # 'valid' padding: exact even with an offset
    i = keras.Input((16, 16, 3))
    x = L.Rescaling(1 / 127.5, offset=-1, name="scale")(i)
    return keras.Model(i, _head(L.Conv2D(6, 3, name="conv")(x), "conv"))


def _conv_bn():  # no bias: the offset goes into the BN's moving mean
    i = keras.Input((16, 16, 3))
    x = L.Normalization(mean=[120.0, 110.0, 100.0], variance=[3600.0, 2500.0, 4900.0], name="norm")(i)
    x = L.Conv2D(6, 3, use_bias=False, name="conv")(x)
    return keras.Model(i, _head(L.BatchNormalization(name="bn")(x), "bn"))


def _no_bias():  # no bias and no BN: the conv gets a bias
    i = keras.Input((16, 16, 3))
    x = L.Rescaling([0.01, 0.02, 0.03], offset=[-1.0, -2.0, 0.5], name="scale")(i)
    return keras.Model(i, _head(L.Conv2D(6, 3, use_bias=False, name="conv")(x), "conv"))


def _depthwise_and_dense():  # two consumers: a depthwise conv and a Dense on the last axis
    i = keras.Input((16, 16, 3))
    x = L.Rescaling(1 / 255, name="scale")(i)
    d = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    p = L.Dense(6, name="pointwise")(x)
    return keras.Model(i, _head(L.Add(name="add")([d, p]), "add"))


def _same_padding_no_offset():  # 'same' padding is harmless without an offset
    i = keras.Input((16, 16, 3))
    x = L.Rescaling(1 / 256, name="scale")(i)
    return keras.Model(i, _head(L.Conv2D(6, 3, padding="same", name="conv")(x), "conv"))


@pytest.mark.parametrize("build", [_conv_bias, _conv_bn, _no_bias, _depthwise_and_dense, _same_padding_no_offset])
def test_the_folded_model_computes_the_same_function(build):
    model = _randomize(build())
    folded, scaling = fold_input_scaling(graph.canonicalize(model))
    assert scaling is not None and scaling.exact
    assert not any(isinstance(layer, (L.Rescaling, L.Normalization)) for layer in folded.layers)
    x = _pixels(8)
    want, got = model.predict(x, verbose=0), folded.predict(x, verbose=0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert InputScaling.from_config(scaling.get_config()) == scaling


def test_an_offset_before_zero_padding_changes_only_the_border():
    i = keras.Input((16, 16, 3))
    x = L.Rescaling(1 / 127.5, offset=-1, name="scale")(i)
    model = keras.Model(i, L.Conv2D(4, 3, padding="same", name="conv")(x))
    folded, scaling = fold_input_scaling(graph.canonicalize(model))
    assert not scaling.exact and "padded with pixel 0" in scaling.describe()
    x = _pixels(4)
    want, got = model.predict(x, verbose=0), folded.predict(x, verbose=0)
    np.testing.assert_allclose(got[:, 1:-1, 1:-1], want[:, 1:-1, 1:-1], rtol=1e-4, atol=1e-4)
    assert np.abs(got[:, 0] - want[:, 0]).max() > 1e-2  # the border sees pixel 0, not y = 0


def test_scaling_that_cannot_be_folded_is_left_alone():
    i = keras.Input((16, 16, 3))
    x = L.Rescaling(1 / 127.5, offset=-1, name="scale")(i)
    nonlinear = keras.Model(i, L.Conv2D(4, 3, name="conv")(L.ReLU(name="relu")(x)))
    j = keras.Input((16, 16, 3))
    y = L.Conv2D(4, 3, name="conv")(j)
    middle = keras.Model(j, L.Conv2D(4, 3, name="conv2")(L.Rescaling(0.5, name="scale")(y)))
    for model in (nonlinear, middle):
        canonical = graph.canonicalize(model)
        folded, scaling = fold_input_scaling(canonical)
        assert scaling is None and folded is canonical


def test_quantize_model_folds_by_default_and_keeps_the_layers_when_asked():
    model = listed_layers_model()
    x = _pixels(32)
    qat = faq_tf.quantize_model(model, "w8a8", x, verbose=False)
    names = {getattr(layer, "layer", layer).name for layer in qat.layers}
    assert not {"rescale", "norm"} & names
    (quantize_input,) = [layer for layer in qat.layers if type(layer).__name__ == "QuantizeInput"]
    assert quantize_input.input_scaling.layers == ("rescale", "norm")
    assert (quantize_input.quantizer.bits, quantize_input.quantizer.signed, quantize_input.quantizer.exponent) == (
        8,
        False,
        0,
    )  # pixels: [0, 255] in steps of 1, whatever the calibration data's range
    assert own_model_preprocess(qat) is raw_pixels
    kept = faq_tf.quantize_model(model, "w8a8", x, fold_input=False, verbose=False)
    assert {"rescale", "norm"} <= {getattr(layer, "layer", layer).name for layer in kept.layers}
    assert own_model_preprocess(kept) is raw_pixels  # it starts with its Rescaling
    plain = faq_tf.quantize_model(_randomize(_head_only()), "w8a8", x / 256, verbose=False)
    assert own_model_preprocess(plain) is unit_preprocess


def _head_only():
    i = keras.Input((16, 16, 3))
    return keras.Model(i, _head(L.Conv2D(6, 3, name="conv")(i), "conv"))


@pytest.mark.parametrize("precision", ["w8a8", "w4a4"])
def test_transfer_learning_model_with_its_rescaling_exports_fully_integer(precision, tmp_path):
    model = _randomize(transfer_model(32, alpha=0.35))  # Keras's transfer-learning recipe, small
    x = _pixels(64, (32, 32, 3), seed=1)
    qat = faq_tf.quantize_model(model, precision, x, verbose=False)
    if precision == "w8a8":
        path = str(tmp_path / "qat.h5")
        qat.save(path)
        qat = faq_tf.load_model(path)  # the folded scaling survives a save
    assert own_model_preprocess(qat) is raw_pixels
    reference = quantize_float_outputs(qat, x)  # w4a4: the logits get their 8-bit range
    content = convert(reference, io_dtype="uint8")  # verified fully integer
    assert "MUL" not in {op.name for op in read_model(content).ops}
    runner = TfliteRunner(content)
    scale, zero = runner.input["quantization"]
    assert runner.input["dtype"] == np.uint8 and (scale, zero) == (1.0, 0)  # raw pixels go in as they are
    test = _pixels(16, (32, 32, 3), seed=3)
    np.testing.assert_array_equal(runner(test), reference.predict(test, verbose=0))


def test_export_cli_records_that_the_folded_model_takes_pixels(tmp_path, capsys):
    from export_tflite.__main__ import main as export_main
    from export_tflite.metadata import read_metadata

    i = keras.Input((16, 16, 3))
    x = L.Rescaling(1 / 127.5, offset=-1, name="scale")(i)
    model = _randomize(keras.Model(i, _head(L.Conv2D(6, 3, name="conv")(x), "conv")))
    qat = faq_tf.quantize_model(model, "w8a8", _pixels(32), verbose=False)
    path, out = str(tmp_path / "qat.h5"), str(tmp_path / "m.tflite")
    qat.save(path)
    assert export_main([f"--model={path}", f"--output={out}", "--io_dtype=uint8"]) == 0  # no --model_name needed
    metadata = read_metadata(open(out, "rb").read())
    assert (metadata.mean, metadata.std) == ((0.0,), (1.0,))  # raw pixels
    assert "scale (x * 0.00784314 + -1) folded into conv" in metadata.description
    printed = capsys.readouterr().out
    assert "metadata:" in printed and "give --model_name" not in printed, printed
    from export_tflite.verify import main as verify_main

    assert verify_main([out]) == 0
    assert "feed raw uint8 pixels" in capsys.readouterr().out
