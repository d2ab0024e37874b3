"""What a run writes about itself: metrics.json, TensorBoard scalars and diagnostics.json.

metrics.json holds one record per epoch and the final metrics; it is written beside and
renamed, so a crash never leaves half a file. A resumed run keeps the records of the
epochs it does not redo.
"""

from __future__ import annotations

import json
import math
import os

from absl import logging

from faq_tf.compat import keras, tf
from faq_tf.diagnostics.grad_noise import EMA_FACTOR, GradNoiseMonitor
from faq_tf.training.config import TrainConfig
from faq_tf.training.errors import saving

__all__ = ["RunRecords", "write_json"]


def write_json(path: str, value: dict) -> None:
    """Writes `value` to `path` atomically (beside, then renamed)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
    os.replace(tmp, path)


class RunRecords:
    """The per-epoch history of a run and where it is written.

    Args:
      config: the run.
      model: the model being trained (the gradient-noise monitor reads its quantizers).
      write_dir: this task's output folder, or None for a worker whose files are not kept.
      resumed_epoch: the epoch a resumed run starts at (earlier records are kept), or None.
    """

    def __init__(self, config: TrainConfig, model: keras.Model, write_dir: str | None, resumed_epoch: int | None):
        self.path = os.path.join(config.model_dir, "metrics.json")
        self.history: list[dict] = []
        if resumed_epoch is not None and os.path.exists(self.path):
            with open(self.path) as f:
                self.history = [h for h in json.load(f).get("epochs", []) if h["epoch"] < resumed_epoch]
        self.write_dir = write_dir
        self.writer = tf.summary.create_file_writer(os.path.join(write_dir, "tensorboard")) if write_dir else None
        self.diagnostics = _Diagnostics(config, model, write_dir, self.writer)

    def add(self, epoch: int, record: dict) -> None:
        """Appends an epoch's record and closes the epoch's diagnostics."""
        self.history.append(record)
        self.diagnostics.end_epoch(epoch)

    def write(self, epoch: int, record: dict, last_checkpoint: str | None) -> None:
        """Logs the epoch and writes TensorBoard scalars and metrics.json (the chief only)."""
        if self.write_dir is None:
            return
        logging.info("epoch %d: %s", epoch, record)
        with self.writer.as_default(step=epoch):
            for k, v in record.items():
                if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
                    tf.summary.scalar(k, v)
        self.write_final(None, last_checkpoint)

    def write_final(self, final: dict | None, last_checkpoint: str | None) -> None:
        """Writes metrics.json with `final` (default: the last epoch's record)."""
        final = final or (self.history[-1] if self.history else {})
        with saving("metrics", self.path, last_checkpoint):
            write_json(self.path, {"final": final, "epochs": self.history})


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
        with saving("diagnostics", self.path):
            write_json(self.path, self.record)
