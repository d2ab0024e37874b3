"""`run(config)`: calibrate, quantize, fine-tune, evaluate and save one FAQ run.

`model_dir` ends up holding config.json, checkpoints/ (every epoch and every N
updates), metrics.json, tensorboard/ and model.h5 (load it with `faq_tf.load_model`).
Starting again with the same model_dir resumes from the last good checkpoint and ends
where an uninterrupted run would: the data order and augmentation are a function of
(seed, epoch, position), and the checkpoint holds the optimizer state, the epoch and
the position in it, BN statistics and every quantizer's l.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import sys
import time

from absl import logging

from faq_tf.accumulator import snap_to_accumulator_grid
from faq_tf.baselines import is_tfmot_baseline, tfmot_quantize
from faq_tf.compat import keras, tf
from faq_tf.data.datasets import get_source, make_input
from faq_tf.diagnostics.grad_noise import EMA_FACTOR, GradNoiseMonitor
from faq_tf.models import build_model
from faq_tf.outputs import float_outputs, quantize_float_outputs
from faq_tf.quantize import quantize_model
from faq_tf.saving import save_model
from faq_tf.training.checkpoints import restore_latest_good
from faq_tf.training.config import TrainConfig
from faq_tf.training.trainer import Trainer, get_strategy

__all__ = ["run", "NonFiniteLossError", "SaveError", "WorkerLostError"]


class NonFiniteLossError(RuntimeError):
    """Raised when a step's gradients are NaN/Inf and nan_policy is "stop"."""


class WorkerLostError(RuntimeError):
    """A worker of a multi-worker run died (preemption, crash); restart all of them to resume."""


class SaveError(OSError):
    """A checkpoint or model file could not be written (full disk, read-only folder).

    Files written before are intact: checkpoints are written to new files and the index
    is replaced atomically, and model.h5 / metrics.json are written beside and renamed.
    """


@contextlib.contextmanager
def _worker_guard(strategy: tf.distribute.Strategy, manager):
    """Turns the collective-op failure a dead peer causes into a `WorkerLostError`."""
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError) as error:
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            raise
        detail = (getattr(error, "message", None) or str(error)).strip()
        resolver = strategy.cluster_resolver
        me = f"/job:{resolver.task_type}/replica:0/task:{resolver.task_id}"
        peers = sorted(set(re.findall(r"/job:\w+/replica:\d+/task:\d+", detail)) - {me})
        reason = detail.split("aborted by:")[-1].strip().splitlines()[0][:200]
        raise WorkerLostError(
            f"A worker of the cluster stopped ({', '.join(peers) or 'a peer of ' + me}: {reason}); it was "
            f"preempted or crashed. The last good checkpoint is {manager.latest_checkpoint or 'none yet'}; "
            "restart every worker with the same flags and TF_CONFIG to resume from it."
        ) from error


@contextlib.contextmanager
def _saving(what: str, path: str, manager=None):
    """Runs a save; turns a write failure into a `SaveError` that says what is safe."""
    try:
        yield
    except (OSError, tf.errors.OpError) as error:
        reason = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
        last = manager.latest_checkpoint if manager is not None else None
        raise SaveError(
            f"Could not write {what} to {path}: {reason.strip().splitlines()[0]}. The disk may be full or the "
            f"folder read-only. Nothing written before was changed; the last good checkpoint is "
            f"{last or 'none yet'}. Free space or fix the permissions and rerun the same command to resume."
        ) from error


def _task(strategy: tf.distribute.Strategy) -> tuple[bool, str]:
    """(is this the chief, a name for this task)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, "chief"
    chief = resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)
    return chief, f"{resolver.task_type}_{resolver.task_id}"


def _check_writable(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write_test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise SaveError(
            f"model_dir {path} is not writable ({e.strerror}): nothing was trained. Free space or fix the "
            "permissions, or choose another --model_dir."
        ) from e


def _calibration_batches(source, config, input_shape, preprocess):
    ds = make_input(source, "train", config.batch_size, input_shape, preprocess, epoch=0, seed=config.seed)
    return ds.map(lambda x, y: x).take(config.calibration_batches)


def run(config: TrainConfig, strategy: tf.distribute.Strategy | None = None) -> dict:
    """Runs one FAQ (or fp32) training job described by `config`.

    Args:
      config: the frozen run description.
      strategy: overrides `config.strategy` (tests pass one in).

    Returns:
      The final metrics (also written to model_dir/metrics.json).

    Raises:
      NonFiniteLossError: a NaN/Inf step with nan_policy="stop" (no bad update is applied
        or saved).
      OSError: model_dir not writable.
    """
    strategy = strategy or get_strategy(config.strategy)
    chief, task = _task(strategy)
    # Every worker saves (saving runs collectives); only the chief's files are kept.
    write_dir = config.model_dir if chief else os.path.join(config.model_dir, f"tmp_{task}")
    _check_writable(write_dir)
    if chief:
        config.save()
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()

    source = get_source(config.dataset, config.data_dir)
    B = config.batch_size
    if B % strategy.num_replicas_in_sync:
        raise ValueError(
            f"batch_size={B} is not divisible by the {strategy.num_replicas_in_sync} replicas; "
            f"use a multiple of {strategy.num_replicas_in_sync}."
        )
    with strategy.scope():
        model, spec = build_model(config.model, source.num_classes, config.pretrained, config.image_size)
        input_shape = tuple(model.input_shape[1:])
        if is_tfmot_baseline(config.precision):  # benchmarks only: tfmot's own QAT
            model = tfmot_quantize(model, config.precision)
        elif config.precision != "fp32":
            model = quantize_model(
                model,
                config.precision,
                _calibration_batches(source, config, input_shape, spec.preprocess),
                calibrate=config.calibrate,
                calibration_batches=config.calibration_batches,
                percentile_8bit=config.calibration_percentile,
                percentile_low_bit=config.calibration_percentile_low_bit,
                layer_overrides=dict(config.layer_overrides) or None,
                verbose=chief,
            )
        lr_fn = config.lr_schedule_fn()
        optimizer = keras.optimizers.SGD(learning_rate=lr_fn(0), momentum=config.momentum)
        optimizer.build(model.trainable_variables)
        trainer = Trainer(model, optimizer, strategy, B, config.weight_decay, config.decoupled_weight_decay)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        position = tf.Variable(0, dtype=tf.int64, trainable=False, name="update_in_epoch")
        ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var, position=position)
        manager = tf.train.CheckpointManager(
            ckpt,
            os.path.join(write_dir, "checkpoints"),
            max_to_keep=3,
            step_counter=optimizer.iterations,
            checkpoint_interval=config.checkpoint_every_steps or None,
        )
    # Every worker resumes from the chief's checkpoints.
    read_manager = (
        manager if chief else tf.train.CheckpointManager(ckpt, os.path.join(config.model_dir, "checkpoints"), 3)
    )
    restored = restore_latest_good(ckpt, read_manager)
    if restored:
        logging.info("Resuming from %s (epoch %d, update %d)", restored, int(epoch_var.numpy()), int(position.numpy()))

    metrics_path = os.path.join(config.model_dir, "metrics.json")
    history = []
    if restored and os.path.exists(metrics_path):
        with open(metrics_path) as f:
            history = [h for h in json.load(f).get("epochs", []) if h["epoch"] < int(epoch_var.numpy())]
    writer = tf.summary.create_file_writer(os.path.join(write_dir, "tensorboard")) if chief else None
    batches = config.batch_schedule_obj()
    steps_per_epoch = config.steps_per_epoch or source.num_train // B
    test_ds = strategy.experimental_distribute_dataset(make_input(source, "test", B, input_shape, spec.preprocess))
    interactive = sys.stdout.isatty()
    diagnostics = _Diagnostics(config, model, write_dir if chief else None, writer)

    with _worker_guard(strategy, manager):
        for epoch in range(int(epoch_var.numpy()), config.epochs):
            n = batches.accumulation_at(epoch, B)
            updates = steps_per_epoch // n
            if updates < 1:
                raise ValueError(
                    f"epoch {epoch}: a virtual batch of {n * B} is larger than the epoch ({steps_per_epoch * B} images)."
                )
            lr = lr_fn(epoch)
            optimizer.learning_rate.assign(lr)
            start = int(position.numpy())
            dist = strategy.distribute_datasets_from_function(
                lambda ctx, e=epoch, s=start, n=n: make_input(
                    source,
                    "train",
                    ctx.get_per_replica_batch_size(B),
                    input_shape,
                    spec.preprocess,
                    epoch=e,
                    seed=config.seed,
                    skip_batches=s * n,
                    global_batch_size=B,
                    input_context=ctx,
                )
            )
            iterator = iter(dist)
            trainer.train_loss.reset_state()
            trainer.train_top1.reset_state()
            bar = keras.utils.Progbar(updates, stateful_metrics=["loss", "top1", "img/s"]) if interactive else None
            t0, seen = time.perf_counter(), 0
            for u in range(start, updates):
                loss_sum, finite = trainer.train_update(iterator, n, lr)
                seen += n * B
                if not finite:
                    where = f"epoch {epoch}, update {u} (global step {int(optimizer.iterations.numpy())})"
                    last = manager.latest_checkpoint or "none yet"
                    if config.nan_policy == "stop":
                        raise NonFiniteLossError(
                            f"NaN/Inf gradients at {where}; the update was not applied. Last good checkpoint: "
                            f"{last}. Lower --lr, check the data, or use --nan_policy=skip."
                        )
                    logging.warning("Skipped a NaN/Inf update at %s", where)
                if finite:
                    diagnostics.after_update()
                position.assign(u + 1)
                if config.checkpoint_every_steps:
                    with _saving("a checkpoint", manager.directory, manager):
                        manager.save(checkpoint_number=optimizer.iterations, check_interval=True)
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                values = [("loss", float(trainer.train_loss.result())), ("top1", float(trainer.train_top1.result()))]
                if bar is not None:
                    bar.update(u + 1, values + [("img/s", rate)])
                elif (u + 1) % max(1, updates // 10) == 0 or u + 1 == updates:
                    logging.info(
                        "epoch %d update %d/%d loss %.4f top1 %.4f %.0f img/s",
                        epoch,
                        u + 1,
                        updates,
                        *[v for _, v in values],
                        rate,
                    )
            seconds = time.perf_counter() - t0
            epoch_var.assign(epoch + 1)
            position.assign(0)
            record = {
                "epoch": epoch,
                "lr": lr,
                "batch_size": n * B,
                "train_loss": float(trainer.train_loss.result()),
                "train_top1": float(trainer.train_top1.result()) * 100,
                "seconds": round(seconds, 2),
                "images_per_second": round(seen / max(seconds, 1e-9), 1),
            }
            if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
                record.update(trainer.evaluate(test_ds, config.eval_steps))
            history.append(record)
            diagnostics.end_epoch(epoch)
            with _saving("a checkpoint", manager.directory, manager):
                manager.save(checkpoint_number=optimizer.iterations)
            if chief:
                logging.info("epoch %d: %s", epoch, record)
                with writer.as_default(step=epoch):
                    for k, v in record.items():
                        if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
                            tf.summary.scalar(k, v)
                with _saving("metrics", metrics_path, manager):
                    _write_metrics(metrics_path, history)

    final = history[-1] if history else {}
    # The saved model is the one the integer model reproduces: biases and BN constants on
    # the runtime's grids (moves of at most about half an accumulator step) and, where the
    # policy kept the logits wide, their 8-bit deployment scale calibrated like the rest.
    snapped = snap_to_accumulator_grid(model)
    if snapped.changed:
        logging.info(
            "snapped %d bias values in %d layers to the accumulator grid; %d BatchNormalizations in exact form",
            snapped.moved,
            len(snapped.layers),
            len(snapped.rewritten),
        )
    if snapped.changed or not any("test_top1" in h for h in history[-1:]):
        final = {**final, **trainer.evaluate(test_ds, config.eval_steps)}
    wide = float_outputs(model) if config.precision != "fp32" and not is_tfmot_baseline(config.precision) else []
    if wide:
        wide_result = {f"{k}_wide_outputs": v for k, v in final.items() if k.startswith("test_")}
        with strategy.scope():
            model = quantize_float_outputs(
                model,
                _calibration_batches(source, config, input_shape, spec.preprocess),
                config.calibration_percentile,
            )
        trainer.use_model(model)
        logging.info("quantized the wide outputs %s to 8 bits for deployment", wide)
        final = {**final, **trainer.evaluate(test_ds, config.eval_steps), **wide_result}
    with _saving("the model", os.path.join(write_dir, "model.h5"), manager):
        save_model(model, os.path.join(write_dir, "model.h5"))
    if chief:
        with _saving("metrics", metrics_path, manager):
            _write_metrics(metrics_path, history, final)
    else:
        shutil.rmtree(write_dir, ignore_errors=True)
    return final


class _Diagnostics:
    """The --diagnostics measurements of a run (nothing at all when none is asked for)."""

    def __init__(self, config: TrainConfig, model, write_dir: str | None, writer):
        self.monitor = GradNoiseMonitor(model) if "grad_noise" in config.diagnostics else None
        self.path = os.path.join(write_dir, "diagnostics.json") if write_dir else None
        self.writer = writer
        self.record = {"grad_noise": {"ema_factor": EMA_FACTOR, "epochs": []}} if self.monitor else {}
        if self.monitor and self.path and os.path.exists(self.path):  # resumed: keep earlier epochs
            with open(self.path) as f:
                self.record["grad_noise"]["epochs"] = json.load(f).get("grad_noise", {}).get("epochs", [])

    def after_update(self) -> None:
        if self.monitor is not None:
            self.monitor.update()

    def end_epoch(self, epoch: int) -> None:
        if self.monitor is None:
            return
        per_layer = self.monitor.result()
        self.monitor.reset()
        epochs = [e for e in self.record["grad_noise"]["epochs"] if e["epoch"] != epoch]
        mean = sum(per_layer.values()) / max(len(per_layer), 1)
        epochs.append({"epoch": epoch, "per_layer": per_layer, "mean": mean})
        self.record["grad_noise"]["epochs"] = epochs
        if self.path is None:
            return
        with self.writer.as_default(step=epoch):
            for layer, value in per_layer.items():
                tf.summary.scalar(f"grad_noise/{layer}", value)
        tmp = self.path + ".tmp"
        with _saving("diagnostics", self.path), open(tmp, "w") as f:
            json.dump(self.record, f, indent=1)
        os.replace(tmp, self.path)


def _write_metrics(path: str, history: list, final: dict | None = None) -> None:
    final = final or (history[-1] if history else {})
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"final": final, "epochs": history}, f, indent=1)
    os.replace(tmp, path)  # never leaves a half-written metrics.json
