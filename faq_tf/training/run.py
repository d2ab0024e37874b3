"""`run(config)`: one FAQ (or fp32) training job, in three phases.

  build(config, strategy) -> Job   model (built, loaded, quantized), optimizer, Trainer,
                                   checkpoints (restored when the run was interrupted), data
  train(job)                       the epoch loop: each epoch's lr and virtual batch,
                                   Trainer.train_epoch, evaluation, checkpoint, metrics
  finish(job) -> dict              exact BN statistics (--precise_bn), snap onto the integer
                                   grids, quantize wide outputs, save

`model_dir` ends up holding config.json, labels.txt (the class names, one per line),
checkpoints/ (every epoch and every N updates), metrics.json (with the final model's
per-class test top-1), tensorboard/ and model.h5 (load it with `faq_tf.load_model`). Starting again
with the same model_dir resumes from the last good checkpoint and ends where an
uninterrupted run would: the data order and augmentation are a function of (seed, epoch,
position), and the checkpoint holds the optimizer state, the epoch and the position in it,
BN statistics and every quantizer's l.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import sys
from collections.abc import Callable

import numpy as np
from absl import logging

from faq_tf.accumulator import snap_to_accumulator_grid
from faq_tf.baselines import is_tfmot_baseline, tfmot_quantize
from faq_tf.compat import keras, tf
from faq_tf.data.datasets import ImageSource, get_source, make_input
from faq_tf.diagnostics.confusion import confusion_matrix, per_class_top1
from faq_tf.introspect import initialize_weight_exponents
from faq_tf.models import PREPROCESSING, build_model
from faq_tf.outputs import float_outputs, quantize_float_outputs
from faq_tf.quantize import quantize_model
from faq_tf.saving import save_model
from faq_tf.training import batch_norm
from faq_tf.training.checkpoints import RunState
from faq_tf.training.config import TrainConfig
from faq_tf.training.errors import NonFiniteLossError, check_writable, saving, worker_guard
from faq_tf.training.records import RunRecords
from faq_tf.training.trainer import Trainer, check_divisible, get_strategy

__all__ = ["Job", "RunData", "run", "build", "train", "finish"]


@dataclasses.dataclass(frozen=True)
class RunData:
    """The run's dataset as the model sees it: sized, preprocessed and batched."""

    source: ImageSource
    input_shape: tuple[int, ...]
    preprocess: Callable[[tf.Tensor], tf.Tensor]
    batch_size: int
    seed: int

    def calibration(self, batches: int) -> tf.data.Dataset:
        """The first `batches` training batches (images only), for calibration."""
        ds = make_input(self.source, "train", self.batch_size, self.input_shape, self.preprocess, seed=self.seed)
        return ds.map(lambda x, y: x).take(batches)

    def labelled(self, batches: int) -> tf.data.Dataset:
        """The first `batches` training batches with their labels (not distributed)."""
        ds = make_input(self.source, "train", self.batch_size, self.input_shape, self.preprocess, seed=self.seed)
        return ds.take(batches)

    def train(self, strategy: tf.distribute.Strategy, epoch: int, skip_updates: int, n: int):
        """The epoch's distributed training batches, after the first `skip_updates` updates of n batches."""
        B = self.batch_size
        return strategy.distribute_datasets_from_function(
            lambda ctx: make_input(
                self.source,
                "train",
                ctx.get_per_replica_batch_size(B),
                self.input_shape,
                self.preprocess,
                epoch=epoch,
                seed=self.seed,
                skip_batches=skip_updates * n,
                global_batch_size=B,
                input_context=ctx,
            )
        )

    def test(self, strategy: tf.distribute.Strategy | None = None):
        """The test split, distributed over `strategy` (as it is, without one)."""
        ds = make_input(self.source, "test", self.batch_size, self.input_shape, self.preprocess)
        return ds if strategy is None else strategy.experimental_distribute_dataset(ds)


@dataclasses.dataclass
class Job:
    """Everything `build` makes for a run."""

    config: TrainConfig
    strategy: tf.distribute.Strategy
    chief: bool
    write_dir: str  # model_dir for the chief; a temporary folder for other workers
    data: RunData
    test: object  # the distributed test dataset
    model: keras.Model
    trainer: Trainer
    state: RunState
    records: RunRecords


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
      SaveError: model_dir not writable, or a save failed (nothing written before is lost).
      WorkerLostError: a worker of a multi-worker run died.
      ValueError, FileNotFoundError: bad input (model, weights, data).
    """
    job = build(config, strategy or get_strategy(config.strategy))
    with worker_guard(job.strategy, job.state.manager):
        train(job)
    return finish(job)


def _task(strategy: tf.distribute.Strategy) -> tuple[bool, str]:
    """(is this the chief, a name for this task)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, "chief"
    chief = resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)
    return chief, f"{resolver.task_type}_{resolver.task_id}"


def build(config: TrainConfig, strategy: tf.distribute.Strategy) -> Job:
    """Builds the model, optimizer, trainer and checkpoints, and restores the newest checkpoint."""
    source = get_source(config.dataset, config.data_dir)  # missing data: said before anything is written
    check_divisible(config.batch_size, strategy)
    chief, task = _task(strategy)
    # Every worker saves (saving runs collectives); only the chief's files are kept.
    write_dir = config.model_dir if chief else os.path.join(config.model_dir, f"tmp_{task}")
    check_writable(write_dir)
    if chief:
        config.save()
        with open(os.path.join(write_dir, "labels.txt"), "w") as f:
            f.write("\n".join(source.label_names()) + "\n")
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    with strategy.scope():
        model, spec = build_model(config.model, source.num_classes, config.pretrained, config.image_size)
        preprocess = spec.preprocess if config.preprocess == "auto" else PREPROCESSING[config.preprocess]
        data = RunData(source, tuple(model.input_shape[1:]), preprocess, config.batch_size, config.seed)
        teacher = _teacher(model) if config.distill else None
        model = _quantize(model, config, data, verbose=chief)
        optimizer = keras.optimizers.SGD(learning_rate=config.lr_schedule_fn()(0), momentum=config.momentum)
        optimizer.build(model.trainable_variables)
        trainer = Trainer(
            model,
            optimizer,
            strategy,
            config.batch_size,
            config.weight_decay,
            config.decoupled_weight_decay,
            teacher=teacher,
            distill=config.distill,
            distill_temperature=config.distill_temperature,
            jit_compile=config.jit_compile,
            ema_decay=config.ema_decay,
        )
        state = RunState(model, optimizer, write_dir, config.model_dir, config.checkpoint_every_steps, trainer.averages)
    restored = state.restore()
    records = RunRecords(config, model, write_dir if chief else None, state.epoch if restored else None)
    return Job(config, strategy, chief, write_dir, data, data.test(strategy), model, trainer, state, records)


def _teacher(model: keras.Model) -> keras.Model:
    """A frozen copy of the fp32 model, before quantization, to distil from."""
    teacher = keras.models.clone_model(model)
    teacher.set_weights(model.get_weights())
    teacher.trainable = False
    return teacher


def _quantize(model: keras.Model, config: TrainConfig, data: RunData, verbose: bool) -> keras.Model:
    if is_tfmot_baseline(config.precision):  # benchmarks only: tfmot's own QAT
        return tfmot_quantize(model, config.precision)
    if config.precision == "fp32":
        return model
    return quantize_model(
        model,
        config.precision,
        data.calibration(config.calibration_batches),
        calibrate=config.calibrate,
        calibration_batches=config.calibration_batches,
        percentile_8bit=config.calibration_percentile,
        percentile_low_bit=config.calibration_percentile_low_bit,
        method_low_bit=config.calibration_method_low_bit,
        layer_overrides=dict(config.layer_overrides) or None,
        verbose=verbose,
    )


def train(job: Job) -> None:
    """Runs the remaining epochs, from where the last checkpoint left off."""
    for epoch in range(job.state.epoch, job.config.epochs):
        _train_epoch(job, epoch)


def _train_epoch(job: Job, epoch: int) -> None:
    """One epoch: its lr and virtual batch, the updates, evaluation, checkpoint and records."""
    config, trainer, state = job.config, job.trainer, job.state
    n = config.batch_schedule_obj().accumulation_at(epoch, config.batch_size)
    steps = config.steps_per_epoch or job.data.source.num_train // config.batch_size
    updates = steps // n
    if updates < 1:
        raise ValueError(
            f"epoch {epoch}: a virtual batch of {n * config.batch_size} is larger than the epoch "
            f"({steps * config.batch_size} images)."
        )
    lr = config.lr_schedule_fn()(epoch)
    trainer.optimizer.learning_rate.assign(lr)
    start = state.position
    stats = trainer.train_epoch(
        iter(job.data.train(job.strategy, epoch, start, n)),
        updates,
        n,
        lr,
        start=start,
        after_update=functools.partial(_after_update, job, epoch),
        progress=sys.stdout.isatty(),
        epoch=epoch,
    )
    record = {
        "epoch": epoch,
        "lr": lr,
        "batch_size": n * config.batch_size,
        "train_loss": stats.train_loss,
        "train_top1": stats.train_top1,
        "seconds": round(stats.seconds, 2),
        "images_per_second": round(stats.images_per_second, 1),
    }
    if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
        if config.precise_bn_each_epoch:
            record["precise_bn_batches"] = _precise_batch_norm(job, epochs_trained=epoch + 1)
        record.update(trainer.evaluate(job.test, config.eval_steps))
    job.records.add(epoch, record)
    with saving("a checkpoint", state.manager.directory, state.latest):
        state.end_epoch(epoch)
    job.records.write(epoch, record, state.latest)


def _after_update(job: Job, epoch: int, update: int, finite: bool) -> None:
    """The NaN policy, diagnostics and checkpointing after each weight update."""
    if not finite:
        where = f"epoch {epoch}, update {update} (global step {int(job.trainer.optimizer.iterations.numpy())})"
        if job.config.nan_policy == "stop":
            raise NonFiniteLossError(
                f"NaN/Inf gradients at {where}; the update was not applied. Last good checkpoint: "
                f"{job.state.latest or 'none yet'}. Lower --lr, check the data, or use --nan_policy=skip."
            )
        logging.warning("Skipped a NaN/Inf update at %s", where)
    else:
        job.records.diagnostics.after_update()
    with saving("a checkpoint", job.state.manager.directory, job.state.latest):
        job.state.after_update(update + 1)


def finish(job: Job) -> dict:
    """Puts the model on the integer grids, evaluates it, and saves model.h5 and metrics.json.

    The saved model is the one the integer model reproduces: biases and BN constants on the
    runtime's grids (moves of at most about half an accumulator step) and, where the policy
    kept the logits wide, their 8-bit deployment scale calibrated like the rest.
    """
    config, trainer, history = job.config, job.trainer, job.records.history
    final = history[-1] if history else {}
    averaged = bool(config.ema_decay and history)
    if averaged:
        trainer.use_averaged_weights()
        initialize_weight_exponents(job.model)
        logging.info("the model now holds its weights' moving average (ema_decay=%g)", config.ema_decay)
        final = {**final, "ema_decay": config.ema_decay}
    precise = _precise_batch_norm(job, averaged=averaged)
    if precise:
        final = {**final, "precise_bn_batches": precise}
    final = {**final, **_check_batch_norm(job, precise)}
    snapped = snap_to_accumulator_grid(job.model)
    if snapped.changed:
        logging.info(
            "snapped %d bias values in %d layers to the accumulator grid; %d BatchNormalizations in exact form",
            snapped.moved,
            len(snapped.layers),
            len(snapped.rewritten),
        )
    if averaged or precise or snapped.changed or not any("test_top1" in h for h in history[-1:]):
        final = {**final, **trainer.evaluate(job.test, config.eval_steps)}
    model, final = _quantize_wide_outputs(job, final)
    final = {**final, "per_class_test_top1": _per_class(job, model)}
    path = os.path.join(job.write_dir, "model.h5")
    with saving("the model", path, job.state.latest):
        save_model(model, path)
    if job.chief:
        job.records.write_final(final, job.state.latest)
    else:
        shutil.rmtree(job.write_dir, ignore_errors=True)
    return final


def _precise_batch_norm(job: Job, epochs_trained: int | None = None, averaged: bool = False) -> int:
    """Averages the BN statistics over N training batches (--precise_bn); returns N used (0: off).

    Args:
      job: the run.
      epochs_trained: epochs trained so far (default: all of them, at the end of the run).
      averaged: the model holds averaged weights, which no BN statistics describe yet
        (with "auto" they are then always recomputed).
    """
    config = job.config
    if config.precise_bn == "off":
        return 0
    if config.precise_bn == "auto":
        steps = config.steps_per_epoch or job.data.source.num_train // config.batch_size
        trained = (config.epochs if epochs_trained is None else epochs_trained) * steps  # never more batches
        batches = min(100, trained)
        if not averaged:
            batches = batch_norm.auto_batches(job.model, trained, batches=batches)
    else:
        batches = int(config.precise_bn)
    if not batches:
        return 0
    with job.strategy.scope():
        used = batch_norm.recompute_statistics(job.model, job.data.calibration(batches), batches)
    logging.info("precise BN: every BatchNormalization's statistics averaged over %d training batches", used)
    return used


def _check_batch_norm(job: Job, precise: int, gap: float = 10.0) -> dict:
    """Top-1 on a training batch in training vs inference mode; warns when they differ widely."""
    if not batch_norm.batch_norm_layers(job.model):
        return {}
    images, labels = next(iter(job.data.labelled(1)))
    with job.strategy.scope():
        training, inference = batch_norm.inference_gap(job.model, images, labels)
    if training - inference > gap:
        advice = (
            "raise N (--precise_bn=N)"
            if precise
            else "set --precise_bn=100 to average exact statistics over 100 batches"
        )
        logging.warning(
            "on a training batch the model scores %.1f%% top-1 in training mode but %.1f%% in inference mode: its "
            "BatchNormalization statistics do not describe the data (too few updates for the BN momentum?); %s.",
            training,
            inference,
            advice,
        )
    return {"train_batch_top1_training_mode": training, "train_batch_top1_inference_mode": inference}


def _per_class(job: Job, model: keras.Model) -> dict[str, float | None]:
    """Per-class test top-1 (%) of the final model, by class name (labels.txt)."""
    test = job.data.test()
    if job.config.eval_steps:
        test = test.take(job.config.eval_steps)
    predict = tf.function(lambda images: tf.argmax(model(images, training=False), axis=-1), reduce_retracing=True)
    labels, predictions = [], []
    for images, y in test:
        labels.append(y.numpy())
        predictions.append(predict(images).numpy())
    source = job.data.source
    confusion = confusion_matrix(np.concatenate(labels), np.concatenate(predictions), source.num_classes)
    return per_class_top1(confusion, source.label_names())


def _quantize_wide_outputs(job: Job, final: dict) -> tuple[keras.Model, dict]:
    """Gives outputs the policy kept float (w4a4 logits) their 8-bit scale; evaluates again."""
    precision, model = job.config.precision, job.model
    wide = [] if precision == "fp32" or is_tfmot_baseline(precision) else float_outputs(model)
    if not wide:
        return model, final
    wide_result = {f"{k}_wide_outputs": v for k, v in final.items() if k.startswith("test_")}
    with job.strategy.scope():
        data = job.data.calibration(job.config.calibration_batches)
        model = quantize_float_outputs(model, data, job.config.calibration_percentile)
    job.trainer.use_model(model)
    logging.info("quantized the wide outputs %s to 8 bits for deployment", wide)
    return model, {**final, **job.trainer.evaluate(job.test, job.config.eval_steps), **wide_result}
