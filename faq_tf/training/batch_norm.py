"""Exact BatchNormalization statistics ("precise BN") and the check that says when they matter.

BatchNormalization keeps exponential moving averages of its batch statistics (Keras's
momentum is 0.99). After a short run they still hold a large share of their initial
values (0.99^132 = 27% after 132 updates), so a model that is accurate in training mode
(batch statistics) can be at chance in inference mode. `recompute_statistics` replaces
every BN's moving mean and variance with the plain average of its batch mean and batch
variance over N training batches, run in training mode (Wu & Johnson, "Rethinking Batch
in BatchNorm", 2021): the k-th batch enters with weight 1/k, so after N batches each
batch has weight 1/N and nothing of the old values is left.

Example:

  recompute_statistics(model, calibration_batches, batches=100)
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from faq_tf.compat import keras, tf
from faq_tf.graph import iter_layers

__all__ = ["auto_batches", "batch_norm_layers", "inference_gap", "recompute_statistics", "stale_fraction"]


def batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization of `model`, inside nested models and quantize wrappers."""
    found = []
    for layer in iter_layers(model):
        inner = getattr(layer, "layer", layer)  # tfmot's QuantizeWrapper holds the BN
        if isinstance(inner, keras.layers.BatchNormalization):
            found.append(inner)
    return found


def stale_fraction(model: keras.Model, updates: int) -> float:
    """The share of the initial moving statistics still in the model after `updates` training batches.

    The largest over its BatchNormalizations, momentum^updates (0 for a model without BN).
    """
    momenta = [float(layer.momentum) for layer in batch_norm_layers(model)]
    return max((m**updates for m in momenta), default=0.0)


def recompute_statistics(model: keras.Model, images: Iterable, batches: int) -> int:
    """Sets every BN's moving mean and variance to the average over `batches` batches.

    Each batch runs through the whole model in training mode (every BN normalizes with
    its batch statistics, as in training), eagerly, so that each BN's momentum can be set
    to 1 - 1/k for the k-th batch. The weights and everything but the BN statistics stay
    as they were; the momenta are restored.

    Args:
      model: the model (fp32 or quantized by faq_tf).
      images: batches of model inputs (a tf.data.Dataset of images, or arrays).
      batches: N, how many batches to average (at most what `images` yields).

    Returns:
      The number of batches used (0 if the model has no BatchNormalization).

    Raises:
      ValueError: if `batches` < 1 or `images` yields nothing.
    """
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    used = 0
    try:
        for x in images:
            if used == batches:
                break
            used += 1
            for layer in layers:
                layer.momentum = 1.0 - 1.0 / used  # the k-th batch enters with weight 1/k
            model(x, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if used == 0:
        raise ValueError("no batches to recompute the BatchNormalization statistics from")
    return used


def inference_gap(model: keras.Model, images: tf.Tensor, labels: tf.Tensor) -> tuple[float, float]:
    """Top-1 (%) on one batch in training mode and in inference mode, BN statistics untouched.

    A wide gap means the BN moving statistics do not describe the data (see the module
    docstring). The training-mode pass's updates of the moving statistics are undone.
    """
    layers = batch_norm_layers(model)
    saved = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers]
    try:
        train_logits = model(images, training=True)
    finally:
        for layer, (mean, variance) in zip(layers, saved):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
    test_logits = model(images, training=False)
    labels = np.asarray(labels)

    def top1(logits) -> float:
        return float(np.mean(np.argmax(np.asarray(logits), axis=-1) == labels) * 100.0)

    return top1(train_logits), top1(test_logits)


def auto_batches(model: keras.Model, updates: int, batches: int = 100, threshold: float = 1e-3) -> int:
    """N for precise BN "auto": `batches` if more than `threshold` of the initial statistics is left, else 0."""
    return batches if stale_fraction(model, updates) > threshold else 0
