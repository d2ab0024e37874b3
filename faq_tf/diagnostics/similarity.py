"""Weight similarity between two networks (the paper's section 4.8, Figure 2).

The similarity of two weight tensors is the mean, over neurons (output channels), of the
cosine similarity between the two networks' weight vectors of that neuron. The network
similarity is the mean over every neuron of every weight layer (conv, depthwise, dense).

Example:

  per_layer, mean = model_similarity("baseline.h5", "runs/w4a4/model.h5")   # mean in [-1, 1]
"""

from __future__ import annotations

import os

import numpy as np

from faq_tf.compat import keras, tfmot

__all__ = ["neuron_cosine", "kernels", "model_similarity"]

_KERNEL_LAYERS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def neuron_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each neuron's weights in two kernels of the same shape.

    A neuron is one slice along the last (output) axis of a conv or dense kernel; `kernels()`
    reshapes depthwise kernels so that each (channel, multiplier) pair is one.

    Args:
      a, b: kernels of equal shape.

    Returns:
      One value per neuron, in [-1, 1]; 0 where either vector is all zeros.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"kernel shapes differ: {a.shape} vs {b.shape}")
    neurons = a.shape[-1]
    a2, b2 = a.reshape(-1, neurons), b.reshape(-1, neurons)
    dot = np.sum(a2 * b2, axis=0)
    norm = np.linalg.norm(a2, axis=0) * np.linalg.norm(b2, axis=0)
    return np.where(norm > 0, dot / np.where(norm > 0, norm, 1.0), 0.0)


def _depthwise_to_neurons(k: np.ndarray) -> np.ndarray:
    kh, kw, c, m = k.shape
    return k.reshape(kh * kw, c * m)


def kernels(model: keras.Model | str | os.PathLike) -> dict[str, np.ndarray]:
    """The float kernels of a model's conv, depthwise and dense layers, by layer name.

    QAT models built by faq_tf (or tfmot) give their float weights under the wrapped
    layer's name, so a QAT model and its fp32 starting point line up.
    """
    if not isinstance(model, keras.Model):
        from faq_tf.saving import load_model

        model = load_model(model)
    out = {}
    for layer in model.layers:
        inner = layer.layer if isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2) else layer
        if not isinstance(inner, _KERNEL_LAYERS):
            continue
        attr = "depthwise_kernel" if isinstance(inner, keras.layers.DepthwiseConv2D) else "kernel"
        kernel = next(v for v in layer.weights if v.name.split("/")[-1].split(":")[0] == attr)
        value = kernel.numpy()
        out[inner.name] = _depthwise_to_neurons(value) if attr == "depthwise_kernel" else value
    return out


def model_similarity(a, b) -> tuple[dict[str, float], float]:
    """Per-layer and network weight similarity of two models with the same layers.

    Args:
      a, b: models, or paths of models saved by faq_tf / Keras (.h5 or SavedModel).

    Returns:
      ({layer: mean neuron cosine}, mean over all neurons of all layers).

    Raises:
      ValueError: if the models share no weight layer or a shared layer's shape differs.
    """
    ka, kb = kernels(a), kernels(b)
    shared = [name for name in ka if name in kb]
    if not shared:
        raise ValueError(
            "The two models have no conv/dense layer names in common; compare a model with its own "
            "fine-tuned or retrained version."
        )
    per_layer, everything = {}, []
    for name in shared:
        if ka[name].shape != kb[name].shape:
            raise ValueError(f"layer {name}: kernel shapes differ ({ka[name].shape} vs {kb[name].shape})")
        cos = neuron_cosine(ka[name], kb[name])
        per_layer[name] = float(np.mean(cos))
        everything.append(cos)
    return per_layer, float(np.mean(np.concatenate(everything)))
