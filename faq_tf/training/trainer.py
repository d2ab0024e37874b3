"""The FAQ fine-tuning step: a custom tf.distribute loop with virtual batches.

One call of `Trainer.train_update` is one weight update: it runs n real batches
through `strategy.run`, adds each replica's gradients (of a loss already divided by
the global batch n x B, via `tf.nn.compute_average_loss`) into per-replica
accumulators, then applies the accumulated gradient once. n = 1 is ordinary SGD;
n > 1 is the paper's virtual batch (footnote 6), equal to one step on a batch of n x B.

Weight decay: `coupled` (default) adds wd * w to the gradient, which is what PyTorch's
`SGD(weight_decay=...)` does and so what the paper's runs used; `decoupled` shrinks
the weights by lr * wd after the update (AdamW style). Both apply to every trainable
variable, as PyTorch's default parameter groups do.
"""

from __future__ import annotations

from faq_tf.compat import keras, tf

__all__ = ["Trainer", "get_strategy"]


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


class Trainer:
    """Trains a (quantized) classifier that outputs logits. Build it inside `strategy.scope()`.

    Args:
      model: the Keras model.
      optimizer: a Keras optimizer (SGD with momentum for FAQ).
      strategy: the distribution strategy the model was built under.
      global_batch_size: real batch summed over replicas (B).
      weight_decay: the decay factor.
      decoupled_weight_decay: see the module docstring.
      num_classes: for top-5 (only when there are more than 5 classes).
    """

    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        strategy: tf.distribute.Strategy,
        global_batch_size: int,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
    ):
        replicas = strategy.num_replicas_in_sync
        if global_batch_size % replicas:
            raise ValueError(
                f"batch_size={global_batch_size} is not divisible by the {replicas} replicas; "
                f"use a multiple of {replicas}."
            )
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
        self.train_loss = keras.metrics.Mean("train_loss")
        self.train_top1 = keras.metrics.SparseCategoricalAccuracy("train_top1")
        self.test_loss = keras.metrics.Mean("test_loss")
        self.test_top1 = keras.metrics.SparseCategoricalAccuracy("test_top1")
        self.test_top5 = keras.metrics.SparseTopKCategoricalAccuracy(5, "test_top5")
        self._update_fn = None
        self._eval_fn = None

    # -- replica functions ------------------------------------------------------------
    def _accumulate(self, images, labels, scale):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            per_example = self.loss_fn(labels, logits)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
            if self.weight_decay and not self.decoupled:
                l2 = tf.add_n([tf.reduce_sum(tf.square(v)) for v in variables])
                loss += tf.nn.scale_regularization_loss(0.5 * self.weight_decay * l2)
            loss *= scale
        grads = tape.gradient(loss, variables)
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
