"""Per-class results: the confusion matrix, per-class top-1, and a plot.

faq-train records the per-class test top-1 of its final model (metrics.json), and
`python -m export_tflite.evaluate` reports both for any .tflite and dataset.

Example:

  confusion = confusion_matrix(labels, logits.argmax(-1), num_classes=10)
  per_class_top1(confusion, FASHION_MNIST_CLASSES)   # {"T-shirt/top": 87.1, ...}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["confusion_matrix", "per_class_top1", "plot_confusion"]


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[i, j]: examples of class i predicted as class j (int64, num_classes x num_classes).

    Raises:
      ValueError: for labels or predictions outside [0, num_classes), or different lengths.
    """
    labels, predictions = np.asarray(labels).ravel(), np.asarray(predictions).ravel()
    if labels.shape != predictions.shape:
        raise ValueError(f"{labels.size} labels but {predictions.size} predictions")
    for what, values in (("label", labels), ("prediction", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"a {what} is outside [0, {num_classes}): {values.min()}..{values.max()}")
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts


def per_class_top1(confusion: np.ndarray, names: Sequence[str]) -> dict[str, float | None]:
    """Top-1 (%) of each class, by name (None for a class with no examples)."""
    totals = confusion.sum(axis=1)
    return {
        str(name): (float(confusion[i, i] / totals[i] * 100.0) if totals[i] else None) for i, name in enumerate(names)
    }


def plot_confusion(confusion: np.ndarray, names: Sequence[str], path: str, title: str = "") -> str:
    """Writes the row-normalized confusion matrix as a PNG; returns the path."""
    from faq_tf.diagnostics.plots import _pyplot

    plt = _pyplot()
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * n, 1.0 + 0.5 * n))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [str(s) for s in names], rotation=90)
    ax.set_yticks(range(n), [str(s) for s in names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if confusion[i, j]:
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rows[i, j] > 0.5 else "black")  # fmt: skip
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
