"""What the benchmarks share: repository paths, progress lines, faq-train runs, Fashion-MNIST arrays, reports.

TensorFlow is imported inside the functions that need it, so that `--help` and the
processes that only launch faq-train stay light.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from faq_tf.compat import keras, tf
    from faq_tf.data import ImageSource

__all__ = [
    "BASELINE",
    "FLAGS",
    "ROOT",
    "fashion_mnist_arrays",
    "fashion_mnist_calibration",
    "keras_top1",
    "logger",
    "read_metrics",
    "run_faq_train",
    "write_json",
    "write_report",
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = os.path.join(ROOT, "baselines", "fashion_mnist", "small_resnet_fp32.h5")  # made by fp32.flags
FLAGS = os.path.join(ROOT, "flags", "fashion_mnist")

_MODEL = "small_resnet"  # the Fashion-MNIST model of every benchmark here


def logger(prefix: str) -> Callable[[str], None]:
    """Returns a function that prints `[prefix HH:MM:SS] message` and flushes.

    Args:
      prefix: the benchmark's name, e.g. "demo".
    """

    def log(message: str) -> None:
        print(f"[{prefix} {time.strftime('%H:%M:%S')}] {message}", flush=True)

    return log


def read_metrics(model_dir: str) -> dict:
    """The metrics.json that faq-train wrote to `model_dir` ("epochs" and "final")."""
    with open(os.path.join(model_dir, "metrics.json")) as f:
        return json.load(f)


def run_faq_train(
    flagfile: str,
    model_dir: str,
    extra: Sequence[str] = (),
    *,
    launcher: Sequence[str] = ("-m", "faq_tf.train"),
    log: Callable[[str], None] | None = None,
) -> dict:
    """Runs faq-train in a subprocess from the repository root and returns its metrics.

    A model_dir that holds a finished or interrupted run resumes from its checkpoints.

    Args:
      flagfile: the absl flagfile, e.g. `os.path.join(FLAGS, "w8a8.flags")`.
      model_dir: faq-train's --model_dir.
      extra: further faq-train flags; they override the flagfile's.
      launcher: the Python arguments that start faq-train, followed by its flags.
      log: if given, receives the faq-train command line.

    Returns:
      faq-train's metrics.json (see `read_metrics`).

    Raises:
      subprocess.CalledProcessError: if faq-train fails.
    """
    args = [f"--flagfile={flagfile}", f"--model_dir={model_dir}", *extra]
    if log:
        log("faq-train " + " ".join(args))
    subprocess.run([sys.executable, *launcher, *args], check=True, cwd=ROOT)
    return read_metrics(model_dir)


def _small_resnet_input(source: ImageSource, split: str, batch_size: int) -> tf.data.Dataset:
    from faq_tf.data import make_input
    from faq_tf.models import MODELS

    spec = MODELS[_MODEL]
    return make_input(source, split, batch_size, spec.input_shape, spec.preprocess)


def fashion_mnist_arrays(source: ImageSource, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A whole split as small_resnet's input (pixels / 256) and labels, in the source's fixed order.

    Args:
      source: `faq_tf.data.get_source("fashion_mnist", data_dir)`.
      split: "train" or "test".

    Returns:
      (images float32 [N, 28, 28, 1], labels int64 [N]).
    """
    if split == "train":
        # make_input's "train" is shuffled and augmented; its evaluation path keeps the order.
        source = dataclasses.replace(source, test=source.train)
    elif split != "test":
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in _small_resnet_input(source, "test", 500)])
    return np.concatenate(xs), np.concatenate(ys)


def fashion_mnist_calibration(source: ImageSource, batches: int = 5) -> tf.data.Dataset:
    """The first `batches` training batches of 128 (make_input's seed 0, epoch 0), images only."""
    return _small_resnet_input(source, "train", 128).map(lambda x, y: x).take(batches)


def keras_top1(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy (%) of a Keras model on arrays, predicting 500 rows at a time."""
    return float(np.mean(np.argmax(model.predict(x, batch_size=500, verbose=0), axis=1) == y) * 100.0)


def write_json(path: str, data: Any) -> None:
    """Writes `data` as indented JSON (other values as their str), creating the folder."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1, default=str)


def write_report(out: str, name: str, data: Any, markdown: str) -> None:
    """Writes `out/name.json` and `out/name.md`, and prints the Markdown."""
    write_json(os.path.join(out, f"{name}.json"), data)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(markdown)
    print("\n" + markdown)
