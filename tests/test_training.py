"""The fine-tuning loop: virtual batches, MirroredStrategy, resume, data, binary errors."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from absl import logging as absl_logging

import faq_tf
from conftest import image_folder as _image_folder
from conftest import tiny_run_config as _config
from faq_tf.compat import keras, tf
from faq_tf.training import TrainConfig, Trainer, run
from faq_tf.training.trainer import distillation_loss

L = keras.layers
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mlp(seed=0):
    keras.utils.set_random_seed(seed)
    i = keras.Input((6, 6, 1))
    x = L.Conv2D(4, 3, activation="relu")(i)
    x = L.Flatten()(x)
    return keras.Model(i, L.Dense(3)(x))


def _data(n=64):
    rng = np.random.RandomState(0)
    return rng.rand(n, 6, 6, 1).astype("float32"), rng.randint(0, 3, n).astype("int64")


def _train(strategy, batch, n, precision="fp32", updates=2, weight_decay=1e-3, **trainer_kw):
    x, y = _data()
    with strategy.scope():
        model = _mlp()
        if precision != "fp32":
            model = faq_tf.quantize_model(model, precision, x, verbose=False)
        opt = keras.optimizers.SGD(0.1, momentum=0.9)
        opt.build(model.trainable_variables)
        trainer = Trainer(model, opt, strategy, batch, weight_decay=weight_decay, **trainer_kw)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch // strategy.num_replicas_in_sync)
    if strategy.num_replicas_in_sync == 1:
        it = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)))
    else:
        it = iter(strategy.distribute_datasets_from_function(lambda ctx: ds))
    for _ in range(updates):
        trainer.train_update(it, n, 0.1)
    return [v.numpy() for v in model.trainable_variables]


def test_virtual_batch_equals_real_batch():
    default = tf.distribute.get_strategy()
    virtual = _train(default, batch=8, n=4)  # 4 x 8 accumulated per update
    real = _train(default, batch=32, n=1)
    for a, b in zip(virtual, real):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    moved = _train(default, batch=32, n=1, updates=0)
    assert not np.allclose(real[0], moved[0])  # the updates did something


def test_mirrored_on_two_cpus_equals_one_device():
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    two = _train(mirrored, batch=16, n=2, precision="w8a8")
    one = _train(tf.distribute.get_strategy(), batch=16, n=2, precision="w8a8")
    for a, b in zip(two, one):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_jit_compiled_step_trains_like_the_graph_step():
    default = tf.distribute.get_strategy()
    for precision in ("fp32", "w4a4"):
        graph = _train(default, batch=16, n=2, precision=precision)
        xla = _train(default, batch=16, n=2, precision=precision, jit_compile=True)
        for a, b in zip(graph, xla):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not np.allclose(graph[0], _train(default, batch=16, n=2, precision="w4a4", updates=0)[0])


@pytest.mark.parametrize("replicas", [1, 2])
def test_weight_average_follows_its_recursion(replicas):
    """a <- a - (1 - d)(a - w) after every applied update, from the starting weights; on 1 and 2 replicas."""
    decay = 0.75
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if replicas == 2 else tf.distribute.get_strategy()
    x, y = _data()
    with strategy.scope():
        model = faq_tf.quantize_model(_mlp(), "w4a4", x, verbose=False)
        opt = keras.optimizers.SGD(0.1, momentum=0.9)
        opt.build(model.trainable_variables)
        trainer = Trainer(model, opt, strategy, 16, weight_decay=1e-3, ema_decay=decay)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat()
    it = iter(strategy.experimental_distribute_dataset(ds.batch(16)))
    expected = [v.numpy() for v in model.trainable_variables]
    for _ in range(4):
        trainer.train_update(it, 2, 0.1)
        expected = [a - (1 - decay) * (a - v.numpy()) for a, v in zip(expected, model.trainable_variables)]
    last = [v.numpy() for v in model.trainable_variables]
    for average, e in zip(trainer.averages, expected):
        np.testing.assert_allclose(average.numpy(), e, rtol=1e-5, atol=1e-7)
    assert not np.allclose(expected[0], last[0])  # the average lags the weights
    trainer.use_averaged_weights()
    for v, e in zip(model.trainable_variables, expected):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="needs a Trainer built with ema_decay > 0"):
        Trainer(model, opt, strategy, 16).use_averaged_weights()


def test_averaged_run_ends_with_the_average_exact_bn_statistics_and_resumes(tmp_path, caplog):
    """faq-train --ema_decay: the saved model holds the checkpointed averages; a resumed run ends alike."""
    cfg = _config(tmp_path, precision="w4a4", epochs=2, ema_decay=0.9, lr_schedule="constant", lr_final=None)
    final = run(cfg)
    assert final["ema_decay"] == 0.9 and final["precise_bn_batches"] == 8  # always recomputed: all 8 batches
    state = tf.train.load_checkpoint(os.path.join(cfg.model_dir, "checkpoints"))
    averages = sorted(k for k in state.get_variable_to_shape_map() if k.startswith("averages/"))
    model = faq_tf.load_model(os.path.join(cfg.model_dir, "model.h5"))
    assert len(averages) == len(model.trainable_variables) > 0
    # The kernels are the averages, bit for bit (biases and BN constants then move onto the integer grids).
    kernels = [v.numpy().tobytes() for v in model.trainable_variables if "kernel" in v.name]
    stored = {state.get_tensor(k).tobytes() for k in averages}
    assert len(kernels) > 3 and all(k in stored for k in kernels)
    # Resume after epoch 1 (delete the last checkpoint and the outputs): the same final model.
    resumed = dataclass_replace(cfg, model_dir=str(tmp_path / "resumed"))
    run(dataclass_replace(resumed, epochs=1, ema_decay=0.9))
    os.remove(os.path.join(resumed.model_dir, "model.h5"))
    run(resumed)
    for a, b in zip(_final_weights(resumed.model_dir), _final_weights(cfg.model_dir)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # A run begun without averages and resumed with them: they start from the restored weights.
    late = dataclass_replace(cfg, model_dir=str(tmp_path / "late"))
    run(dataclass_replace(late, epochs=1, ema_decay=0.0))
    os.remove(os.path.join(late.model_dir, "model.h5"))
    with caplog.at_level("WARNING"):
        assert run(late)["ema_decay"] == 0.9
    assert any("holds no weight averages" in r.getMessage() for r in caplog.records)


def test_distillation_loss_is_temperature_scaled_kl():
    t = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]], np.float32)
    s = np.array([[1.0, 1.0, 0.0], [0.5, -0.5, 1.0]], np.float32)
    for temperature in (1.0, 4.0):
        p = np.exp(t / temperature) / np.exp(t / temperature).sum(-1, keepdims=True)
        q = np.exp(s / temperature) / np.exp(s / temperature).sum(-1, keepdims=True)
        expected = temperature**2 * (p * np.log(p / q)).sum(-1)
        np.testing.assert_allclose(distillation_loss(t, s, temperature).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(distillation_loss(t, t).numpy(), [0.0, 0.0], atol=1e-6)


def _one_update(model, teacher, distill, x, y, lr=0.1):
    opt = keras.optimizers.SGD(lr)
    opt.build(model.trainable_variables)
    trainer = Trainer(model, opt, tf.distribute.get_strategy(), len(x), teacher=teacher, distill=distill)
    trainer.train_update(iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x))), 1, lr)
    return [v.numpy() for v in model.trainable_variables]


def test_distillation_mixes_the_losses_by_alpha():
    x, y = _data(16)
    teacher = _mlp(seed=1)
    # alpha = 0.5: one SGD step on 0.5 x cross-entropy + 0.5 x KL(teacher || student).
    model = _mlp()
    before = [v.numpy() for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        ce = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        loss = tf.reduce_mean(0.5 * ce + 0.5 * distillation_loss(teacher(x), logits))
    grads = tape.gradient(loss, model.trainable_variables)
    after = _one_update(model, teacher, 0.5, x, y)
    for w0, g, w1 in zip(before, grads, after):
        np.testing.assert_allclose(w1, w0 - 0.1 * g.numpy(), rtol=1e-5, atol=1e-6)
    # alpha = 1 with a teacher equal to the student: the loss is at its minimum, nothing moves.
    model, twin = _mlp(), _mlp()
    before = [v.numpy() for v in model.trainable_variables]
    for w0, w1 in zip(before, _one_update(model, twin, 1.0, x, y)):
        np.testing.assert_allclose(w1, w0, atol=1e-7)
    # alpha = 0: the teacher is ignored.
    plain, ignored = _one_update(_mlp(), None, 0.0, x, y), _one_update(_mlp(), teacher, 0.0, x, y)
    for a, b in zip(plain, ignored):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"distill": 1.5, "teacher": "model"}, r"distill must be in \[0, 1\], got 1.5"),
        ({"distill": 0.5}, "distill=0.5 needs a teacher model"),
        ({"distill": 0.5, "teacher": "model", "distill_temperature": 0.0}, "distill_temperature must be > 0"),
    ],
)
def test_distillation_arguments_are_checked(kw, match):
    model = _mlp()
    if kw.get("teacher") == "model":
        kw["teacher"] = model
    with pytest.raises(ValueError, match=match):
        Trainer(model, keras.optimizers.SGD(0.1), tf.distribute.get_strategy(), 8, **kw)


def test_distilled_xla_run_from_an_fp32_run(tmp_path):
    """faq-train's distill and jit_compile options, end to end: fp32 run, then w4a4 distilled from it."""
    run(_config(tmp_path / "fp32", precision="fp32", epochs=1, steps_per_epoch=3))
    weights = str(tmp_path / "fp32" / "run" / "model.h5")
    cfg = _config(tmp_path, pretrained=weights, precision="w4a4", epochs=1, steps_per_epoch=2)
    final = run(dataclass_replace(cfg, distill=0.7, distill_temperature=2.0, jit_compile=True))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert np.isfinite(metrics["epochs"][0]["train_loss"]) and 0 <= final["test_top1"] <= 100
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["distill"], config["distill_temperature"], config["jit_compile"]) == (0.7, 2.0, True)
    assert faq_tf.quantized_tensors(faq_tf.load_model(tmp_path / "run" / "model.h5"))


def test_batch_not_divisible_by_replicas():
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with mirrored.scope():
        model = _mlp()
        with pytest.raises(ValueError, match="batch_size=15 is not divisible by the 2 replicas"):
            Trainer(model, keras.optimizers.SGD(0.1), mirrored, 15)


def test_nan_gradients_are_never_applied(tmp_path):
    x, y = _data()
    strategy = tf.distribute.get_strategy()
    model = _mlp()
    opt = keras.optimizers.SGD(0.1)
    opt.build(model.trainable_variables)
    trainer = Trainer(model, opt, strategy, 8)
    before = [v.numpy() for v in model.trainable_variables]
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    it = iter(tf.data.Dataset.from_tensor_slices((bad, y)).batch(8))
    _, finite = trainer.train_update(it, 1, 0.1)
    assert not finite
    for a, b in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(a, b.numpy())


def test_image_folder_dataset_trains_and_writes_outputs(tmp_path):
    final = run(_config(tmp_path, epochs=1, steps_per_epoch=2))
    out = tmp_path / "run"
    for name in ("config.json", "metrics.json", "model.h5", "checkpoints", "tensorboard"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"][0]["batch_size"] == 8 and "test_top1" in final
    config = json.loads((out / "config.json").read_text())
    assert config["precision"] == "w8a8" and config["dataset"].startswith("folder:")
    names = ["class_0", "class_1", "class_2"]
    assert (out / "labels.txt").read_text().split("\n")[:3] == names
    per_class = metrics["final"]["per_class_test_top1"]
    assert list(per_class) == names and all(v is None or 0 <= v <= 100 for v in per_class.values())
    loaded = faq_tf.load_model(out / "model.h5")
    assert faq_tf.quantized_tensors(loaded)


def _train_cmd(cfg: TrainConfig):
    return [sys.executable, "-m", "faq_tf.train", *cfg.to_argv()]


def _final_weights(model_dir):
    return [w for w in faq_tf.load_model(os.path.join(model_dir, "model.h5")).get_weights()]


def _latest_checkpoint_number(model_dir):
    index = os.path.join(model_dir, "checkpoints", "checkpoint")
    try:
        with open(index) as f:
            first = f.readline()
    except OSError:
        return 0
    return int(first.rsplit("-", 1)[-1].strip().strip('"')) if "ckpt-" in first else 0


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    # w4a4 (calibrated l values), an exp lr schedule and a batch schedule that switches to
    # 2-step virtual batches in epoch 1: 4 + 2 updates, a checkpoint after each.
    cfg = _config(
        tmp_path, epochs=2, steps_per_epoch=4, checkpoint_every_steps=1, precision="w4a4", batch_schedule="8@0,16@1"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    ref = dataclass_replace(cfg, model_dir=str(tmp_path / "ref"))
    subprocess.run(_train_cmd(ref), check=True, env=env, capture_output=True, timeout=300)

    # A random update of the 6, from a seed printed on failure: FAQ_TEST_SEED=<seed> replays it.
    seed = int(os.environ.get("FAQ_TEST_SEED", random.SystemRandom().randrange(2**31)))
    kill_after = random.Random(seed).randint(1, 5)
    replay = f"kill after update {kill_after}; replay with FAQ_TEST_SEED={seed}"
    proc = subprocess.Popen(_train_cmd(cfg), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while _latest_checkpoint_number(cfg.model_dir) < kill_after and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _latest_checkpoint_number(cfg.model_dir)
    assert killed_at >= 1, f"the run never wrote a checkpoint ({replay})"
    assert not os.path.exists(os.path.join(cfg.model_dir, "model.h5")), f"killed too late at {killed_at} ({replay})"
    done = subprocess.run(_train_cmd(cfg), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{replay}\n{done.stderr[-3000:]}"
    assert "Resuming from" in done.stderr, f"killed after update {killed_at} ({replay})"
    for a, b in zip(_final_weights(cfg.model_dir), _final_weights(ref.model_dir)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"killed after update {killed_at} ({replay})")
    m1 = json.loads(open(os.path.join(cfg.model_dir, "metrics.json")).read())
    m2 = json.loads(open(os.path.join(ref.model_dir, "metrics.json")).read())
    assert [e["epoch"] for e in m1["epochs"]] == [0, 1]
    assert [e["lr"] for e in m1["epochs"]] == [e["lr"] for e in m2["epochs"]]
    assert m1["epochs"][1]["batch_size"] == 16
    assert m1["final"]["test_top1"] == pytest.approx(m2["final"]["test_top1"])
    # w4a4 keeps its logits wide while fine-tuning; the saved model has their 8-bit scale.
    assert "test_top1_wide_outputs" in m2["final"] and "test_loss_wide_outputs" in m2["final"]
    assert not faq_tf.float_outputs(faq_tf.load_model(os.path.join(ref.model_dir, "model.h5")))


def dataclass_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"model": "resnet9000"}, "Unknown model 'resnet9000'"),
        ({"dataset": "mnist_but_wrong:x"}, "Unknown dataset"),
        ({"precision": "int3"}, "Unknown precision"),
        ({"batch_schedule": "16@0,20@1"}, "not multiples of batch_size=8"),
        ({"batch_schedule": "8@1"}, "must start at epoch 0"),
        ({"lr": -1.0}, "lr must be a positive number"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"calibration_percentile": 0.0}, "percentile must be in"),
        ({"calibration_percentile": 100.5}, "percentile must be in"),
        ({"distill": 1.5}, r"distill must be in \[0, 1\], got 1.5"),
        ({"distill": 0.5, "pretrained": "w.h5", "distill_temperature": -1.0}, "distill_temperature must be > 0"),
        ({"distill": 0.5, "pretrained": "w.h5", "precision": "fp32"}, "distill=0.5 teaches a faq_tf quantized"),
        ({"distill": 0.5}, "distill=0.5 needs trained fp32 weights"),
        ({"ema_decay": 1.0}, r"ema_decay must be in \[0, 1\), got 1.0"),
        ({"ema_decay": 0.99, "precise_bn": "off"}, "ema_decay=0.99 ends the run with averaged weights"),
        (
            {"calibration_method_low_bit": "kl"},
            r"calibration_method_low_bit must be one of \('percentile', 'mse', 'output'\)",
        ),
        ({"calibration_method_low_bit": "mse", "calibrate": False}, "drop --calibrate=false"),
    ],
)
def test_bad_configs(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        run(_config(tmp_path, **kw))


def test_empty_or_missing_image_folder(tmp_path):
    empty = tmp_path / "empty"
    (empty / "cats").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="has no images"):
        run(_config(tmp_path, dataset=f"folder:{empty}"))
    with pytest.raises(FileNotFoundError, match="has no class subfolders"):
        run(_config(tmp_path, dataset=f"folder:{tmp_path / 'empty' / 'cats'}"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run(_config(tmp_path, dataset=f"folder:{tmp_path / 'nope'}"))


def test_unreadable_image_in_folder(tmp_path):
    root = _image_folder(tmp_path)
    (root / "class_0" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png is not a readable image"):
        run(_config(tmp_path, epochs=1, steps_per_epoch=30))


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        run(_config(tmp_path, dataset="fashion_mnist", data_dir=str(tmp_path / "nowhere")))


def _free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start_workers(cfg, cluster, tag):
    procs = []
    for index in range(2):
        env = dict(
            os.environ,
            PYTHONPATH=REPO,
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        log = open(os.path.join(os.path.dirname(cfg.model_dir), f"{tag}_worker{index}.log"), "w+")
        cmd = _train_cmd(cfg) + ["--strategy=multi_worker"]
        procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True), log))
    return procs


def _finish(procs, timeout=300):
    outputs = []
    for proc, log in procs:
        proc.wait(timeout=timeout)
        log.seek(0)
        outputs.append(log.read())
    return outputs


def test_multi_worker_run_survives_a_preempted_worker(tmp_path):
    # Two workers on localhost; worker 1 is SIGKILLed after the second update's checkpoint.
    cfg = _config(tmp_path, epochs=2, steps_per_epoch=4, checkpoint_every_steps=1, precision="w4a4")
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    procs = _start_workers(cfg, cluster, "first")
    deadline = time.time() + 240
    while _latest_checkpoint_number(cfg.model_dir) < 2 and time.time() < deadline and procs[0][0].poll() is None:
        time.sleep(0.02)
    procs[1][0].send_signal(signal.SIGKILL)
    chief_out = _finish(procs[:1], timeout=180)[0]
    procs[1][0].wait()
    assert procs[0][0].returncode == 75, chief_out[-3000:]  # EX_TEMPFAIL: restart me
    assert "A worker of the cluster stopped (" in chief_out, chief_out[-3000:]
    assert "restart every worker" in chief_out and "Traceback" not in chief_out.split("faq-train: ")[-1]
    killed_at = _latest_checkpoint_number(cfg.model_dir)
    assert killed_at < 8 and not os.path.exists(os.path.join(cfg.model_dir, "model.h5"))

    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}  # the restarted job
    outputs = _finish(_start_workers(cfg, cluster, "restart"))
    assert all("faq-train finished" in out for out in outputs), outputs[0][-3000:] + outputs[1][-3000:]
    assert "Resuming from" in outputs[0] and f"ckpt-{killed_at}" in outputs[0]
    metrics = json.loads(open(os.path.join(cfg.model_dir, "metrics.json")).read())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1] and metrics["final"]["batch_size"] == 8
    assert _latest_checkpoint_number(cfg.model_dir) == 8  # every update done exactly once
    assert os.path.exists(os.path.join(cfg.model_dir, "model.h5"))
    assert not [d for d in os.listdir(cfg.model_dir) if d.startswith("tmp_")]


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
    cfg = _config(tmp_path, epochs=2, steps_per_epoch=2)
    run(cfg)
    ckpt_dir = os.path.join(cfg.model_dir, "checkpoints")
    latest = tf.train.latest_checkpoint(ckpt_dir)
    data = [f for f in os.listdir(ckpt_dir) if f.startswith(os.path.basename(latest)) and ".data" in f][0]
    with open(os.path.join(ckpt_dir, data), "r+b") as f:
        f.truncate(100)  # a half-written file
    caplog.set_level("INFO")
    absl_logging.set_verbosity(absl_logging.INFO)
    final = run(dataclass_replace(cfg, epochs=3))
    text = caplog.text
    assert f"Checkpoint {latest} is unreadable" in text
    assert "Resuming from" in text and "(epoch 1, update 0)" in text  # the epoch-1 checkpoint
    assert final["epoch"] == 2


@pytest.mark.parametrize("variant", ["fp32+convertible", "tfmot_int8+convertible", "w4a4+fast", "w4a4+xla+xla"])
def test_step_time_refuses_a_variant_it_would_not_time_as_named(variant):
    from benchmarks import step_time

    with pytest.raises(ValueError, match="variant"):
        step_time._parse_variant(variant)


def test_step_time_variants_take_their_suffixes_in_any_order():
    from benchmarks import step_time

    assert step_time._parse_variant("w4a4+convertible+xla") == step_time._parse_variant("w4a4+xla+convertible")
    assert step_time._parse_variant("w4a4+convertible+xla") == ("w4a4", True, True)
    assert step_time._parse_variant("fp32+xla") == ("fp32", True, False)


def test_step_time_benchmark_reports_time_and_memory_per_variant(tmp_path):
    """benchmarks.step_time side by side: every variant timed, fp32 the unit, memory from a fresh process."""
    out = tmp_path / "step_time.json"
    argv = [sys.executable, "-m", "benchmarks.step_time", f"--dataset=folder:{_image_folder(tmp_path)}"]
    argv += ["--batch_size=8", "--rounds=2", "--steps_per_round=2", f"--out={out}"]
    subprocess.run(argv + ["--variants=fp32,w4a4+xla,w4a4+convertible"], check=True, cwd=REPO, capture_output=True)
    result = json.loads(out.read_text())
    assert set(result["median_step_ms"]) == {"fp32", "w4a4+xla", "w4a4+convertible"}
    assert result["ratio_to_fastest_fp32"]["fp32"] == 1.0 and result["ratio_to_fp32_same_mode"]["fp32"] == 1.0
    assert result["ratio_to_fp32_same_mode"]["w4a4+xla"] > 0
    assert all(m > 100 for m in result["peak_memory_mib"].values())  # TensorFlow alone takes more
    table = (tmp_path / "step_time.md").read_text()
    assert "| w4a4+xla |" in table and result["memory_measure"] in table


def test_suite_subset_reports_each_method_against_fp32_and_its_control(tmp_path):
    """make bench --methods: the 3-seed table of a subset, from faq-train's final metrics."""
    import argparse

    from benchmarks import suite

    finals = {"control4": [92.7, 92.8, 92.9], "faq_w4a4": [92.0, 92.2, 92.4]}
    runs = {m: {s: {"final": {"test_top1": a, "epoch": 9}} for s, a in enumerate(accs)} for m, accs in finals.items()}
    args = argparse.Namespace(seeds="0,1,2", step_rounds=0)
    suite._subset_report(str(tmp_path), runs, list(finals), [0, 1, 2], args, time.perf_counter())
    report = json.loads((tmp_path / "bench_subset.json").read_text())
    fp32 = suite._baseline_top1()
    w4a4 = report["rows"]["faq_w4a4"]
    assert w4a4["mean"] == pytest.approx(92.2) and w4a4["sd"] == pytest.approx(0.2) and w4a4["epochs"] == 10
    assert w4a4["vs_fp32"] == pytest.approx(92.2 - fp32) and w4a4["vs_control"] == pytest.approx(-0.6)
    assert "vs_control" not in report["rows"]["control4"] and report["step_time"] is None
    table = (tmp_path / "bench_subset.md").read_text()
    assert "| FAQ w4a4 | 10 | 92.20 ± 0.20 | 92.00 / 92.20 / 92.40 |" in table and "-0.60 |" in table


def test_precise_bn_each_epoch_sets_exact_statistics_before_each_evaluation(tmp_path):
    cfg = _config(tmp_path, precision="fp32", pretrained="none", epochs=2, precise_bn_each_epoch=True)
    final = run(cfg)
    epochs = json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"]
    # auto: as many batches as trained so far (4 updates per epoch), then all 8 at the end
    assert [e["precise_bn_batches"] for e in epochs] == [4, 8] and final["precise_bn_batches"] == 8
    assert all("test_top1" in e for e in epochs)
    off = run(dataclass_replace(cfg, precise_bn="off", model_dir=str(tmp_path / "off")))
    assert off.get("precise_bn_batches") == 0
    epochs = json.loads((tmp_path / "off" / "metrics.json").read_text())["epochs"]
    assert [e["precise_bn_batches"] for e in epochs] == [0, 0]


def test_precise_bn_gives_a_short_run_its_training_mode_accuracy(tmp_path, caplog):
    """3 fp32 epochs from scratch on a 300-image folder, then FAQ w8a8 (1 epoch) and w4a4 (2 epochs)."""
    folder = f"folder:{_image_folder(tmp_path, per_class=100)}"

    def fp32_run(name, precise_bn):
        cfg = _config(tmp_path / name, dataset=folder, precision="fp32", epochs=3, steps_per_epoch=None)
        cfg = dataclass_replace(cfg, batch_size=16, lr=0.05, lr_schedule="cosine", lr_final=None, precise_bn=precise_bn)
        final = run(cfg)
        return cfg, final, json.loads((tmp_path / name / "run" / "metrics.json").read_text())["epochs"][-1]

    # Off: the moving statistics still hold most of their initial values; faq-train warns.
    with caplog.at_level("WARNING"):
        _, stale, last = fp32_run("off", "off")
    assert stale["test_top1"] < last["train_top1"] - 20
    assert any(
        "do not describe the data" in r.getMessage() and "--precise_bn=100" in r.getMessage() for r in caplog.records
    )
    # Auto: 48 updates at momentum 0.99 is short, so the statistics are recomputed exactly.
    cfg, fp32, last = fp32_run("auto", "auto")
    assert fp32["precise_bn_batches"] > 0
    assert abs(fp32["test_top1"] - last["train_top1"]) <= 1.0, (fp32, last)
    weights = str(tmp_path / "auto" / "run" / "model.h5")
    for precision, epochs, tolerance in (("w8a8", 1, 1.0), ("w4a4", 2, 3.0)):
        faq = dataclass_replace(
            cfg, pretrained=weights, precision=precision, epochs=epochs, lr=0.005, model_dir=str(tmp_path / precision)
        )
        final = run(faq)
        assert final["precise_bn_batches"] > 0
        assert final["test_top1"] >= fp32["test_top1"] - tolerance, (precision, final["test_top1"], fp32["test_top1"])
