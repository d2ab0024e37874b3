"""quantize_model end to end on small models: policy, graph rewriting, errors, saving."""

import os

import numpy as np
import pytest

import faq_tf
from conftest import listed_layers_model, residual_model
from faq_tf import graph, introspect, policy, registry
from faq_tf.compat import keras, tf, tfmot
from faq_tf.quantizers import Rounding, WeightQuantizer, weight_exponent

L = keras.layers


def _bits(qat):
    """{(layer, tensor): (bits, signed)} of every quantized tensor."""
    return {
        (t.layer, t.tensor): (t.bits, getattr(t.quantizer, "signed", True)) for t in introspect.quantized_tensors(qat)
    }


def test_w4a4_policy_on_residual_model(model, images):
    bits = _bits(faq_tf.quantize_model(model, "w4a4", images, verbose=False))
    assert bits[("image_quantize", "input")] == (8, False)  # network input: 8 bits
    assert bits[("stem_conv", "kernel")][0] == 8  # first conv keeps 8 bits
    assert bits[("logits", "kernel")][0] == 8  # last dense keeps 8 bits
    assert ("logits", "output") not in bits  # logits stay float
    assert bits[("res_conv", "kernel")][0] == 4
    assert bits[("dw", "depthwise_kernel")][0] == 4
    assert bits[("head_conv", "kernel")][0] == 4
    assert bits[("stem_relu", "output")] == (4, False)
    assert bits[("dw_relu", "output")] == (4, False)  # split out of DepthwiseConv2D
    assert bits[("res_relu", "output")] == (4, False)
    assert bits[("head_conv_relu", "output")] == (8, False)  # last ReLU feeds the classifier
    assert bits[("gap", "output")] == (8, False)
    assert bits[("res_bn", "output")] == (8, True)  # residual branch: signed, 8 bits
    assert bits[("concat", "output")] == (8, False)
    assert bits[("res_conv", "bias")] == (32, True)
    assert bits[("stem_bn", "gamma")][0] == 8
    # fused outputs are not quantized: conv -> BN -> ReLU, add -> ReLU
    for fused in ("stem_conv", "stem_bn", "res_conv", "res_add", "dw", "head_conv"):
        assert (fused, "output") not in bits


def test_plans_and_table_rows_hold_enum_members(model):
    plans = policy.plan_model(graph.canonicalize(model), policy.parse_precision("w4a4"))
    assert all(isinstance(p.role, policy.Role) and isinstance(p.rounding, Rounding) for p in plans.values())
    assert plans["image"].role is policy.Role.INPUT and plans["image"].role == "input"  # str members
    assert plans["stem_conv"].role is policy.Role.FUSED and plans["stem_bn"].role is policy.Role.FUSED
    assert plans["stem_relu"].role is policy.Role.RELU
    assert plans["stem_relu"].rounding is Rounding.HALF_EVEN  # conv -> BN -> ReLU: the conv's rule
    assert plans["head_conv_relu"].role is policy.Role.CLASSIFIER_INPUT
    assert plans["logits"].role is policy.Role.LOGITS and plans["logits"].activation_bits is None
    assert plans["pool"].role is policy.Role.OTHER
    assert plans["res_bn"].role is policy.Role.OTHER
    conv = registry.get_layer_info(model.get_layer("res_conv"))
    assert conv.output is registry.OutputKind.COMPUTED and conv.rounding is Rounding.HALF_EVEN
    assert conv.weights == (("kernel", registry.WeightRole.WEIGHT), ("bias", registry.WeightRole.BIAS))
    assert conv.fuses_into == (registry.FuseKind.BATCH_NORM, registry.FuseKind.RELU)
    assert registry.activation_kind(model.get_layer("res_relu")) is registry.ActivationKind.RELU
    # The config built from the enum members is the one built from their string values.
    by_member = registry.get_quantize_config(model.get_layer("res_conv"), 4, 8, True, -3, None, Rounding.HALF_EVEN)
    by_text = registry.get_quantize_config(model.get_layer("res_conv"), 4, 8, True, -3, None, "half_even")
    assert by_member == by_text and by_member.get_config() == by_text.get_config()
    assert by_member.get_config()["output_quantizer"]["config"]["rounding"] == "half_even"


def test_w8a8_quantizes_everything_at_8_bits(model, images):
    bits = _bits(faq_tf.quantize_model(model, "w8a8", images, verbose=False))
    assert {b for (layer, t), (b, _) in bits.items() if t not in ("bias", "beta")} == {8}
    assert bits[("logits", "output")] == (8, True)


def test_w8a8_is_close_to_float(model, images):
    qat = faq_tf.quantize_model(model, "w8a8", images, verbose=False)
    ref = model.predict(images, verbose=0)
    got = qat.predict(images, verbose=0)
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()
    assert not np.array_equal(got, ref)  # it is quantized


def test_calibrated_exponents(model, images):
    qat = faq_tf.quantize_model(model, "w8a8", images, verbose=False)
    by = {(t.layer, t.tensor): t for t in introspect.quantized_tensors(qat)}
    # images in [0, 1): y_max -> 2^0, unsigned 8-bit: l = 0 - 8
    assert by[("image_quantize", "input")].exponent == -8
    # weights: l from the pretrained weights' std, k = 5 at 8 bits
    w = model.get_layer("res_conv").kernel
    assert by[("res_conv", "kernel")].exponent == int(weight_exponent(w, 8, 5.0))


def test_mse_calibration_of_low_bit_tensors(model, images):
    """method_low_bit="mse" sets each 4-bit tensor's l to mse_exponents' choice, keeps the 8-bit
    ones, and reads a one-shot generator once for both passes."""
    del model  # one without pools or concats, whose exponents the runtime's shared scales would change
    x = keras.Input((16, 16, 1))
    # Pixels in [0, 1) times 1.05: the 99.9th percentile rounds up to 2, and a finer grid fits better.
    scale = keras.initializers.Constant(1.05)
    y = keras.layers.ReLU(name="scaled_relu")(keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer=scale)(x))
    for _ in range(2):
        y = keras.layers.ReLU()(keras.layers.BatchNormalization()(keras.layers.Conv2D(8, 3)(y)))
    model = keras.Model(x, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(y)))
    batches = [images[i : i + 16, ..., :1] for i in range(0, 64, 16)]
    percentile = faq_tf.quantize_model(model, "w4a4", batches, verbose=False)
    mse = faq_tf.quantize_model(model, "w4a4", (b for b in batches), method_low_bit="mse", verbose=False)
    before = {(t.layer, t.tensor): t for t in introspect.quantized_tensors(percentile) if t.tensor == "output"}
    after = {(t.layer, t.tensor): t for t in introspect.quantized_tensors(mse) if t.tensor == "output"}
    canonical = graph.canonicalize(model)
    low = {k: t for k, t in before.items() if t.bits < 8}
    grids = {k[0]: (*t.quantizer.levels(), t.exponent) for k, t in low.items()}
    expected = faq_tf.calibration.mse_exponents(canonical, grids, batches, num_batches=5)
    assert low and {k: after[k].exponent for k in low} == {k: expected[k[0]] for k in low}
    assert (before[("scaled_relu", "output")].exponent, after[("scaled_relu", "output")].exponent) == (-3, -4)
    assert all(after[k].exponent == t.exponent for k, t in before.items() if t.bits >= 8)
    with pytest.raises(ValueError, match="method_low_bit must be one of percentile, mse, output, got 'kl'"):
        faq_tf.quantize_model(model, "w4a4", batches, method_low_bit="kl", verbose=False)


def _output_error(qat, reference, batches) -> float:
    """Sum over the batches of (qat(x) - reference(x))^2, in float64, both at inference."""
    return sum(
        float(np.sum((qat(x, training=False).numpy().astype(np.float64) - reference(x, training=False).numpy()) ** 2))
        for x in batches
    )


def test_output_calibration_moves_low_bit_grids_only_while_the_outputs_get_closer(model, images):
    """method_low_bit="output" starts from mse's grids: its outputs are no farther from fp32's,
    no single +-1 move of a searched tensor's l brings them closer, 8-bit tensors and the tensors
    a concat or pool ties keep mse's l, and a one-shot generator is read once."""
    batches = [images[i : i + 16] for i in range(0, 64, 16)]
    reference = graph.canonicalize(model)
    mse = faq_tf.quantize_model(model, "w4a4", batches, method_low_bit="mse", verbose=False)
    out = faq_tf.quantize_model(model, "w4a4", (b for b in batches), method_low_bit="output", verbose=False)
    before = {t.layer: t for t in introspect.quantized_tensors(mse) if t.tensor == "output"}
    after = {t.layer: t for t in introspect.quantized_tensors(out) if t.tensor == "output"}
    plans = policy.plan_model(reference, policy.parse_precision("w4a4"))
    tied = policy.shared_scale_layers(plans, graph.model_graph(reference))
    assert {"concat", "res_relu", "dw_relu", "pool"} <= tied  # res_relu and dw_relu are the concat's inputs
    searched = [n for n, t in after.items() if t.bits < 8 and n not in tied]
    assert searched and "stem_relu" in searched
    assert all(after[n].exponent == t.exponent for n, t in before.items() if n not in searched)
    assert all(t.quantizer.exponent == t.exponent for t in after.values())  # configs hold the chosen l

    best = _output_error(out, reference, batches)
    assert best <= _output_error(mse, reference, batches)
    for n in searched:
        variable, chosen = after[n].exponent_variable, after[n].exponent
        for candidate in (chosen - 1, chosen + 1):
            variable.assign(candidate)
            assert _output_error(out, reference, batches) >= best, (n, candidate)
        variable.assign(chosen)


def test_output_calibration_of_a_model_without_low_bit_tensors_is_the_percentile_one(model, images):
    """w8a8 has no grid for the output search to move: the same exponents as the paper's calibration."""
    batches = [images[i : i + 16] for i in range(0, 64, 16)]
    paper = faq_tf.quantize_model(model, "w8a8", batches, verbose=False)
    out = faq_tf.quantize_model(model, "w8a8", batches, method_low_bit="output", verbose=False)
    exponents = [{(t.layer, t.tensor): t.exponent for t in introspect.quantized_tensors(m)} for m in (paper, out)]
    assert exponents[0] and exponents[0] == exponents[1]


def test_uncalibrated_control_mode(model):
    qat = faq_tf.quantize_model(model, "w4a4", calibrate=False, verbose=False)
    by = {(t.layer, t.tensor): t for t in introspect.quantized_tensors(qat)}
    assert by[("stem_relu", "output")].exponent == -2  # y_max = 2^2 - 1 -> l = -b/2
    assert by[("head_conv_relu", "output")].exponent == -4  # 8-bit: l = -4
    assert by[("res_bn", "output")].quantizer.signed


def test_missing_calibration_data(model):
    with pytest.raises(ValueError, match="calibration_data is required"):
        faq_tf.quantize_model(model, "w8a8")


def test_fp32_returns_the_canonical_float_model(model, images):
    flat = faq_tf.quantize_model(model, "fp32")
    assert not introspect.quantized_tensors(flat)
    np.testing.assert_allclose(flat.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5)


def test_nested_application_is_flattened(images):
    base = residual_model()
    inner = keras.Model(base.input, base.get_layer("gap").output, name="backbone")
    i = keras.Input((16, 16, 3), name="outer_in")
    x = L.Dropout(0.1, name="drop")(inner(i))
    head = keras.Model(i, L.Dense(3, name="head")(x))
    flat = graph.canonicalize(head)
    assert not any(isinstance(layer, keras.Model) for layer in flat.layers)
    assert "res_add" in [layer.name for layer in flat.layers]
    np.testing.assert_allclose(flat.predict(images, verbose=0), head.predict(images, verbose=0), atol=1e-5)
    qat = faq_tf.quantize_model(head, "w4a4", images, verbose=False)
    bits = _bits(qat)
    assert bits[("stem_conv", "kernel")][0] == 8 and bits[("head", "kernel")][0] == 8
    assert bits[("res_conv", "kernel")][0] == 4


def test_sequential_model(images):
    seq = keras.Sequential([keras.Input((16, 16, 3)), L.Conv2D(4, 3, activation="relu"), L.Flatten(), L.Dense(2)])
    qat = faq_tf.quantize_model(seq, "w8a8", images, verbose=False)
    assert qat.predict(images[:2], verbose=0).shape == (2, 2)


def test_unsupported_layer_error_names_layer_and_class(images):
    i = keras.Input((16, 16, 3))
    x = L.Conv2D(4, 3)(i)
    x = L.Lambda(lambda t: t * 2.0, name="double")(x)
    m = keras.Model(i, L.Dense(2)(L.Flatten()(x)))
    with pytest.raises(
        faq_tf.UnsupportedLayerError, match=r"'double' \(Lambda\).*layer_overrides=\{'double': 'skip'\}"
    ):
        faq_tf.quantize_model(m, "w8a8", images, verbose=False)


def test_unsupported_activation(images):
    i = keras.Input((16, 16, 3))
    m = keras.Model(i, L.Conv2D(4, 3, activation="swish", name="c")(i))
    with pytest.raises(faq_tf.UnsupportedLayerError, match="'c_swish' .*activation 'swish'"):
        faq_tf.quantize_model(m, "w8a8", images, verbose=False)


def test_skip_override_leaves_layer_float(images):
    i = keras.Input((16, 16, 3))
    x = L.Conv2D(4, 3, name="c")(i)
    x = L.UpSampling2D(name="up")(x)
    m = keras.Model(i, L.Dense(2, name="d")(L.Flatten()(x)))
    qat = faq_tf.quantize_model(m, "w8a8", images, layer_overrides={"up": "skip"}, verbose=False)
    assert type(qat.get_layer("up")) is L.UpSampling2D
    assert ("c", "kernel") in _bits(qat)


def test_overrides_by_name_and_regex(model, images):
    qat = faq_tf.quantize_model(
        model,
        "w4a4",
        images,
        layer_overrides={"res_.*": "w8", "stem_relu": "a8", "head_conv": {"weight_bits": 2}, "logits": "a8"},
        verbose=False,
    )
    bits = _bits(qat)
    assert bits[("res_conv", "kernel")][0] == 8
    assert bits[("stem_relu", "output")] == (8, False)
    assert bits[("head_conv", "kernel")][0] == 2
    assert bits[("logits", "output")][0] == 8
    assert bits[("dw", "depthwise_kernel")][0] == 4  # untouched


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"nope": "w8"}, "matches no layer"),
        ({"res_conv": "w33"}, r"weight_bits must be an integer in \[2, 16\], got 33"),
        ({"res_conv": "int8"}, "Unknown layer override"),
        ({"res_conv": {"bits": 8}}, "Unknown override keys"),
        ({"(": "w8"}, "not a valid regex"),
    ],
)
def test_bad_overrides(model, images, overrides, match):
    with pytest.raises(ValueError, match=match):
        faq_tf.quantize_model(model, "w4a4", images, layer_overrides=overrides, verbose=False)


@pytest.mark.parametrize("precision", ["w1a4", "w4a17", "int8", "w4", "", "w0a0"])
def test_bad_precision(model, images, precision):
    with pytest.raises(ValueError, match="precision|bits"):
        faq_tf.quantize_model(model, precision, images, verbose=False)


def test_custom_precision_string(model, images):
    bits = _bits(faq_tf.quantize_model(model, "w4a8", images, verbose=False))
    assert bits[("res_conv", "kernel")][0] == 4 and bits[("stem_relu", "output")][0] == 8


def test_keras3_models_are_converted_and_subclassed_models_rejected():
    import keras as keras3

    k3 = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2, name="fc")])
    qat = faq_tf.quantize_model(k3, "w8a8", np.ones((2, 4), "float32"), verbose=False)  # via faq_tf.from_keras3
    assert faq_tf.quantized_tensors(qat)

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.ones((1, 4)))
    with pytest.raises(TypeError, match="Subclassed models"):
        faq_tf.quantize_model(sub, "w8a8", np.ones((2, 4)))


def test_training_step_recomputes_weight_exponents(model, images):
    qat = faq_tf.quantize_model(model, "w4a4", images, verbose=False)
    opt = keras.optimizers.SGD(1.0)  # a big step, so the weights' std changes
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(qat(images[:8], training=True)))
    opt.apply_gradients(zip(tape.gradient(loss, qat.trainable_variables), qat.trainable_variables))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(qat(images[:8], training=True)))
    for t in introspect.quantized_tensors(qat):
        if isinstance(t.quantizer, WeightQuantizer):
            # stored l = l computed from the weights seen by the last training forward pass
            expected = weight_exponent(t.weight, t.bits, t.quantizer.clip_sigmas)
            assert t.exponent == int(expected), t.layer


@pytest.mark.parametrize("fmt", ["model.h5", "saved_model"])
def test_save_and_reload_keeps_every_exponent(model, images, tmp_path, fmt):
    qat = faq_tf.quantize_model(model, "w4a4", images, verbose=False)
    with tf.GradientTape() as tape:  # one training pass moves the weight exponents
        tape.watch(qat.trainable_variables)
        qat(images[:4] * 50.0, training=True)
    path = os.path.join(tmp_path, fmt)
    faq_tf.save_model(qat, path)
    loaded = faq_tf.load_model(path)
    before = {(t.layer, t.tensor): t.exponent for t in introspect.quantized_tensors(qat)}
    after = {(t.layer, t.tensor): t.exponent for t in introspect.quantized_tensors(loaded)}
    assert before == after and len(before) > 10
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), qat.predict(images, verbose=0))
    assert introspect.precision_summary(loaded) == introspect.precision_summary(qat)


def test_h5_loads_with_plain_keras_under_quantize_scope(model, images, tmp_path):
    qat = faq_tf.quantize_model(model, "w8a8", images, verbose=False)
    path = str(tmp_path / "m.h5")
    qat.save(path)
    with faq_tf.quantize_scope():
        loaded = keras.models.load_model(path)
    assert any(isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2) for layer in loaded.layers)


def test_keras_format_is_refused_clearly(model, images, tmp_path):
    qat = faq_tf.quantize_model(model, "w8a8", images, verbose=False)
    with pytest.raises(ValueError, match=r"\.keras cannot be reloaded.*\.h5"):
        faq_tf.save_model(qat, tmp_path / "m.keras")
    qat.save(tmp_path / "m.keras")  # written anyway (by Keras itself): load_model says what it is
    with pytest.raises(ValueError, match=r"holds a QAT model.*\.h5"):
        faq_tf.load_model(tmp_path / "m.keras")


@pytest.mark.parametrize("content", [b"", b"\x89HDF\r\n\x1a\n garbage", os.urandom(256)])
def test_corrupt_model_file(tmp_path, content):
    path = tmp_path / "bad.h5"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="Could not load a Keras model from"):
        faq_tf.load_model(path)


def test_summary_lists_layers_bits_and_exponents(model, images):
    text = faq_tf.precision_summary(faq_tf.quantize_model(model, "w4a4", images, verbose=False))
    lines = {line.split()[0]: line.split() for line in text.splitlines()[2:-1]}
    assert lines["res_conv"][:4] == ["res_conv", "Conv2D", "4", lines["res_conv"][3]]
    assert lines["stem_relu"][2:4] == ["-", "4u"]
    assert "activation tensors quantized" in text.splitlines()[-1]


def test_every_listed_layer_type(images, capsys):
    m = listed_layers_model()
    # fold_input=False: its Rescaling and Normalization stay layers (tests/test_input_scaling.py folds them)
    qat = faq_tf.quantize_model(m, "w4a4", images, fold_input=False, verbose=True)
    bits = _bits(qat)
    assert bits[("rescale", "output")] == (8, True)  # signed: [-1, 1)
    assert bits[("norm", "output")][0] == 8
    assert bits[("relu6", "output")] == (4, False)
    assert bits[("avg", "output")] == (4, False)  # an average pool keeps its input's grid
    exponents = {(qt.layer, qt.tensor): qt.exponent for qt in faq_tf.quantized_tensors(qat)}
    assert exponents[("avg", "output")] == exponents[("relu6", "output")]
    assert bits[("fc_relu", "output")] == (8, False)  # feeds the classifier
    assert bits[("bn", "gamma")][0] == 8  # scale=False became gamma = 1, quantized
    y = qat.predict(images[:4], verbose=0)
    np.testing.assert_allclose(y, m.predict(images[:4], verbose=0), atol=0.25)
    assert "relu6" in capsys.readouterr().out  # verbose prints the summary
