"""Deployment targets: the Keras model computes what each integer runtime computes, logit for logit."""

import contextlib
import re

import numpy as np
import pytest

import faq_tf
from conftest import EVERY_LAYER_MODELS, randomize_batch_norms, residual_model
from export_tflite import convert, file_target, quantize_float_outputs, verify
from export_tflite.evaluate import TfliteRunner
from export_tflite.reader import read_model
from export_tflite.verify import _micro_violations
from faq_tf import introspect
from faq_tf.compat import keras
from faq_tf.targets import TARGETS, Requantization, _mean_multiplier, as_target, quantize_multiplier, set_target

L = keras.layers

RUNTIME = {"xnnpack": "xnnpack", "reference": "builtin", "micro": "micro"}


def tails_model() -> keras.Model:
    """Signed results, where the runtimes break ties apart, and the kernels' tails."""
    i = keras.Input((6, 6, 3), name="image")
    x = L.Conv2D(12, 3, padding="same", name="conv")(i)  # signed conv
    d = L.DepthwiseConv2D(3, padding="same", name="dw")(x)  # 12 channels: a block of 8, a tail of 4
    y = L.Conv2D(12, 1, name="pw")(x)
    a = L.Add(name="add")([d, y])  # signed add
    p = L.AveragePooling2D(2, name="avg")(a)  # 3x3x12 = 108 values: 6 blocks of 16 and a tail of 12
    r = L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, name="dw2")(a)  # 24 channels
    r = L.BatchNormalization(name="dw2_bn")(r)
    r = L.ReLU(name="dw2_relu")(r)
    c = L.Concatenate(name="concat")([p, r])  # the pooled input is re-rounded by a QUANTIZE op
    g = L.GlobalAveragePooling2D(name="gap")(c)  # a signed mean of 9 values
    return keras.Model(i, L.Dense(10, name="logits")(g), name="tails")


def _coarser_concat(qat: keras.Model, steps: int = 2) -> None:
    """Moves tails_model's concat (and the tensors it shares its scale with) `steps` exponents up,
    so that its QUANTIZE op divides the pooled input by 2^(steps + 1) and rounds twice."""
    for qt in introspect.quantized_tensors(qat):
        if qt.tensor == "output" and qt.layer in ("concat", "dw2_relu"):
            qt.exponent_variable.assign(qt.exponent_variable + steps)


@contextlib.contextmanager
def on_target(model: keras.Model, target: str, pack_int4: bool = False):
    """set_target for the block, then back to xnnpack (the module's models are shared by its tests)."""
    try:
        yield set_target(model, target, pack_int4=pack_int4)
    finally:
        set_target(model, "xnnpack")


MODELS = [*EVERY_LAYER_MODELS, tails_model]
PRECISIONS = ["w8a8", "w4a4", "w4a4+int4"]


@pytest.fixture(scope="module")
def exports():
    """Every model of MODELS at every precision, with its file, its test images and their logits on each runtime."""
    keras.utils.set_random_seed(0)
    out = {}
    for build in MODELS:
        base = randomize_batch_norms(build())
        rng = np.random.RandomState(1)
        data = rng.rand(48, *base.input_shape[1:]).astype("float32")
        for precision in ("w8a8", "w4a4"):
            qat = faq_tf.quantize_model(base, precision, data[:32], verbose=False)
            if build is tails_model:
                _coarser_concat(qat)
            for packed in (False, True) if precision == "w4a4" else (False,):
                content = convert(qat, representative_data=data[:32], pack_int4=packed)
                name = precision + ("+int4" if packed else "")
                out[build.__name__, name] = (quantize_float_outputs(qat, data[:32]), content, data, packed)
    return out


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_keras_logits_equal_the_runtime_logits(exports, target, precision):
    """On each runtime, every model with every supported op gives exactly the Keras logits: w8a8, w4a4
    and the packed INT4 file (which XNNPACK runs with its INT4 convolutions on the builtin kernels)."""
    other = {"xnnpack": "reference", "reference": "micro", "micro": "reference"}[target]
    told_apart = 0
    for build in MODELS:
        qat, content, data, packed = exports[build.__name__, precision]
        runtime = TfliteRunner(content, runtime=RUNTIME[target])(data)
        with on_target(qat, target, pack_int4=packed) as report:
            assert report.exact, report.not_emulated
            np.testing.assert_array_equal(
                runtime, qat.predict(data, verbose=0), err_msg=f"{build.__name__} on {target}"
            )
        with on_target(qat, other, pack_int4=packed):
            told_apart += not np.array_equal(runtime, qat.predict(data, verbose=0))
    # The inputs hit the ties on which the runtimes differ: with another target's arithmetic,
    # the Keras model misses this runtime's logits on most models.
    assert told_apart >= 3, told_apart


def test_the_tails_are_where_the_kernels_say(exports):
    """tails_model has a depthwise conv with a channel tail and a QUANTIZE with an element tail
    that divides by more than 2 (so that it rounds twice): both rules are exercised."""
    qat, content, _, _ = exports["tails_model", "w8a8"]
    info = read_model(content)
    ops = [op.name for op in info.ops]
    assert "QUANTIZE" in ops and ops.count("DEPTHWISE_CONV_2D") == 2
    with on_target(qat, "reference") as report:
        assert report.emulated["dw"] == "DEPTHWISE_CONV_2D" and report.emulated["concat"] == "QUANTIZE"
        assert report.emulated["add"] == "ADD" and report.emulated["gap"] == "MEAN"
        outputs = {qt.layer: qt.quantizer for qt in introspect.quantized_tensors(qat) if qt.tensor == "output"}
        spec = outputs["concat"].requantization
        pooled = spec.shift[0, 0, :12]
        assert np.all(pooled <= -1), pooled  # the pooled channels: a right shift, two roundings
        ties_up = spec.ties_up[..., :12].reshape(-1)  # flat index of the pooled (3, 3, 12) input
        assert ties_up[:96].all() and not ties_up[96:].any()
        assert outputs["dw"].requantization.ties_up.tolist() == [True] * 8 + [False] * 4


# (real multiplier, M, shift): real = M * 2^(shift - 31), M in [2^30, 2^31), rounded half away from zero.
QUANTIZE_MULTIPLIER = [
    (0.5, 2**30, 0),
    (0.25, 2**30, -1),
    (1.0, 2**30, 1),
    (0.75, 3 * 2**29, 0),
    (1 / 3, 1431655765, -1),  # 2/3 * 2^31 = 1431655765.33
    (1 - 2**-40, 2**30, 1),  # the mantissa rounds up to 2^31: halved, shift + 1
    (2**-40, 0, 0),  # below 2^-32: flushed to zero, as TFLite does
]


@pytest.mark.parametrize("real,m,shift", QUANTIZE_MULTIPLIER)
def test_quantize_multiplier_as_tflite_computes_it(real, m, shift):
    assert quantize_multiplier(real) == (m, shift)


def test_mean_folds_one_over_n_into_the_multiplier_with_an_integer_division():
    # n = 49, real = 1: M = 2^30, shift = 1; k = floor(log2 49) = 5: M' = 2^35 // 49, shift' = 1 - 5.
    assert _mean_multiplier(1.0, 49) == (2**35 // 49, -4)
    assert _mean_multiplier(1.0, 4) == (2**30, -1)  # a power of two stays exact: 1/4 = 2^30 * 2^(-1 - 31)


def _gemmlowp(acc: int, m: int, shift: int, ties_up: bool) -> int:
    """TFLite's MultiplyByQuantizedMultiplier as gemmlowp writes it, in Python integers."""
    left, right = max(shift, 0), max(-shift, 0)
    ab = acc * (1 << left) * m
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    t1 = abs(ab + nudge) // (1 << 31) * (1 if ab + nudge >= 0 else -1)  # truncating division
    if ties_up:  # the x86 kernels' rounding shift: (t1 + 2^(right-1)) >> right
        return (t1 + ((1 << right) >> 1)) >> right
    mask = (1 << right) - 1
    threshold = (mask >> 1) + (1 if t1 < 0 else 0)
    return (t1 >> right) + (1 if (t1 & mask) > threshold else 0)  # RoundingDivideByPOT


# acc -> (q with ties up, q with ties away from zero) for r = 1/4 (M = 2^30, shift = -1):
# t1 = floor((acc + 1) / 2) (ties up), then t1 / 2 rounded.
TWO_ROUNDINGS = {
    -6: (-1, -2),  # t1 = -3: -1.5
    -5: (-1, -1),  # t1 = -2: -1 (the value is -1.25)
    -3: (0, -1),  # t1 = -1: -0.5 (the value is -0.75)
    -2: (0, -1),  # t1 = -1: -0.5 (the value is -0.5)
    -1: (0, 0),  # t1 = 0 (the value is -0.25)
    1: (1, 1),  # t1 = 1: 0.5, where one rounding of the value 0.25 gives 0
    2: (1, 1),  # t1 = 1: 0.5 (the value is 0.5)
    5: (2, 2),  # t1 = 3: 1.5, where one rounding of the value 1.25 gives 1
    6: (2, 2),  # t1 = 3: 1.5 (the value is 1.5)
}


@pytest.mark.parametrize("ties_up", [True, False])
def test_requantization_rounds_as_the_runtimes_do(ties_up):
    acc = np.array(sorted(TWO_ROUNDINGS), np.float32)
    spec = Requantization("CONV_2D", np.array(1.0), np.array(2**30), np.array(-1), np.array(ties_up))
    q = spec(acc, 1.0, -128, 127).numpy()
    np.testing.assert_array_equal(q, [TWO_ROUNDINGS[int(a)][0 if ties_up else 1] for a in acc])
    # And on random accumulators and multipliers, against gemmlowp's formula in Python integers.
    rng = np.random.RandomState(0)
    for _ in range(20):
        m, shift = quantize_multiplier(float(rng.uniform(1e-4, 1.5)))
        acc = rng.randint(-(2**20), 2**20, 2000)
        unit = 2.0**-10
        spec = Requantization("CONV_2D", np.array(unit), np.array(m), np.array(shift), np.array(ties_up))
        q = spec((acc * unit).astype(np.float32), 1.0, -(2**31), 2**31 - 1).numpy()
        np.testing.assert_array_equal(q, [_gemmlowp(int(a), m, shift, ties_up) for a in acc])


def test_targets_are_named_and_recorded(exports):
    qat, _, data, _ = exports["residual_model", "w8a8"]
    assert as_target("builtin") is as_target("reference") is faq_tf.Target.REFERENCE
    with pytest.raises(ValueError, match=r"target must be one of \('xnnpack', 'reference', 'micro'\) .*got 'gpu'"):
        set_target(qat, "gpu")
    content = convert(qat, representative_data=data[:32], target="micro")
    assert file_target(content) == "micro"
    assert any("exported for the micro target" in n for n in verify(content).notes)
    micro = TfliteRunner(content, runtime="micro")(data)
    assert not np.array_equal(micro, qat.predict(data, verbose=0))  # the export leaves qat's arithmetic alone
    with on_target(qat, "micro"):
        np.testing.assert_array_equal(micro, qat.predict(data, verbose=0))
    with pytest.raises(ValueError, match="no faq_tf quantizers.*quantize_model first"):
        set_target(residual_model(), "micro")


def test_micro_rules_flag_what_tflm_does_not_run(exports):
    _, content, _, _ = exports["residual_model", "w4a4+int4"]
    info = read_model(content)
    assert _micro_violations(info) == []
    fc = next(op for op in info.ops if op.name == "FULLY_CONNECTED")
    weights = info.tensors[fc.inputs[1]]
    weights.dtype, weights.scales = "INT4", [0.5, 0.25]  # per-channel INT4 dense weights
    info.ops[0].name = "GELU"
    info.tensors[info.inputs[0]].shape_signature = [-1, 16, 16, 3]
    found = _micro_violations(info)
    assert any("op 0 GELU is not in TFLM's op resolver" in v for v in found), found
    assert any("per-channel INT4 weights" in v for v in found), found
    assert any("dynamic shape" in v for v in found), found


def test_train_export_for_micro_evaluate_on_micro(tmp_path, capsys):
    """faq-train w4a4 -> python -m export_tflite --target=micro --pack_int4 -> evaluate --runtime=micro:
    the export's own check and the evaluator find the Keras logits identical to TFLM's."""
    import json

    from conftest import tiny_run_config
    from export_tflite.__main__ import main as export_main
    from export_tflite.evaluate import main as evaluate_main
    from faq_tf.training import run

    cfg = tiny_run_config(tmp_path, precision="w4a4", epochs=1)
    run(cfg)
    out, results = tmp_path / "m.tflite", tmp_path / "r.json"
    assert export_main([f"--model_dir={cfg.model_dir}", f"--output={out}", "--target=micro", "--pack_int4"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"check on micro: outputs identical to the Keras model's for (\d+) of \1 images", printed), printed
    assert file_target(out.read_bytes()) == "micro"
    argv = [f"--tflite={out}", f"--dataset={cfg.dataset}", f"--keras_model={cfg.model_dir}/model.h5"]
    for runtime in ("micro", "builtin", "xnnpack"):  # a packed INT4 file runs on all three
        assert evaluate_main([*argv, f"--runtime={runtime}", f"--json={results}"]) == 0
        result = json.loads(results.read_text())
        assert result["identical"] == 100.0 and result["keras_target"] == as_target(runtime).value, result


def test_softmax_on_every_runtime():
    """A 1000-way softmax of int8 logits: TFLM's fixed-point exp and reciprocal (emulated on the
    micro target) differ from the float softmax on a few values; LiteRT's float32 table does not."""
    classes = 1000
    i = keras.Input((classes,), name="x")
    dense = L.Dense(classes, use_bias=False, kernel_initializer="identity", name="logits")
    model = keras.Model(i, L.Activation("softmax", name="prob")(dense(i)))
    data = (np.random.RandomState(0).randn(2000, classes) * 8).astype("float32")
    qat = faq_tf.quantize_model(model, "w8a8", data[:256], verbose=False)
    content = convert(qat, representative_data=data[:256])
    float_softmax = qat.predict(data, verbose=0)
    for target in TARGETS:
        with on_target(qat, target) as report:
            assert report.exact and (report.emulated.get("prob") == "SOFTMAX") == (target == "micro"), report
            runtime = TfliteRunner(content, runtime=RUNTIME[target])(data)
            np.testing.assert_array_equal(runtime, qat.predict(data, verbose=0))
            if target == "micro":  # TFLM's fixed point is another function than the float softmax
                assert not np.array_equal(runtime, float_softmax)


def test_fixed_point_functions_are_the_functions_they_name():
    """gemmlowp's exp and reciprocal (faq_tf.fixedpoint) to within their fixed-point precision."""
    from faq_tf.compat import tf
    from faq_tf.fixedpoint import exp_on_negative_values, one_over_one_plus_x, rdbpot, srdhm

    a = np.linspace(-31.9, 0, 2001)
    raw = tf.constant(np.round(a * 2**26).astype(np.int64))  # Q5.26
    np.testing.assert_allclose(exp_on_negative_values(raw).numpy() / 2**31, np.exp(a), atol=5e-7)
    assert exp_on_negative_values(tf.constant([0], tf.int64)).numpy()[0] == 2**31 - 1  # exp(0): the largest Q0.31
    x = np.linspace(0, 0.999, 1001)
    recip = one_over_one_plus_x(tf.constant(np.round(x * 2**31).astype(np.int64))).numpy() / 2**31
    np.testing.assert_allclose(recip, 1 / (1 + x), atol=1e-8)
    # Ties: srdhm rounds them up (-0.5 -> 0, 0.5 -> 1), rdbpot away from zero (-0.5 -> -1).
    halves = tf.constant([-3 * 2**30, -(2**30), 2**30, 3 * 2**30], tf.int64)  # times 1 / 2^31: -1.5, -0.5, 0.5, 1.5
    assert srdhm(halves, 1).numpy().tolist() == [-1, 0, 1, 2]
    assert rdbpot(tf.constant([-3, -1, 1, 3], tf.int64), 1).numpy().tolist() == [-2, -1, 1, 2]


def test_a_mean_on_its_input_grid_and_what_is_not_reproduced(exports):
    """A mean whose output keeps its input's scale and zero point (the runtimes' integer-folded
    1/n still rounds it); a concat that joins one tensor twice is named, not guessed; a spec whose
    exponent moved after set_target fails with what to do."""
    i = keras.Input((4, 4, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(i)
    g = L.GlobalAveragePooling2D(name="gap")(x)
    twice = L.Concatenate(name="twice")([g, g])
    model = keras.Model(i, L.Dense(10, name="logits")(twice))
    data = np.random.RandomState(1).rand(64, 4, 4, 3).astype("float32")
    qat = faq_tf.quantize_model(model, "w8a8", data[:32], verbose=False)
    qts = {(qt.layer, qt.tensor): qt for qt in introspect.quantized_tensors(qat)}
    source = qts[("conv_relu", "output")]
    for name in ("gap", "twice"):
        qts[(name, "output")].exponent_variable.assign(float(source.exponent))
    content = convert(qat, representative_data=data[:32])
    for target in ("reference", "micro"):
        with on_target(qat, target) as report:
            assert report.emulated["gap"] == "MEAN"
            assert "joins one tensor more than once" in report.not_emulated["twice"], report.not_emulated
            np.testing.assert_array_equal(
                TfliteRunner(content, runtime=RUNTIME[target])(data), qat.predict(data, verbose=0)
            )
    with on_target(qat, "micro"):
        qts[("gap", "output")].exponent_variable.assign(float(source.exponent + 1))
        with pytest.raises(Exception, match="exponent changed after faq_tf.set_target; call set_target again"):
            qat.predict(data, verbose=0)
