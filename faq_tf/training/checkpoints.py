"""Checkpoints of a run: what is saved, where, and restoring the newest one that is intact.

A checkpoint holds the model (weights, BN statistics, every quantizer's l), the optimizer,
the weight averages (with --ema_decay), the epoch and the number of updates done in it, so
a killed run resumes exactly where it stopped (the data order is a function of the seed,
the epoch and the position).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from absl import logging

from faq_tf.compat import keras, tf

__all__ = ["RunState", "restore_latest_good"]


def restore_latest_good(
    checkpoint: tf.train.Checkpoint | Callable[[str], tf.train.Checkpoint], manager: tf.train.CheckpointManager
) -> str | None:
    """Restores the newest readable checkpoint of `manager`, skipping damaged ones.

    A truncated or corrupted checkpoint is reported by name and the previous one is
    tried. If checkpoints exist but none can be read, the run says so and starts fresh.

    Args:
      checkpoint: what to restore into, or a function giving it for each checkpoint path.
      manager: the checkpoints to try, newest first.

    Returns:
      The restored checkpoint path, or None when starting from scratch.
    """
    candidates = list(reversed(manager.checkpoints))
    for path in candidates:
        try:
            target = checkpoint(path) if callable(checkpoint) else checkpoint
            target.restore(path).assert_existing_objects_matched()
            return path
        except Exception as e:  # noqa: BLE001 - any failure to read means: try the previous one
            logging.error("Checkpoint %s is unreadable (%s); trying the previous one.", path, str(e).splitlines()[0])
    if candidates:
        logging.error(
            "None of the checkpoints %s could be restored: starting from scratch (the damaged files are left "
            "in place).",
            candidates,
        )
    return None


def _holds_averages(path: str) -> bool:
    """Whether the checkpoint at `path` has weight averages (an unreadable one: assume so, and let restore say)."""
    try:
        return any(name.startswith("averages/") for name, _ in tf.train.list_variables(path))
    except Exception:  # noqa: BLE001 - a damaged file is reported by restore_latest_good
        return True


class RunState:
    """The checkpointed state of a run: model, optimizer, epoch and position in the epoch.

    Build it inside `strategy.scope()`. Every worker writes checkpoints (saving runs
    collectives) under its own `write_dir`; all of them resume from the chief's in `model_dir`.

    Args:
      model: the model being trained.
      optimizer: its optimizer (its `iterations` numbers the checkpoints).
      write_dir: where this task writes (model_dir for the chief).
      read_dir: where checkpoints are resumed from (the chief's model_dir).
      every_steps: also checkpoint every N updates (0: once per epoch only).
      averages: the trainer's weight averages (`Trainer.averages`), saved with the rest.
    """

    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        write_dir: str,
        read_dir: str,
        every_steps: int = 0,
        averages: Sequence[tf.Variable] = (),
    ):
        self.optimizer = optimizer
        self.epoch_variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.position_variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="update_in_epoch")
        state = dict(model=model, optimizer=optimizer, epoch=self.epoch_variable, position=self.position_variable)
        self.averages = list(averages)
        self._weights = model.trainable_variables  # what the averages average, in their order
        self._without_averages = tf.train.Checkpoint(**state)
        self.checkpoint = (
            tf.train.Checkpoint(**state, averages=self.averages) if self.averages else self._without_averages
        )
        self.every_steps = every_steps
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            os.path.join(write_dir, "checkpoints"),
            max_to_keep=3,
            step_counter=optimizer.iterations,
            checkpoint_interval=every_steps or None,
        )
        read = os.path.join(read_dir, "checkpoints")
        self._read_manager = (
            self.manager if read == self.manager.directory else tf.train.CheckpointManager(self.checkpoint, read, 3)
        )

    @property
    def epoch(self) -> int:
        """The epoch to run next."""
        return int(self.epoch_variable.numpy())

    @property
    def position(self) -> int:
        """Updates already done in the current epoch."""
        return int(self.position_variable.numpy())

    @property
    def latest(self) -> str | None:
        """The newest checkpoint written completely."""
        return self.manager.latest_checkpoint

    def restore(self) -> str | None:
        """Restores the newest intact checkpoint; returns its path, or None for a fresh start.

        A run resumed with --ema_decay from checkpoints written without it starts its
        averages from the restored weights (with a warning) instead of refusing them.
        """

        def checkpoint_for(path: str) -> tf.train.Checkpoint:
            return self.checkpoint if not self.averages or _holds_averages(path) else self._without_averages

        restored = restore_latest_good(checkpoint_for, self._read_manager)
        if restored and checkpoint_for(restored) is not self.checkpoint:
            for average, weight in zip(self.averages, self._weights):
                average.assign(weight)
            logging.warning(
                "%s holds no weight averages (the run started without --ema_decay): they start from its weights.",
                restored,
            )
        if restored:
            logging.info("Resuming from %s (epoch %d, update %d)", restored, self.epoch, self.position)
        return restored

    def after_update(self, update: int) -> None:
        """Records that `update` updates of the epoch are done; checkpoints every `every_steps`."""
        self.position_variable.assign(update)
        if self.every_steps:
            self.manager.save(checkpoint_number=self.optimizer.iterations, check_interval=True)

    def end_epoch(self, epoch: int) -> None:
        """Records that `epoch` is done and checkpoints."""
        self.epoch_variable.assign(epoch + 1)
        self.position_variable.assign(0)
        self.manager.save(checkpoint_number=self.optimizer.iterations)
