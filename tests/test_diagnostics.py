"""Diagnostics: weight similarity maths, the gradient-noise monitor, plots, the study runner."""

import json
import os

import numpy as np
import pytest

import faq_tf
from conftest import tiny_run_config
from faq_tf.compat import keras
from faq_tf.diagnostics import GradNoiseMonitor, model_similarity, neuron_cosine
from faq_tf.diagnostics.__main__ import main as diagnostics_main
from faq_tf.diagnostics.study import Variant, parse_variant, run_study
from faq_tf.training import Trainer, run

L = keras.layers
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_neuron_cosine_by_hand():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])  # 3 inputs, 2 neurons
    assert np.allclose(neuron_cosine(a, a), [1.0, 1.0])
    assert np.allclose(neuron_cosine(a, 3.0 * a), [1.0, 1.0])  # scale does not matter
    assert np.allclose(neuron_cosine(a, -a), [-1.0, -1.0])
    orthogonal = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 5.0]])
    assert np.allclose(neuron_cosine(a, orthogonal), [0.0, 0.0])
    half = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])  # neuron 0 identical, neuron 1 orthogonal
    assert np.allclose(neuron_cosine(a, half), [1.0, 0.0])
    assert np.allclose(neuron_cosine(np.zeros((3, 2)), a), [0.0, 0.0])
    with pytest.raises(ValueError, match="shapes differ"):
        neuron_cosine(a, a[:2])


def _net(seed):
    keras.utils.set_random_seed(seed)
    i = keras.Input((6, 6, 2))
    x = L.Conv2D(4, 3, name="conv")(i)
    x = L.DepthwiseConv2D(3, name="dw")(x)
    return keras.Model(i, L.Dense(3, name="fc")(L.Flatten()(x)))


def test_model_similarity_means_over_neurons_and_matches_qat_layers():
    a = _net(0)
    per_layer, mean = model_similarity(a, a)
    assert per_layer == pytest.approx({"conv": 1.0, "dw": 1.0, "fc": 1.0}) and mean == pytest.approx(1.0)
    b = _net(0)
    b.get_layer("fc").kernel.assign(-b.get_layer("fc").kernel)  # 3 of 4 + 4 + 3 = 11 neurons flipped
    per_layer, mean = model_similarity(a, b)
    assert per_layer["fc"] == pytest.approx(-1.0) and per_layer["conv"] == pytest.approx(1.0)
    assert mean == pytest.approx((4 + 4 - 3) / 11)  # over neurons, not over layers
    qat = faq_tf.quantize_model(a, "w4a4", np.random.rand(8, 6, 6, 2).astype("float32"), verbose=False)
    assert model_similarity(a, qat)[1] == pytest.approx(1.0)  # the QAT float copy, by inner name
    assert abs(model_similarity(a, _net(1))[1]) < 0.5  # an unrelated random init


def _monitored_steps(precision, steps=12):
    keras.utils.set_random_seed(0)
    rng = np.random.RandomState(0)
    x = rng.rand(64, 8, 8, 1).astype("float32")
    y = rng.randint(0, 4, 64)
    i = keras.Input((8, 8, 1))
    h = L.Conv2D(8, 3, activation="relu", name="conv1")(i)
    h = L.Conv2D(8, 3, activation="relu", name="conv2")(h)
    model = keras.Model(i, L.Dense(4, name="fc")(L.Flatten()(h)))
    qat = faq_tf.quantize_model(model, precision, x[:32], verbose=False)
    opt = keras.optimizers.SGD(0.05, momentum=0.9)
    opt.build(qat.trainable_variables)
    strategy = faq_tf.compat.tf.distribute.get_strategy()
    trainer = Trainer(qat, opt, strategy, 16)
    monitor = GradNoiseMonitor(qat)
    ds = faq_tf.compat.tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()
    it = iter(ds)
    for _ in range(steps):
        trainer.train_update(it, 1, 0.05)
        monitor.update()
    return monitor.result()


def test_grad_noise_is_higher_at_2_bits_than_at_8():
    eight, two = _monitored_steps("w8a8"), _monitored_steps("w2a2")
    assert set(eight) == {"conv1", "conv2", "fc"}
    # conv2 is the only layer the policy quantizes at 2 bits (first and last stay 8-bit)
    # (measured: 8-bit 0.77, 4-bit 0.26, 2-bit 0.28 after 12 steps; the paper also finds
    # 8-bit "significantly below unity")
    assert 0.5 < eight["conv2"] <= 1.0 + 1e-6, eight
    assert two["conv2"] < eight["conv2"] - 0.2, (two, eight)


def test_monitor_needs_a_quantized_model():
    with pytest.raises(ValueError, match="no faq_tf weight quantizers"):
        GradNoiseMonitor(_net(0))


def test_faq_train_records_grad_noise_and_plots(tmp_path):
    cfg = tiny_run_config(tmp_path, epochs=2, steps_per_epoch=3, precision="w4a4", diagnostics=("grad_noise",))
    run(cfg)
    record = json.loads(open(os.path.join(cfg.model_dir, "diagnostics.json")).read())["grad_noise"]
    assert [e["epoch"] for e in record["epochs"]] == [0, 1]
    assert len(record["epochs"][0]["per_layer"]) == 10  # every conv and the dense layer
    assert all(-1.0 <= v <= 1.0 for v in record["epochs"][1]["per_layer"].values())
    out = tmp_path / "plots"
    assert diagnostics_main(["plot", cfg.model_dir, "--out", str(out)]) == 0
    assert (out / "grad_noise_per_layer.png").stat().st_size > 1000
    assert (out / "learning_curves.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="grad_noise .*not 'fp32'"):
        tiny_run_config(tmp_path, precision="fp32", diagnostics=("grad_noise",))
    with pytest.raises(ValueError, match="unknown"):
        tiny_run_config(tmp_path, diagnostics=("telepathy",))


def test_similarity_command(tmp_path, capsys):
    a = tmp_path / "a.h5"
    _net(0).save(a)
    assert diagnostics_main(["similarity", str(a), str(a), "--json", str(tmp_path / "s.json")]) == 0
    assert "mean over all neurons  1.0000" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["mean"] == pytest.approx(1.0)
    assert diagnostics_main(["similarity", str(a), str(tmp_path / "missing.h5")]) == 2


def test_study_runs_variants_and_tabulates(tmp_path):
    cfg = tiny_run_config(tmp_path)
    base = tmp_path / "base.flags"
    base.write_text(
        "\n".join(
            [
                "--model=small_resnet",
                f"--dataset={cfg.dataset}",
                "--precision=w8a8",
                "--image_size=28",
                "--batch_size=8",
                "--epochs=2",
                "--steps_per_epoch=2",
                "--calibration_batches=1",
                "--lr=0.01",
                "--deterministic",
            ]
        )
    )
    variants = [Variant("base"), parse_variant("no calibration=--calibrate=false,--epochs=HALF")]
    rows = run_study(str(base), variants, str(tmp_path / "study"), parallel=2, log=lambda m: None)
    assert [r["name"] for r in rows] == ["base", "no calibration"]
    assert rows[1]["flags"] == ["--calibrate=false", "--epochs=1"] and rows[1]["epoch"] == 0
    assert rows[1]["delta_vs_base"] == pytest.approx(rows[1]["test_top1"] - rows[0]["test_top1"])
    md = (tmp_path / "study" / "study.md").read_text()
    assert "| no calibration | `--calibrate=false --epochs=1` |" in md and "| base | `-` |" in md
    # A finished row is reused; a row without model.h5 was interrupted and runs again (faq-train resumes it).
    os.remove(tmp_path / "study" / "base" / "model.h5")
    logged = []
    again = run_study(str(base), variants, str(tmp_path / "study"), log=logged.append)
    assert len(logged) == 1 and "study/base" in logged[0]
    assert (tmp_path / "study" / "base" / "model.h5").exists()
    assert again[1]["test_top1"] == rows[1]["test_top1"]
    with pytest.raises(ValueError, match="not a flag"):
        parse_variant("x=epochs=3")
    grown = parse_variant("grow=--batch_schedule=128@0,256@4,--lr_boundaries=3,6,9,--seed=1")
    assert grown.flags == ("--batch_schedule=128@0,256@4", "--lr_boundaries=3,6,9", "--seed=1")
    assert parse_variant("x=--a=1,,--b=2,").flags == ("--a=1", "--b=2")  # stray commas dropped


def test_confusion_matrix_and_per_class_top1_by_hand(tmp_path):
    from faq_tf.diagnostics.confusion import confusion_matrix, per_class_top1, plot_confusion

    counts = confusion_matrix([0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 0, 2], 4)
    np.testing.assert_array_equal(counts, [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    assert per_class_top1(counts, ["a", "b", "c", "d"]) == {
        "a": 50.0,
        "b": pytest.approx(200 / 3),
        "c": 100.0,
        "d": None,
    }
    with pytest.raises(ValueError, match=r"a prediction is outside \[0, 3\)"):
        confusion_matrix([0, 1], [0, 3], 3)
    assert plot_confusion(counts, "abcd", str(tmp_path / "c.png")) and (tmp_path / "c.png").stat().st_size > 1000
