"""Q(b, l) maths against hand-derived tables, STE gradients, weight l, and configs."""

import json
import re

import numpy as np
import pytest

import faq_tf
from conftest import EVERY_LAYER_MODELS, residual_model
from faq_tf import policy, tracing
from faq_tf import quantizers as Q
from faq_tf.compat import keras, tf
from faq_tf.configs import FaqQuantizeConfig

# Which ops a row's expected value is for. The two differ only below a signed range:
# weights and constants keep the paper's symmetric range and clip at -(2^(b-1) - 1); a signed
# activation is clamped where the int8 runtime clamps it, at -2^(b-1) of its 8-bit storage
# (below 8 bits it is clipped to the symmetric b-bit range first, so only 8 bits and more differ).
ACTIVATION = "activation"  # fake_quant(x, ...) per tensor, as the activation quantizers call it
WEIGHT = "weight"  # fake_quant(x, ..., per_channel=True) and (..., constant=True): kernels, BN, biases
BOTH = (ACTIVATION, WEIGHT)

# Each row: bits, l, signed, x, expected Q(x), the paths it is for. Every expected value is
# derived by hand: v = x * 2^-l, round(v) = floor(v + 1/2), clipped to the levels, times 2^l.
QUANT_TABLE = [
    # 4-bit unsigned, step 0.25, levels 0..15 (max 3.75)
    (4, -2, False, 0.1, 0.0, BOTH),  # v = 0.4 -> 0
    (4, -2, False, 0.125, 0.25, BOTH),  # v = 0.5: the tie goes up -> 1
    (4, -2, False, 0.375, 0.5, BOTH),  # v = 1.5 -> 2
    (4, -2, False, 3.7, 3.75, BOTH),  # v = 14.8 -> 15
    (4, -2, False, 5.0, 3.75, BOTH),  # v = 20 -> clipped at 2^4 - 1 = 15
    (4, -2, False, -1.0, 0.0, BOTH),  # v = -4 -> clipped at 0
    # 4-bit signed, step 0.25, levels -7..7 (+-1.75)
    (4, -2, True, -0.125, 0.0, BOTH),  # v = -0.5 -> floor(0.0) = 0 (the tie goes up)
    (4, -2, True, -0.375, -0.25, BOTH),  # v = -1.5 -> floor(-1.0) = -1
    (4, -2, True, 0.375, 0.5, BOTH),  # v = 1.5 -> 2
    (4, -2, True, 1.8, 1.75, BOTH),  # v = 7.2 -> 7
    (4, -2, True, -3.0, -1.75, BOTH),  # v = -12 -> clipped at -(2^3 - 1) = -7 (a 4-bit activation too)
    # 8-bit unsigned, step 1/16, levels 0..255 (max 15.9375)
    (8, -4, False, 0.03125, 0.0625, BOTH),  # v = 0.5 -> 1
    (8, -4, False, 15.96875, 15.9375, BOTH),  # v = 255.5 -> 256 -> clipped at 255
    (8, -4, False, 100.0, 15.9375, BOTH),  # v = 1600 -> clipped at 255
    # 8-bit signed, step 1/16: levels -127..127 for weights, -128..127 for activations
    (8, -4, True, -0.03125, 0.0, BOTH),  # v = -0.5 -> floor(0.0) = 0
    (8, -4, True, -7.96875, -7.9375, BOTH),  # v = -127.5 -> floor(-127.0) = -127, inside both ranges
    (8, -4, True, -10.0, -7.9375, (WEIGHT,)),  # v = -160 -> clipped at -(2^7 - 1) = -127: -127/16
    (8, -4, True, -10.0, -8.0, (ACTIVATION,)),  # v = -160 -> clamped at -2^7 = -128: -128/16
    (8, -4, True, 7.9, 7.875, BOTH),  # v = 126.4 -> 126
    # 2-bit signed, step 1: levels -1, 0, 1
    (2, 0, True, 0.6, 1.0, BOTH),  # v = 0.6 -> floor(1.1) = 1
    (2, 0, True, -0.6, -1.0, BOTH),  # v = -0.6 -> floor(-0.1) = -1
    (2, 0, True, 3.0, 1.0, BOTH),  # v = 3 -> clipped at 2^1 - 1 = 1
    # 32-bit signed constant (bias), step 2^-16: above 16 bits every path is the constant one
    (32, -16, True, 2.0**-17, 2.0**-16, BOTH),  # v = 0.5 -> 1
    (32, -16, True, 0.3, 19661 / 65536, BOTH),  # v = 19660.8 -> 19661
]


def _rows(path, max_bits=Q.MAX_CONSTANT_BITS):
    """The table's rows for `path` (bits, l, signed, x, expected), up to `max_bits`."""
    return [
        pytest.param(*row[:5], id=f"b{row[0]}_l{row[1]}_{'s' if row[2] else 'u'}_x{row[3]}")
        for row in QUANT_TABLE
        if path in row[5] and row[0] <= max_bits
    ]


@pytest.mark.parametrize("bits,l,signed,x,expected", _rows(ACTIVATION))
def test_fake_quant_table(bits, l, signed, x, expected):
    got = Q.fake_quant(tf.constant([x], tf.float32), bits, float(l), signed).numpy()[0]
    assert got == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("rounding", list(Q.Rounding) + [r.value for r in Q.Rounding], ids=str)
def test_rounding_modes_round_ties_as_the_runtime_does(rounding):
    steps = np.array([2.5, 3.5, -2.5, -3.5, 2.4, -2.6, 126.5, 127.5, -127.5, -128.5], np.float32)
    expected = {
        Q.Rounding.HALF_UP: [3, 4, -2, -3, 2, -3, 127, 127, -127, -128],
        Q.Rounding.HALF_EVEN: [2, 4, -2, -4, 2, -3, 126, 127, -128, -128],
        Q.Rounding.HALF_AWAY: [3, 4, -3, -4, 2, -3, 127, 127, -128, -128],
    }[Q.Rounding(rounding)]
    x = tf.constant(steps * 2.0**-3)
    y = Q.fake_quant(x, 8, -3.0, True, rounding=rounding).numpy() * 8
    np.testing.assert_array_equal(y, expected)
    with pytest.raises(ValueError, match="rounding"):
        Q.ActivationQuantizer(8, rounding="nearest")


@pytest.mark.parametrize("bad", ["nearest", "HALF_EVEN", None, 1, ["half_up"]])
def test_unknown_rounding_names_the_choices_and_the_value(bad):
    message = rf"^rounding must be one of \('half_up', 'half_even', 'half_away'\), got {re.escape(repr(bad))}$"
    with pytest.raises(ValueError, match=message):
        Q.ActivationQuantizer(8, rounding=bad)
    with pytest.raises(ValueError, match=message):
        Q.fake_quant(tf.constant([0.5]), 8, 0.0, False, rounding=bad)


@pytest.mark.parametrize("rounding", list(Q.Rounding), ids=str)
def test_rounding_member_and_its_string_build_the_same_quantizer(rounding):
    member = Q.ActivationQuantizer(8, signed=True, exponent=-3, rounding=rounding)
    text = Q.ActivationQuantizer(8, signed=True, exponent=-3, rounding=rounding.value)
    assert member == text and hash(member) == hash(text) and repr(member) == repr(text)
    config = member.get_config()
    assert config["rounding"] == rounding.value and type(config["rounding"]) is str  # plain JSON text
    assert member.rounding is rounding and text.rounding is rounding
    assert repr(member).endswith(f"rounding='{rounding.value}')")  # not Rounding.HALF_...
    assert Q.ActivationQuantizer.from_config(config) == member
    serialized = keras.utils.serialize_keras_object(member)
    assert f'"rounding": "{rounding.value}"' in json.dumps(serialized)
    assert keras.utils.deserialize_keras_object(serialized) == member


def test_activation_rounding_applies_at_inference_only():
    q = Q.ActivationQuantizer(8, signed=False, exponent=0, rounding="half_even")
    layer = keras.layers.Layer()
    weights = q.build((None, 3), "out", layer)
    x = tf.constant([0.5, 1.5, 2.5])
    np.testing.assert_array_equal(q(x, True, weights).numpy(), [1, 2, 3])  # training: FakeQuant, ties up
    np.testing.assert_array_equal(q(x, False, weights).numpy(), [0, 2, 2])  # inference: the runtime's rule
    with tracing.export_trace():  # what the converter sees: FakeQuant alone
        np.testing.assert_array_equal(q(x, False, weights).numpy(), [1, 2, 3])
    assert Q.ActivationQuantizer.from_config(q.get_config()) == q


def test_trace_flags_nest_and_restore():
    assert not tracing.exporting() and not tracing.packing()
    with tracing.packed_sub8bit_weights(), tracing.export_trace():
        assert tracing.exporting() and tracing.packing()
        with tracing.packed_sub8bit_weights(False):
            assert not tracing.packing() and tracing.exporting()
        assert tracing.packing()
    assert not tracing.exporting() and not tracing.packing()


def test_packed_sub8bit_weights_trace_the_same_values():
    # Packed (b-bit FakeQuant) and int8 storage (clip + 8-bit FakeQuant) hold the same numbers.
    x = tf.constant([[-3.0, -0.375, -0.125, 0.1, 0.375, 1.8, 3.0]])
    for per_channel in (True, False):
        stored = Q.fake_quant(x, 4, -2.0, True, per_channel=per_channel, weight=True).numpy()
        with tracing.packed_sub8bit_weights():
            packed = Q.fake_quant(x, 4, -2.0, True, per_channel=per_channel, weight=True).numpy()
        np.testing.assert_array_equal(packed, stored)
        np.testing.assert_array_equal(stored, [[-1.75, -0.25, 0.0, 0.0, 0.5, 1.75, 1.75]])


def _value_and_gradient(x: tf.Variable, fn, mode: str = "eager"):
    """fn(x) and the gradient of a loss that weights every element by >= 1: eagerly, in a
    tf.function ("function") or compiled by XLA ("xla"), as training may run it."""

    def step():
        with tf.GradientTape() as tape:
            y = fn(x)
            loss = tf.reduce_sum(y * tf.range(1.0, 1.0 + tf.size(y, out_type=tf.float32)))
        return y, tape.gradient(loss, x)

    if mode != "eager":
        step = tf.function(step, jit_compile=mode == "xla")
    y, gradient = step()
    return y.numpy(), gradient.numpy()


def _op_types(fn, x) -> set[str]:
    return {op.type for op in tf.function(fn).get_concrete_function(x).graph.get_operations()}


def _gradient_op_types(fn, x: tf.Variable) -> set[str]:
    def gradient():
        with tf.GradientTape() as tape:
            y = fn(x)
        return tape.gradient(y, x)

    return {op.type for op in tf.function(gradient).get_concrete_function().graph.get_operations()}


def _reference_levels(t: np.ndarray, q_min: int, q_max: int, rounding: Q.Rounding) -> np.ndarray:
    """Round t (float64, exact) to an integer level as the runtime does, then clamp."""
    floor = np.floor(t)
    tie = t - floor == 0.5
    up = {
        Q.Rounding.HALF_UP: np.ones_like(t, bool),
        Q.Rounding.HALF_EVEN: floor % 2 == 1,
        Q.Rounding.HALF_AWAY: floor >= (0 if q_min < 0 else 2**7),
    }[rounding]
    level = np.where(tie, floor + up, np.floor(t + 0.5))
    return np.clip(level, q_min, q_max)


@pytest.mark.parametrize("bits", [2, 4, 7, 8, 16])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("rounding", [Q.Rounding.HALF_EVEN, Q.Rounding.HALF_AWAY], ids=str)
def test_inference_rounding_matches_an_exact_reference_with_fake_quants_gradient(bits, signed, rounding):
    """Every tie, the range edges, values an ulp from a tie and random ones; gradient 1 inside, 0 outside.

    (HALF_UP is TensorFlow's FakeQuant op, which computes floor(t + 1/2) in float32 and so
    rounds the float just below 1/2 up.)
    """
    q_min, q_max = Q.integer_range(bits, signed)
    if signed and bits >= 8:
        q_min = -q_max - 1  # the runtime's clamp (storage range)
    rng = np.random.RandomState(bits)
    levels = np.arange(q_min - 3, q_max + 3) if bits < 16 else rng.randint(q_min - 3, q_max + 3, 500)
    ties = np.float32(levels + 0.5)
    near = np.concatenate([np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf))])
    spread = rng.uniform(q_min - 4, q_max + 4, 500).astype(np.float32)
    small = np.float32([0.0, -0.0, 1e-9, -1e-9, 0.25, -0.25, 0.4999999, -0.4999999, 0.5000001])
    for l in (-7.0, 0.0, 2.0):
        t = np.concatenate([ties, near, spread, small]).astype(np.float32)
        x = tf.Variable(t * np.float32(2.0**l))
        y, grad = _value_and_gradient(x, lambda v, l=l: Q.fake_quant(v, bits, l, signed, rounding=rounding))
        expected = _reference_levels(t.astype(np.float64), q_min, q_max, rounding) * 2.0**l
        np.testing.assert_array_equal(y, expected.astype(np.float32))
        assert not np.any(np.signbit(y) & (y == 0)), "no negative zeros"
        inside = (t >= q_min) & (t <= q_max)
        np.testing.assert_array_equal(grad, np.where(inside, np.arange(1, t.size + 1), 0).astype(np.float32))


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7])
def test_training_form_of_low_bit_activations_is_the_convertible_form(bits):
    """Outside export_trace an unsigned b-bit activation is one b-bit FakeQuant: same values, same gradient."""
    rng = np.random.RandomState(bits)
    for l in (-6.0, -2.0, 0.0, 3.0):
        step, q_max = 2.0**l, 2**bits - 1
        ties = (np.arange(-2, q_max + 3) + 0.5) * step  # every tie, below, inside and above the range
        edges = np.array([0.0, -0.0, q_max * step, (q_max + 0.49) * step, -step, -1e-9, 1e30, -1e30])
        x = tf.Variable(
            np.concatenate([ties, edges, rng.normal(q_max * step / 2, q_max * step, 200)]), dtype=tf.float32
        )

        def quantize(t, l=l):
            return Q.fake_quant(t, bits, l, signed=False)

        fast = _value_and_gradient(x, quantize)
        with tracing.export_trace():
            convertible = _value_and_gradient(x, quantize)
            assert "Minimum" in _op_types(quantize, x)  # clip + 8-bit FakeQuant
        assert "Minimum" not in _op_types(quantize, x)  # the fast form is what training traces
        np.testing.assert_array_equal(fast[0], convertible[0])
        np.testing.assert_array_equal(fast[1], convertible[1])


@pytest.mark.parametrize("bits", [2, 3, 4, 7, 8, 12, 16])
@pytest.mark.parametrize("signed,per_channel", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
def test_straight_through_gradient_is_fake_quants_gradient(bits, signed, per_channel, mode):
    """Training's one-kernel gradient selects exactly the elements FakeQuant's own gradient does,
    eagerly, in a tf.function and under XLA (`--jit_compile`).

    Inside export_trace the quantizer is the plain ops with TensorFlow's gradients; outside
    it the same forward ops with `_straight_through`'s mask on x * 2^-l. Inputs: every level
    and tie around both range ends, values an ulp either side of the ends, signed zeros,
    tiny and huge values and random ones, at a fine, a unit and a coarse step.
    """
    rng = np.random.RandomState(bits)
    q_min, q_max = Q.integer_range(bits, signed)
    if signed and bits >= 8 and not per_channel:
        q_min = -q_max - 1  # the runtime's clamp
    ends = np.float32([e for e in (q_min, q_max) if e])  # an ulp from 0 is subnormal: TF flushes it to 0
    for l in (-9.0, 0.0, 3.0):
        step = np.float32(2.0**l)
        around = np.concatenate([np.arange(q_min - 3, q_min + 3), np.arange(q_max - 3, q_max + 3)])
        t = np.concatenate(
            [
                around,
                around + 0.5,
                np.nextafter(ends, np.float32(np.inf)),
                np.nextafter(ends, np.float32(-np.inf)),
                [0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30],
                rng.uniform(q_min - 4, q_max + 4, 300),
            ]
        ).astype(np.float32)
        x = tf.Variable((t * step).reshape(-1, 1) if per_channel else t * step)

        def quantize(v, l=l):
            return Q.fake_quant(v, bits, l, signed, per_channel=per_channel, weight=per_channel)

        fast = _value_and_gradient(x, quantize, mode)
        assert "FakeQuantWithMinMaxArgsGradient" in _gradient_op_types(quantize, x)
        with tracing.export_trace():
            native = _value_and_gradient(x, quantize, mode)
            assert "FakeQuantWithMinMaxArgsGradient" not in _gradient_op_types(quantize, x)
        np.testing.assert_array_equal(fast[0], native[0])
        np.testing.assert_array_equal(fast[1], native[1])
        inside = ((t >= q_min) & (t <= q_max)).reshape(fast[1].shape)
        assert inside.any() and (~inside).any()
        np.testing.assert_array_equal(fast[1] != 0, inside)  # the loss weights every element by >= 1


@pytest.mark.parametrize("q_lo,q_hi", [(0, 5), (-4, 4), (0, 2**17 - 1)])
def test_straight_through_refuses_a_range_fakequant_cannot_express(q_lo, q_hi):
    with pytest.raises(ValueError, match=rf"\[{q_lo}, {q_hi}\] is not one of 2\^b - 1 or 2\^b - 2 steps"):
        Q._straight_through(tf.zeros([4]), tf.constant(1.0), q_lo, q_hi, lambda v, step: v)


def _training_step(model, x, y):
    """Loss, logits and gradients of one training-mode pass, leaving the model's state as it was."""
    state = model.get_weights()  # a training pass moves BN statistics and the weight exponents
    keras.utils.set_random_seed(3)  # the same dropout mask in both passes
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(tf.square(logits - tf.one_hot(y, logits.shape[-1])))
    grads = tape.gradient(loss, model.trainable_weights)
    model.set_weights(state)
    return [loss.numpy(), logits.numpy()] + [g.numpy() for g in grads]


@pytest.mark.parametrize("build", EVERY_LAYER_MODELS)
def test_training_step_computes_what_the_convertible_graph_computes(build, images):
    """A w4a4 training step gives the same loss, outputs and gradients with either activation form."""
    qat = faq_tf.quantize_model(build(), "w4a4", images, verbose=False)
    x, y = images[:16], np.arange(16) % qat.output_shape[-1]
    fast = _training_step(qat, x, y)
    with tracing.export_trace():
        convertible = _training_step(qat, x, y)
    assert len(fast) == len(convertible) > 2
    for a, b in zip(fast, convertible):
        np.testing.assert_array_equal(a, b)


def test_training_pass_runs_eagerly_in_a_distribution_strategy_scope(images):
    """Precise BN calls the model eagerly, training=True, in `strategy.scope()`: the variables
    the quantizers read there are distributed ones, and the pass gives what it gives outside."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        qat = faq_tf.quantize_model(residual_model(), "w4a4", images, verbose=False)
        state = qat.get_weights()
        inside = qat(images[:8], training=True).numpy()
    qat.set_weights(state)
    np.testing.assert_array_equal(inside, qat(images[:8], training=True).numpy())


@pytest.mark.parametrize("bits,l,signed,x,expected", _rows(WEIGHT, max_bits=Q.MAX_BITS))
def test_per_channel_and_constant_paths_agree(bits, l, signed, x, expected):
    x = tf.constant([[x, x]], tf.float32)
    per_channel = Q.fake_quant(x, bits, float(l), signed, per_channel=True).numpy()
    constant = Q.fake_quant(x, bits, float(l), signed, constant=True).numpy()
    np.testing.assert_allclose(per_channel, expected, atol=1e-7)
    np.testing.assert_allclose(constant, expected, atol=1e-7)


@pytest.mark.parametrize("bits,signed", [(4, False), (8, False), (4, True), (8, True)])
def test_levels_count_and_grid(bits, signed):
    q_min, q_max = Q.integer_range(bits, signed)
    x = tf.linspace(q_min * 0.25 - 2.0, q_max * 0.25 + 2.0, 20001)
    y = Q.fake_quant(x, bits, -2.0, signed).numpy()
    levels = np.unique(y)
    # 8-bit signed activations also hold -128 (the runtime's clamp); 4-bit ones are clipped to -7.
    extra = 1 if signed and bits == 8 else 0
    assert len(levels) == q_max - q_min + 1 + extra
    assert levels.min() == (q_min - extra) * 0.25 and levels.max() == q_max * 0.25
    np.testing.assert_array_equal(levels * 4, np.round(levels * 4))  # on the 2^-2 grid


@pytest.mark.parametrize(
    "bits,signed,per_channel,constant",
    [
        (4, False, False, False),
        (8, False, False, False),
        (4, True, False, False),
        (8, True, True, False),
        (4, True, True, False),
        (32, True, False, True),
        (8, True, False, True),
    ],
)
def test_straight_through_gradient(bits, signed, per_channel, constant):
    l = -16.0 if bits > 16 else -2.0  # keeps q_max * step + 1 exact in float32
    step = 2.0**l
    q_min, q_max = Q.integer_range(bits, signed)
    inside = [q_min * step + 0.3, 0.1, q_max * step - 0.3] if signed else [0.1, 1.3, q_max * step - 0.3]
    outside = [q_max * step + 1.0, q_min * step - 1.0]
    x = tf.Variable([inside + outside])
    with tf.GradientTape() as tape:
        y = Q.fake_quant(x, bits, l, signed, per_channel=per_channel, constant=constant)
        loss = tf.reduce_sum(y * tf.constant([[1.0, 2.0, 3.0, 4.0, 5.0]]))
    grad = tape.gradient(loss, x).numpy()[0]
    np.testing.assert_allclose(grad, [1.0, 2.0, 3.0, 0.0, 0.0])


def test_weight_exponent_from_known_std():
    # +-a alternating: population std is exactly a.
    w = tf.constant(np.tile([0.1, -0.1], 50), tf.float32)
    # 4 bits, k = 4.12: Delta = 4.12 * 0.1 / 7 = 0.0589, log2 = -4.09 -> l = -4
    assert float(Q.weight_exponent(w, 4, 4.12)) == -4
    # 8 bits, k = 8: Delta = 0.8 / 127 = 0.0063, log2 = -7.31 -> l = -7
    assert float(Q.weight_exponent(w, 8, 8.0)) == -7
    # Delta exactly 2^-3 (k = 7, b = 4, sigma = 1/8): ceil must not round up to -2.
    w = tf.constant(np.tile([0.125, -0.125], 50), tf.float32)
    assert float(Q.weight_exponent(w, 4, 7.0)) == -3


def test_weight_quantizer_updates_exponent_only_in_training():
    layer = keras.layers.Dense(4)
    layer.build((None, 3))
    q = Q.WeightQuantizer(4, clip_sigmas=7.0)
    vars_ = q.build(layer.kernel.shape, "kernel", layer)
    layer.kernel.assign(np.tile([[0.125, -0.125]], (3, 2)))
    out = q(layer.kernel, False, vars_)  # inference: stored l (initial 0 -> step 1)
    assert float(vars_["exponent"]) == 0.0
    np.testing.assert_allclose(out.numpy(), 0.0)
    out = q(layer.kernel, True, vars_)  # training: l recomputed and stored
    assert float(vars_["exponent"]) == -3.0
    np.testing.assert_allclose(np.abs(out.numpy()), 0.125)


def test_exponent_for_range_and_control():
    assert Q.exponent_for_range(5.3, 8, signed=False) == -5  # 5.3 -> 8 = 2^3; 3 - 8
    assert Q.exponent_for_range(8.0, 8, signed=False) == -5  # a power of two stays
    assert Q.exponent_for_range(8.0, 8, signed=True) == -4  # 3 - 7
    assert Q.exponent_for_range(0.9, 4, signed=False) == -4  # 1 = 2^0; 0 - 4
    # Control runs: y_max = 2^(b/2) - 1 -> l = -b/2 for unsigned tensors.
    assert Q.control_exponent(8, False) == -4
    assert Q.control_exponent(4, False) == -2


def test_default_clip_sigmas():
    assert Q.default_clip_sigmas(4) == 4.12  # the paper's value
    assert Q.default_clip_sigmas(8) == 5.0
    assert Q.default_clip_sigmas(16) == 5.0
    assert Q.default_clip_sigmas(2) < Q.default_clip_sigmas(3) < Q.default_clip_sigmas(4)
    assert Q.WeightQuantizer(8).clip_sigmas == 5.0


def _bn(gamma, variance):
    """A built BatchNormalization with the given gamma and moving variance (mean 0, beta 0, eps 0)."""
    channels = len(gamma)
    bn = keras.layers.BatchNormalization(epsilon=0.0)
    bn.build((None, channels))
    bn.set_weights([np.array(gamma), np.zeros(channels), np.zeros(channels), np.array(variance)])
    return bn


def test_batch_norm_multiplier_on_grid():
    gamma, variance = [1.0, -0.5], [0.09, 4.0]
    bn = _bn(gamma, variance)
    q = Q.BatchNormMultiplierQuantizer()
    vars_ = q.build(bn.gamma.shape, "gamma", bn)
    gamma_q = q(bn.gamma, True, vars_).numpy()
    multiplier = gamma_q / np.sqrt(variance)
    # gamma/sd = 3.333 -> 53.33/16 -> 53/16; -0.25 -> -4/16
    np.testing.assert_allclose(multiplier, [53 / 16, -4 / 16], rtol=1e-6)


ALL_QUANTIZERS = [
    Q.WeightQuantizer(4),
    Q.WeightQuantizer(8, clip_sigmas=3.0, per_channel=False),
    Q.ActivationQuantizer(4),
    Q.ActivationQuantizer(8, signed=True, exponent=-3),
    Q.FixedExponentQuantizer(),
    Q.FixedExponentQuantizer(8, -8, signed=False, constant=False),
    Q.BatchNormMultiplierQuantizer(),
]


@pytest.mark.parametrize("q", ALL_QUANTIZERS, ids=repr)
def test_quantizer_config_round_trip(q):
    again = type(q).from_config(q.get_config())
    assert again == q
    assert repr(again) == repr(q)
    restored = keras.utils.deserialize_keras_object(keras.utils.serialize_keras_object(q))
    assert restored == q


def test_quantizers_differ():
    assert Q.ActivationQuantizer(4) != Q.ActivationQuantizer(8)
    assert Q.WeightQuantizer(4) != Q.WeightQuantizer(4, clip_sigmas=3.0)


@pytest.mark.parametrize("q", ALL_QUANTIZERS[:4], ids=repr)
def test_quantize_config_round_trip(q):
    cfg = FaqQuantizeConfig({"kernel": Q.WeightQuantizer(4), "bias": Q.FixedExponentQuantizer()}, q)
    again = FaqQuantizeConfig.from_config(cfg.get_config())
    assert again == cfg
    assert keras.utils.deserialize_keras_object(keras.utils.serialize_keras_object(cfg)) == cfg
    assert FaqQuantizeConfig({"kernel": Q.WeightQuantizer(8)}, q) != cfg


@pytest.mark.parametrize("bits", [0, 1, 17, 33, -4, 4.0, True, "8"])
def test_bad_bits_are_rejected_with_the_value(bits):
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 16\], got"):
        Q.ActivationQuantizer(bits)
    with pytest.raises(ValueError, match="bits"):
        Q.WeightQuantizer(bits)


@pytest.mark.parametrize("bits", [2, 8, 16])
def test_check_bits_returns_valid_bits(bits):
    assert Q.check_bits(bits) == bits
    assert Q.check_bits(bits, "weight_bits") == bits


@pytest.mark.parametrize(
    "args,kwargs,message",
    [
        ((17,), {}, r"^bits must be an integer in \[2, 16\], got 17$"),
        ((17, "weight_bits"), {}, r"^weight_bits must be an integer in \[2, 16\], got 17$"),
        ((1,), {"what": "activation_bits"}, r"^activation_bits must be an integer in \[2, 16\], got 1$"),
        ((33,), {"maximum": 32}, r"^bits must be an integer in \[2, 32\], got 33$"),
        ((True,), {}, r"^bits must be an integer in \[2, 16\], got True$"),
        ((8.0,), {}, r"^bits must be an integer in \[2, 16\], got 8\.0$"),
        (("8",), {}, r"^bits must be an integer in \[2, 16\], got '8'$"),
    ],
)
def test_check_bits_names_the_argument_and_the_value(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Q.check_bits(*args, **kwargs)


def test_bit_checks_everywhere_use_one_wording():
    assert Q.check_bits(32, maximum=Q.MAX_CONSTANT_BITS) == 32
    assert Q.FixedExponentQuantizer(32).bits == 32
    with pytest.raises(ValueError, match=r"^bits must be an integer in \[2, 32\], got 33$"):
        Q.FixedExponentQuantizer(33)
    with pytest.raises(ValueError, match=r"^weight_bits must be an integer in \[2, 16\], got 17$"):
        policy.Precision(17, 8)
    with pytest.raises(ValueError, match=r"^classifier_input_bits must be an integer in \[2, 16\], got 1$"):
        policy.Precision(4, 4, classifier_input_bits=1)
    with pytest.raises(ValueError, match=r"^activation_bits must be an integer in \[2, 16\], got 20$"):
        policy.parse_override("a20")


@pytest.mark.parametrize("exponent", [-126, -8, 0, 126])
def test_check_exponent_returns_valid_exponents(exponent):
    assert Q.check_exponent(exponent) == exponent
    assert Q.ActivationQuantizer(8, exponent=exponent).exponent == exponent


@pytest.mark.parametrize("exponent", [127, -127, 1.5, -4.0, True, "3", None])
def test_check_exponent_names_the_value(exponent):
    message = rf"^exponent must be an integer in \[-126, 126\], got {re.escape(repr(exponent))}$"
    with pytest.raises(ValueError, match=message):
        Q.check_exponent(exponent)
    makers = [
        lambda: Q.FixedExponentQuantizer(8, exponent, constant=False),
        lambda: Q.BatchNormMultiplierQuantizer(8, exponent),
    ]
    if exponent is not None:  # None asks ActivationQuantizer for the control value
        makers.append(lambda: Q.ActivationQuantizer(8, exponent=exponent))
    for make in makers:
        with pytest.raises(ValueError, match=message):
            make()
    with pytest.raises(ValueError, match=r"^l must be an integer in \[-126, 126\], got 127$"):
        Q.check_exponent(127, "l")


def test_bad_arguments():
    with pytest.raises(ValueError, match="clip_sigmas"):
        Q.WeightQuantizer(4, clip_sigmas=-1.0)
    with pytest.raises(ValueError, match="exponent"):
        Q.ActivationQuantizer(8, exponent=1.5)
    with pytest.raises(ValueError, match="constants"):
        Q.FixedExponentQuantizer(32, -16, constant=False)
    with pytest.raises(TypeError, match="tfmot Quantizer"):
        FaqQuantizeConfig({"kernel": "not a quantizer"})
    with pytest.raises(TypeError, match="BatchNormalization"):
        Q.BatchNormMultiplierQuantizer().build((2,), "gamma", keras.layers.Dense(2))


def test_tiny_ranges_are_clamped_for_the_converter():
    # the TFLite converter widens ranges under 1e-6, which would break power-of-two scales
    assert Q.exponent_for_range(1e-12, 8, signed=False) == Q.MIN_EXPONENT
    assert float(Q.weight_exponent(tf.zeros([3, 3]), 8, 5.0)) == Q.MIN_EXPONENT
    assert 127 * 2.0**Q.MIN_EXPONENT > 1e-6
