"""Folding a model's input scaling into its first layers, so the integer model takes pixels.

Keras's tutorials put the preprocessing inside the model:
``Sequential([Input(...), Rescaling(1/127.5, offset=-1), MobileNetV2(...), ...])``. An
integer runtime cannot apply that map as it stands: its scale and offset are not powers
of two, so the converter leaves it in float (DEQUANTIZE, MUL, ADD, QUANTIZE) and the model
is not fully integer.

`fold_input_scaling` removes the Rescaling and Normalization layers that the network input
goes through first and folds their per-channel affine map y = a * x + b into the linear
layers that consume it (Conv2D, DepthwiseConv2D, Dense):

  W' = W * a (per input channel),  bias' = bias + sum(W * b)

(into the following BatchNormalization's moving mean when the layer has no bias). The
quantized model then takes the pixels themselves: 8-bit unsigned with step 1, so every
uint8 pixel is stored exactly, the .tflite takes uint8 pixels (or int8 = pixel - 128),
and nothing is rounded on a grid that is not a power of two: the first layer's weights
are quantized as W * a, with their own power-of-two step, and the Keras model stays
bit-exact with the integer one.

What it costs: where the map has an offset (b != 0) and zero padding follows (a 'same'
conv, a ZeroPadding2D), the border is now padded with pixel 0 (y = b) instead of y = 0.
Everywhere else the folded float model computes the same function. `InputScaling.exact`
says which case a model is in; fine-tuning adapts the border rows either way.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from faq_tf import graph
from faq_tf.compat import keras, tf

__all__ = ["InputScaling", "fold_input_scaling", "folded_input_scaling"]

L = keras.layers
_AFFINE = (L.Rescaling, L.Normalization)
_SPATIAL = (L.ZeroPadding2D, L.Cropping2D)  # between the scaling and its consumers
_LINEAR = (L.Conv2D, L.DepthwiseConv2D, L.Dense)


@dataclasses.dataclass(frozen=True)
class InputScaling:
    """The input scaling folded into a model: y = x * scale + offset, per channel.

    Attributes:
      layers: the Rescaling / Normalization layers removed, in order.
      scale: a, one value per input channel.
      offset: b, one value per input channel.
      into: the layers it was folded into.
      exact: the folded float model computes the original function everywhere (False
        when an offset meets zero padding: the border pads with pixel 0).
    """

    layers: tuple[str, ...]
    scale: tuple[float, ...]
    offset: tuple[float, ...]
    into: tuple[str, ...]
    exact: bool

    def get_config(self) -> dict[str, Any]:
        """A JSON-able dict (stored in the input quantizer's config)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> InputScaling:
        """Inverse of `get_config`."""
        return cls(
            tuple(config["layers"]),
            tuple(float(v) for v in config["scale"]),
            tuple(float(v) for v in config["offset"]),
            tuple(config["into"]),
            bool(config["exact"]),
        )

    def describe(self) -> str:
        """One line: which layers were folded into which, and the map."""

        def short(values):
            return f"{values[0]:.6g}" if len(set(values)) == 1 else "[" + ", ".join(f"{v:.6g}" for v in values) + "]"

        border = "" if self.exact else "; the border is padded with pixel 0"
        return (
            f"input scaling {', '.join(self.layers)} (x * {short(self.scale)} + {short(self.offset)}) "
            f"folded into {', '.join(self.into)}{border}"
        )


def _affine_of(layer, channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(a, b) per channel of a Rescaling or Normalization, or None if it is not per-channel affine."""
    try:
        if isinstance(layer, L.Rescaling):
            a = np.broadcast_to(np.asarray(layer.scale, np.float64).reshape(-1), (channels,))
            b = np.broadcast_to(np.asarray(layer.offset, np.float64).reshape(-1), (channels,))
        else:
            axis = layer.axis if isinstance(layer.axis, (list, tuple)) else (layer.axis,)
            rank = len(layer.input_shape)
            if tuple(a % rank for a in axis) != (rank - 1,):
                return None
            mean = np.broadcast_to(np.asarray(layer.mean, np.float64).reshape(-1), (channels,))
            variance = np.broadcast_to(np.asarray(layer.variance, np.float64).reshape(-1), (channels,))
            sd = np.maximum(np.sqrt(variance), keras.backend.epsilon())
            a, b = (sd, mean) if getattr(layer, "invert", False) else (1.0 / sd, -mean / sd)
    except ValueError:  # a scale or mean that does not broadcast to the channels
        return None
    a, b = np.array(a), np.array(b)
    # The layer itself must compute that map (a subclass or an unusual config may not).
    shape = (2, *layer.input_shape[1:])
    x = np.random.RandomState(0).uniform(0.0, 255.0, shape).astype(np.float32)
    y = np.asarray(layer(tf.constant(x)), np.float64)
    expected = x * a + b
    if y.shape != expected.shape or not np.allclose(y, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max()):
        return None
    return a, b


def _plan(model: keras.Model):
    """Finds the input scaling chain and its linear consumers, or returns None."""
    if len(model.inputs) != 1 or len(model.inputs[0].shape) < 2:
        return None
    g = graph.model_graph(model)
    inputs = [n for n, layer in g.layers.items() if isinstance(layer, L.InputLayer)]
    if len(inputs) != 1:
        return None
    channels = int(model.inputs[0].shape[-1])
    a, b = np.ones(channels), np.zeros(channels)
    chain, name = [], inputs[0]
    while len(g.consumers[name]) == 1 and type(g.layers[g.consumers[name][0]]) in _AFFINE:
        name = g.consumers[name][0]
        layer = g.layers[name]
        if len(layer.inbound_nodes) != 1:
            return None
        affine = _affine_of(layer, channels)
        if affine is None:
            break
        chain.append(name)
        a, b = affine[0] * a, affine[0] * b + affine[1]
    if not chain:
        return None
    padded, consumers, frontier = False, [], list(g.consumers[chain[-1]])
    while frontier:
        name = frontier.pop()
        layer = g.layers[name]
        if len(layer.inbound_nodes) != 1:
            return None
        if type(layer) in _SPATIAL:
            padded |= isinstance(layer, L.ZeroPadding2D)
            frontier.extend(g.consumers[name])
        elif type(layer) in _LINEAR and (not isinstance(layer, L.Conv2D) or layer.groups == 1):
            padded |= getattr(layer, "padding", "valid") == "same"
            consumers.append(name)
        else:
            return None  # something other than a linear layer sees the scaled values
    if not consumers:
        return None
    exact = not (padded and np.any(b != 0.0))
    return chain, consumers, a, b, exact, g


def _last_axis(bn) -> bool:
    """True if a BatchNormalization normalizes the last axis only."""
    axis = bn.axis if isinstance(bn.axis, (list, tuple)) else [bn.axis]
    rank = len(bn.input_shape)
    return [x % rank for x in axis] == [rank - 1]


def _folded_weights(layer, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(new kernel, added offset per output channel) of a linear layer after the map x -> a x + b."""
    kernel = layer.get_weights()[0].astype(np.float64)
    if isinstance(layer, L.Dense):
        return kernel * a[:, None], b @ kernel
    if isinstance(layer, L.DepthwiseConv2D):  # (h, w, C, M): output channel c * M + m
        return kernel * a[None, None, :, None], np.einsum("hwcm,c->cm", kernel, b).reshape(-1)
    return kernel * a[None, None, :, None], np.einsum("hwco,c->o", kernel, b)


def fold_input_scaling(model: keras.Model) -> tuple[keras.Model, InputScaling | None]:
    """Folds the Rescaling / Normalization layers at a model's input into its first layers.

    Args:
      model: a flat functional tf_keras model (`faq_tf.graph.canonicalize`'s output).

    Returns:
      (the new model, the `InputScaling` folded), or (`model`, None) when the model has
      no input scaling, or one that cannot be folded: its values reach something other
      than a Conv2D, DepthwiseConv2D or Dense (through padding and cropping), the map is
      not per-channel affine, or the model has several inputs. Such a model keeps its
      scaling layers, which stay float in the integer export.
    """
    plan = _plan(model)
    if plan is None:
        return model, None
    chain, consumers, a, b, exact, g = plan
    offsets = {}  # consumer -> offset it cannot take as a bias (a following BN takes it)
    bn_shift = {}  # BatchNormalization -> offset subtracted from its moving mean
    for name in consumers:
        layer = g.layers[name]
        _, offset = _folded_weights(layer, a, b)
        follower = g.consumers[name]
        bn = g.layers[follower[0]] if len(follower) == 1 else None
        if layer.use_bias or not np.any(offset):
            continue
        if type(bn) is L.BatchNormalization and _last_axis(bn) and len(bn.inbound_nodes) == 1:
            bn_shift[bn.name] = offset
        else:
            offsets[name] = offset

    def make_layers(layer):
        if layer.name in chain:
            return []  # the input goes straight on, as pixels
        if layer.name in consumers:
            kernel, offset = _folded_weights(layer, a, b)
            if layer.name in offsets:  # no bias of its own and no BN after it: give it one
                config = {**layer.get_config(), "use_bias": True}
                new = type(layer).from_config(config)
                with tf.name_scope(new.name):
                    new.build(layer.input_shape)
                new.set_weights([kernel.astype(np.float32), offset.astype(np.float32)])
                return [new]
            new = graph.clone_layer(layer)
            weights = new.get_weights()
            weights[0] = kernel.astype(np.float32)
            if layer.use_bias:
                weights[1] = (weights[1].astype(np.float64) + offset).astype(np.float32)
            new.set_weights(weights)
            return [new]
        new = graph.clone_layer(layer)
        if layer.name in bn_shift:
            new.moving_mean.assign((new.moving_mean.numpy() - bn_shift[layer.name]).astype(np.float32))
        return [new]

    folded, _ = graph.rebuild(model, make_layers, name=model.name)
    return folded, InputScaling(
        tuple(chain),
        tuple(float(v) for v in a),
        tuple(float(v) for v in b),
        tuple(consumers),
        bool(exact),
    )


def folded_input_scaling(model: keras.Model) -> InputScaling | None:
    """The `InputScaling` that `faq_tf.quantize_model` folded into `model`, or None.

    Args:
      model: a faq_tf QAT model (or any model: None when it has no folded scaling).
    """
    for layer in model.layers:
        scaling = getattr(layer, "input_scaling", None)
        if isinstance(scaling, InputScaling):
            return scaling
    return None
