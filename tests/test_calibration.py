"""Percentile calibration on data whose percentiles are known, and its error paths."""

import numpy as np
import pytest

import faq_tf
from faq_tf import calibration, introspect
from faq_tf.compat import keras, tf


def _tap_model(units=10000):
    i = keras.Input((units,), name="x")
    r = keras.layers.ReLU(name="relu")(i)
    n = keras.layers.Rescaling(-1.0, name="neg")(i)
    return keras.Model(i, [r, n])


def test_nearest_rank_percentile():
    x = tf.constant(np.arange(1, 10001, dtype=np.float32))
    # nearest rank: the ceil(P/100 * n)-th smallest value
    assert float(calibration.percentile_nearest_rank(x, 99.99)) == 9999.0
    assert float(calibration.percentile_nearest_rank(x, 99.9)) == 9990.0
    assert float(calibration.percentile_nearest_rank(x, 50.0)) == 5000.0
    assert float(calibration.percentile_nearest_rank(x, 100.0)) == 10000.0


def test_max_over_batches_of_the_percentile():
    base = np.arange(1, 10001, dtype=np.float32)
    rng = np.random.RandomState(0)
    batches = [rng.permutation(base)[None] * s for s in (0.5, 2.0, 1.0)]  # batch of 1 row
    ranges = calibration.collect_ranges(_tap_model(), {"relu": 99.99, "neg": 99.9}, batches, num_batches=3)
    assert ranges["relu"].y_max == 2.0 * 9999  # max over batches
    assert ranges["neg"].y_max == 2.0 * 9990  # |y| percentile of the negated tensor
    assert not ranges["relu"].signed
    assert ranges["neg"].signed
    # 19998 -> 2^15; unsigned 8-bit: l = 15 - 8
    assert ranges["relu"].exponent(8) == 7
    assert ranges["neg"].exponent(4) == 15 - 3


def test_only_the_first_n_batches_are_used():
    base = np.arange(1, 10001, dtype=np.float32)[None]
    batches = [base, base, base * 100.0]
    ranges = calibration.collect_ranges(_tap_model(), {"relu": 99.99}, batches, num_batches=2)
    assert ranges["relu"].y_max == 9999.0


def test_dataset_of_pairs_and_arrays():
    x = np.tile(np.arange(1, 10001, dtype=np.float32), (4, 1))
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(4))).batch(2)
    from_ds = calibration.collect_ranges(_tap_model(), {"relu": 99.99}, ds)
    from_array = calibration.collect_ranges(_tap_model(), {"relu": 99.99}, x, batch_size=2)
    assert from_ds["relu"].y_max == from_array["relu"].y_max == 9999.0


def test_default_percentiles():
    assert calibration.default_percentile(8) == 99.99
    assert calibration.default_percentile(4) == 99.9


@pytest.mark.parametrize(
    "data,match",
    [
        (np.zeros((0, 10000), np.float32), "empty"),
        ([], "empty"),
        (np.full((2, 10000), np.nan, np.float32), "NaN or Inf"),
        (np.full((2, 10000), np.inf, np.float32), "NaN or Inf"),
        (np.ones((2, 5), np.float32), r"shape \(2, 5\).*expects"),
        (np.ones((2, 10000, 3), np.float32), "shape"),
    ],
)
def test_bad_calibration_data(data, match):
    with pytest.raises(calibration.CalibrationError, match=match):
        calibration.collect_ranges(_tap_model(), {"relu": 99.99}, data)


@pytest.mark.parametrize("p", [0, -1, 100.5, 1000, "99"])
def test_bad_percentile(p):
    with pytest.raises(ValueError, match="percentile must be in"):
        calibration.collect_ranges(_tap_model(), {"relu": p}, np.ones((1, 10000), np.float32))


def test_bad_batch_count():
    with pytest.raises(ValueError, match="num_batches"):
        calibration.collect_ranges(_tap_model(), {"relu": 99.0}, np.ones((1, 10000)), num_batches=0)


def _squared_error(y, step, q_min, q_max):
    q = np.clip(np.floor(y / step + 0.5), q_min, q_max) * step
    return float(np.sum((q.astype(np.float64) - y) ** 2))


def test_mse_picks_the_grid_with_the_least_squared_error_over_all_batches():
    rng = np.random.RandomState(0)
    # Values up to 1.05: the 99.9th percentile rounds up to 2, so 16 levels span 1.875 with
    # step 1/8; step 1/16 clips the top 11% by little and rounds the rest twice as finely.
    batches = [rng.uniform(0.0, 1.05, size=(1, 10000)).astype(np.float32) for _ in range(3)]
    ranges = calibration.collect_ranges(_tap_model(), {"relu": 99.9, "neg": 99.9}, batches, num_batches=3)
    start_u, start_s = ranges["relu"].exponent(4), ranges["neg"].exponent(4, signed=True)
    grids = {"relu": (0, 15, start_u), "neg": (-7, 7, start_s)}
    chosen = calibration.mse_exponents(_tap_model(), grids, batches, num_batches=3)
    for name, sign, (q_min, q_max, start) in [("relu", 1.0, grids["relu"]), ("neg", -1.0, grids["neg"])]:
        errors = {
            start + d: sum(_squared_error(sign * b, 2.0 ** (start + d), q_min, q_max) for b in batches)
            for d in calibration.MSE_SPAN
        }
        assert chosen[name] == min(errors, key=errors.get)
        if name == "relu":  # here the percentile's grid is not the best: a finer one clips the tail
            assert chosen[name] < start and errors[chosen[name]] < errors[start]


def test_mse_prefers_the_coarser_grid_on_equal_error_and_uses_only_n_batches():
    zero = np.zeros((1, 10000), np.float32)
    chosen = calibration.mse_exponents(_tap_model(), {"relu": (0, 15, -4)}, [zero, zero + 1e6], num_batches=1)
    assert chosen["relu"] == -4 + max(calibration.MSE_SPAN)  # all-zero batch: every grid is exact


def test_output_exponents_walks_a_coarse_grid_back_one_step_a_sweep():
    """A 4-bit tensor put 3 steps too coarse (most of it rounds to 0) walks back, one +-1 move a
    sweep, keeping only moves that bring the outputs closer to the fp32 model's."""
    i = keras.Input((8,), name="x")
    h = keras.layers.ReLU(name="relu")(keras.layers.Dense(16, name="fc")(i))
    h = keras.layers.ReLU(name="relu2")(keras.layers.Dense(16, name="fc2")(h))  # feeds the classifier: 8 bits
    reference = keras.Model(i, keras.layers.Dense(4, name="out")(h))
    rng = np.random.RandomState(0)
    batches = [rng.normal(size=(32, 8)).astype(np.float32) for _ in range(3)]
    qat = faq_tf.quantize_model(reference, "w8a4", batches, verbose=False)  # only relu's output below 8 bits
    (relu,) = [t for t in introspect.quantized_tensors(qat) if t.tensor == "output" and t.bits < 8]
    start = relu.exponent

    def error():
        return sum(
            float(np.sum((qat(x, training=False).numpy() - reference(x, training=False).numpy()) ** 2.0))
            for x in batches
        )

    calibrated = error()
    for sweeps in (1, 2):
        relu.exponent_variable.assign(start + 3)
        coarse = error()
        chosen = calibration.output_exponents(
            qat, reference, {"relu": relu.exponent_variable}, batches, max_sweeps=sweeps
        )
        assert chosen == {"relu": start + 3 - sweeps} and relu.exponent == start + 3 - sweeps
        assert error() < coarse
    relu.exponent_variable.assign(start + 3)
    chosen = calibration.output_exponents(qat, reference, {"relu": relu.exponent_variable}, batches)["relu"]
    assert chosen <= start and error() <= calibrated  # 3 sweeps reach the calibrated grid or a better one


def test_output_exponents_names_a_reference_that_does_not_match_and_a_bad_sweep_count():
    i = keras.Input((8,), name="x")
    h = keras.layers.ReLU(name="relu")(keras.layers.Dense(16, name="fc")(i))
    h = keras.layers.ReLU(name="relu2")(keras.layers.Dense(16, name="fc2")(h))  # feeds the classifier: 8 bits
    reference = keras.Model(i, keras.layers.Dense(4, name="out")(h))
    other = keras.Model(i, keras.layers.Dense(3, name="out3")(i))
    batches = [np.random.RandomState(0).normal(size=(8, 8)).astype(np.float32)]
    qat = faq_tf.quantize_model(reference, "w8a4", batches, verbose=False)
    (relu,) = [t for t in introspect.quantized_tensors(qat) if t.tensor == "output" and t.bits < 8]
    with pytest.raises(calibration.CalibrationError, match=r"outputs \(None, 4\) are not the fp32 model's \(None, 3\)"):
        calibration.output_exponents(qat, other, {"relu": relu.exponent_variable}, batches)
    with pytest.raises(ValueError, match="max_sweeps must be >= 1, got 0"):
        calibration.output_exponents(qat, reference, {"relu": relu.exponent_variable}, batches, max_sweeps=0)


def test_first_batches_reads_a_generator_once_and_skips_empty_batches():
    def gen():
        yield np.zeros((0, 3), np.float32)
        for i in range(10):
            yield np.full((2, 3), i, np.float32)

    batches = calibration.first_batches(gen(), 3)
    assert [float(b[0, 0]) for b in batches] == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="num_batches"):
        calibration.first_batches(gen(), 0)
