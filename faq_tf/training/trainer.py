"""The FAQ fine-tuning step: a custom tf.distribute loop with virtual batches.

One call of `Trainer.train_update` is one weight update: it runs n real batches
through `strategy.run`, adds each replica's gradients (of a loss already divided by
the global batch n x B, via `tf.nn.compute_average_loss`) into per-replica
accumulators, then applies the accumulated gradient once. n = 1 is ordinary SGD;
n > 1 is the paper's virtual batch (footnote 6), equal to one step on a batch of n x B.

Distillation (opt-in, beyond the paper): with a `teacher` (the fp32 model FAQ started
from) and `distill` = alpha > 0, each example's loss is (1 - alpha) x cross-entropy +
alpha x `distillation_loss` between the teacher's and the student's logits.

Weight averaging (opt-in, beyond the paper): with `ema_decay` = d > 0, every update
also moves an exponential moving average of each trainable variable,
a <- a - (1 - d)(a - w), so the run can end with an average weighted towards its last
~1 / (1 - d) updates' weights (`use_averaged_weights`), one more way of averaging out the
gradient noise that quantization adds (section 3.3's theme). The average starts at the
starting weights, which keep a weight of d^T after T updates: give it T >> 1 / (1 - d).

`jit_compile=True` compiles the forward and backward pass with XLA; the accumulation,
the update and the metrics stay in the ordinary graph.

Weight decay: `coupled` (default) adds wd * w to the gradient, which is what PyTorch's
`SGD(weight_decay=...)` does and so what the paper's runs used; `decoupled` shrinks
the weights by lr * wd after the update (AdamW style). Both apply to every trainable
variable, as PyTorch's default parameter groups do.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

from absl import logging

from faq_tf.compat import keras, tf

__all__ = ["EpochStats", "Trainer", "check_divisible", "distillation_loss", "get_strategy"]


def check_divisible(global_batch_size: int, strategy: tf.distribute.Strategy) -> None:
    """Raises if the global batch cannot be split evenly over the strategy's replicas.

    Raises:
      ValueError: naming the batch, the replica count and what to use instead.
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"batch_size={global_batch_size} is not divisible by the {replicas} replicas; use a multiple of {replicas}."
        )


def get_strategy(name: str) -> tf.distribute.Strategy:
    """Returns the strategy for "default", "mirrored", "multi_worker" or "tpu" (never None)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown strategy {name!r}: use default, mirrored, multi_worker or tpu")


def distillation_loss(teacher_logits: tf.Tensor, student_logits: tf.Tensor, temperature: float = 1.0) -> tf.Tensor:
    """Per-example knowledge-distillation loss T^2 x KL(softmax(t / T) || softmax(s / T)).

    The T^2 factor keeps the gradient's size independent of T (Hinton et al., 2015), so
    the mixing weight means the same at every temperature.

    Args:
      teacher_logits: [batch, classes] logits of the teacher (no gradient flows into them).
      student_logits: [batch, classes] logits of the model being trained.
      temperature: T > 0.

    Returns:
      A [batch] float32 tensor.
    """
    t = tf.stop_gradient(tf.cast(teacher_logits, tf.float32)) / temperature
    s = tf.cast(student_logits, tf.float32) / temperature
    log_p = tf.nn.log_softmax(t)
    kl = tf.reduce_sum(tf.exp(log_p) * (log_p - tf.nn.log_softmax(s)), axis=-1)
    return temperature**2 * kl


@dataclasses.dataclass(frozen=True)
class EpochStats:
    """What one `Trainer.train_epoch` call measured.

    Attributes:
      train_loss: mean training loss over its updates (with distillation, the mixed loss).
      train_top1: training top-1 in percent.
      seconds: wall time of the loop.
      images: images processed (updates x virtual batch).
    """

    train_loss: float
    train_top1: float
    seconds: float
    images: int

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.seconds, 1e-9)


class Trainer:
    """Trains a (quantized) classifier that outputs logits. Build it inside `strategy.scope()`.

    Args:
      model: the Keras model.
      optimizer: a Keras optimizer (SGD with momentum for FAQ).
      strategy: the distribution strategy the model was built under.
      global_batch_size: real batch summed over replicas (B).
      weight_decay: the decay factor.
      decoupled_weight_decay: see the module docstring.
      teacher: the model to distil from (its logits for the same batch), or None.
      distill: alpha in [0, 1], the weight of the distillation loss (needs a teacher when > 0).
      distill_temperature: T of `distillation_loss`.
      jit_compile: compile the forward and backward pass with XLA.
      ema_decay: d in [0, 1) of the weight average (0: no average).

    Raises:
      ValueError: if `global_batch_size` does not divide over the replicas, or a
        distillation or averaging argument is out of range.
    """

    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        strategy: tf.distribute.Strategy,
        global_batch_size: int,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        teacher: keras.Model | None = None,
        distill: float = 0.0,
        distill_temperature: float = 1.0,
        jit_compile: bool = False,
        ema_decay: float = 0.0,
    ):
        check_divisible(global_batch_size, strategy)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if not 0.0 <= distill <= 1.0:
            raise ValueError(f"distill must be in [0, 1], got {distill}")
        if distill and teacher is None:
            raise ValueError(f"distill={distill} needs a teacher model to distil from")
        if not distill_temperature > 0:
            raise ValueError(f"distill_temperature must be > 0, got {distill_temperature}")
        self.teacher = teacher if distill else None
        self.distill = float(distill)
        self.distill_temperature = float(distill_temperature)
        self._gradients_fn = tf.function(self._gradients, jit_compile=True) if jit_compile else self._gradients
        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self.global_batch_size = global_batch_size
        self.weight_decay = float(weight_decay)
        self.decoupled = bool(decoupled_weight_decay)
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=keras.losses.Reduction.NONE
        )
        self.accumulators = [
            tf.Variable(
                tf.zeros_like(v),
                trainable=False,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
                name=f"accum_{i}",
            )
            for i, v in enumerate(model.trainable_variables)
        ]
        self.ema_decay = float(ema_decay)
        # Every replica applies the same update, so any replica's average is the average.
        self.averages = [
            tf.Variable(
                v.read_value(),
                trainable=False,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                name=f"average_{i}",
            )
            for i, v in enumerate(model.trainable_variables)
            if self.ema_decay
        ]
        self.train_loss = keras.metrics.Mean("train_loss")
        self.train_top1 = keras.metrics.SparseCategoricalAccuracy("train_top1")
        self.test_loss = keras.metrics.Mean("test_loss")
        self.test_top1 = keras.metrics.SparseCategoricalAccuracy("test_top1")
        self.test_top5 = keras.metrics.SparseTopKCategoricalAccuracy(5, "test_top5")
        self._update_fn = None
        self._eval_fn = None

    # -- replica functions ------------------------------------------------------------
    def _loss(self, images, labels, logits):
        """Per-example loss: cross-entropy, mixed with distillation when it is on."""
        per_example = self.loss_fn(labels, logits)
        if self.teacher is not None:
            teacher_logits = self.teacher(images, training=False)
            kd = distillation_loss(teacher_logits, logits, self.distill_temperature)
            per_example = (1.0 - self.distill) * per_example + self.distill * kd
        return per_example

    def _gradients(self, images, labels, scale):
        """The forward and backward pass (XLA-compiled with jit_compile)."""
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            per_example = self._loss(images, labels, logits)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
            if self.weight_decay and not self.decoupled:
                l2 = tf.add_n([tf.reduce_sum(tf.square(v)) for v in variables])
                loss += tf.nn.scale_regularization_loss(0.5 * self.weight_decay * l2)
            loss *= scale
        return tape.gradient(loss, variables), per_example, logits

    def _accumulate(self, images, labels, scale):
        grads, per_example, logits = self._gradients_fn(images, labels, scale)
        for acc, g in zip(self.accumulators, grads):
            acc.assign_add(g)
        self.train_loss.update_state(tf.reduce_mean(per_example))
        self.train_top1.update_state(labels, logits)
        return tf.reduce_sum(per_example)

    def _nonfinite(self):
        return 1.0 - tf.cast(
            tf.reduce_all([tf.reduce_all(tf.math.is_finite(acc.read_value())) for acc in self.accumulators]),
            tf.float32,
        )

    def _apply(self, lr):
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip([acc.read_value() for acc in self.accumulators], variables))
        if self.weight_decay and self.decoupled:
            for v in variables:
                v.assign_sub(lr * self.weight_decay * v)
        for average, v in zip(self.averages, variables):
            average.assign_sub((1.0 - self.ema_decay) * (average - v))
        self._reset()

    def _reset(self):
        for acc in self.accumulators:
            acc.assign(tf.zeros_like(acc))

    def _eval(self, images, labels):
        logits = self.model(images, training=False)
        self.test_loss.update_state(self.loss_fn(labels, logits))
        self.test_top1.update_state(labels, logits)
        if logits.shape[-1] > 5:
            self.test_top5.update_state(labels, logits)

    # -- cross-replica steps ------------------------------------------------------------
    def train_update(self, iterator, n: int, lr: float) -> tuple[float, bool]:
        """Runs n real batches from `iterator` and applies one weight update.

        A step whose gradients hold NaN or Inf is not applied: the weights and the
        optimizer state stay as they were.

        Returns:
          (summed loss over the examples, whether every gradient was finite).
        """
        if self._update_fn is None:
            strategy, SUM = self.strategy, tf.distribute.ReduceOp.SUM

            @tf.function
            def accumulate(iterator, n):
                total = tf.constant(0.0)
                scale = 1.0 / tf.cast(n, tf.float32)
                for _ in tf.range(n):
                    images, labels = next(iterator)
                    per_replica = strategy.run(self._accumulate, args=(images, labels, scale))
                    total += strategy.reduce(SUM, per_replica, axis=None)
                bad = strategy.reduce(SUM, strategy.run(self._nonfinite), axis=None)
                return total, bad

            @tf.function
            def apply(lr):
                strategy.run(self._apply, args=(lr,))

            @tf.function
            def reset():
                strategy.run(self._reset)

            self._update_fn = (accumulate, apply, reset)
        accumulate, apply, reset = self._update_fn
        total, bad = accumulate(iterator, tf.constant(n))
        finite = float(bad) == 0.0
        if finite:
            apply(tf.constant(lr, tf.float32))
        else:
            reset()
        return float(total), finite

    def train_epoch(
        self,
        iterator: Iterator,
        updates: int,
        n: int,
        lr: float,
        *,
        start: int = 0,
        after_update: Callable[[int, bool], None] | None = None,
        progress: bool = False,
        epoch: int = 0,
    ) -> EpochStats:
        """Runs updates `start` .. `updates - 1` of one epoch.

        Args:
          iterator: the epoch's distributed batches, positioned at update `start`.
          updates: weight updates in the epoch.
          n: real batches per update (the virtual batch is n x B).
          lr: the epoch's learning rate.
          start: updates already done (a resumed epoch).
          after_update: called as after_update(u, finite) after update u (0-based); it
            decides what a non-finite step means and records progress.
          progress: show a progress bar (for a terminal) instead of log lines.
          epoch: the epoch number, for the log lines.

        Returns:
          The epoch's `EpochStats` (loss and top-1 over the updates run here).
        """
        self.train_loss.reset_state()
        self.train_top1.reset_state()
        bar = keras.utils.Progbar(updates, stateful_metrics=["loss", "top1", "img/s"]) if progress else None
        t0, seen = time.perf_counter(), 0
        for u in range(start, updates):
            _, finite = self.train_update(iterator, n, lr)
            seen += n * self.global_batch_size
            if after_update is not None:
                after_update(u, finite)
            log = (u + 1) % max(1, updates // 10) == 0 or u + 1 == updates
            if bar is None and not log:
                continue  # the metrics are read (two more ops and syncs) only when they are shown
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            loss, top1 = float(self.train_loss.result()), float(self.train_top1.result())
            if bar is not None:
                bar.update(u + 1, [("loss", loss), ("top1", top1), ("img/s", rate)])
            else:
                logging.info(
                    "epoch %d update %d/%d loss %.4f top1 %.4f %.0f img/s", epoch, u + 1, updates, loss, top1, rate
                )
        return EpochStats(
            float(self.train_loss.result()),
            float(self.train_top1.result()) * 100,
            time.perf_counter() - t0,
            seen,
        )

    def use_averaged_weights(self) -> None:
        """Sets the model's trainable variables to their moving averages (needs `ema_decay` > 0).

        Everything else (BN statistics, weight exponents) still describes the last weights:
        recompute them for the averaged ones (`faq_tf.training.run.finish` does).

        Raises:
          ValueError: if the trainer keeps no averages.
        """
        if not self.averages:
            raise ValueError("use_averaged_weights needs a Trainer built with ema_decay > 0")
        for v, average in zip(self.model.trainable_variables, self.averages):
            v.assign(average)

    def use_model(self, model: keras.Model) -> None:
        """Evaluates `model` from now on (the same network with its outputs quantized)."""
        self.model = model
        self._eval_fn = None

    def evaluate(self, dataset, steps: int | None = None) -> dict[str, float]:
        """Top-1, top-5 (%) and loss over a distributed test dataset."""
        for m in (self.test_loss, self.test_top1, self.test_top5):
            m.reset_state()

        if self._eval_fn is None:
            self._eval_fn = tf.function(lambda images, labels: self.strategy.run(self._eval, args=(images, labels)))
        for i, (images, labels) in enumerate(dataset):
            if steps is not None and i >= steps:
                break
            self._eval_fn(images, labels)
        result = {"test_top1": float(self.test_top1.result()) * 100, "test_loss": float(self.test_loss.result())}
        if self.test_top5.count > 0:
            result["test_top5"] = float(self.test_top5.result()) * 100
        return result
