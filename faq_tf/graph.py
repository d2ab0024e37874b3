"""Rewriting Keras models into the canonical form faq_tf quantizes.

`canonicalize` returns a new functional model (fresh layers, copied weights) that:

* is flat: a Keras application nested inside a head model is inlined;
* has no fused activations: ``Conv2D(activation="relu")`` becomes a linear Conv2D
  followed by ``Activation("relu")``, so each activation has its own quantizer;
* has ``scale=True`` on every BatchNormalization (gamma = 1 where it was off), so
  the BN multiplier can be quantized through gamma.

The rewrite replays the functional graph node by node, so it works for any
Sequential or functional model built from standard layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from faq_tf.compat import check_keras_model, keras, tf

__all__ = ["canonicalize", "rebuild", "clone_layer", "Graph", "model_graph", "iter_layers"]

L = keras.layers
_ACTIVATION_HOSTS = (L.Conv2D, L.DepthwiseConv2D, L.Dense, L.Conv1D, L.SeparableConv2D)

# make_layers(old_layer) -> (new_layers, after_build); new_layers are applied in order.
LayerFactory = Callable[[keras.layers.Layer], list]


def _as_functional(model: keras.Model) -> keras.Model:
    check_keras_model(model)
    if isinstance(model, keras.Sequential) or not getattr(model, "_is_graph_network", False):
        if isinstance(model, keras.Sequential) and model.inputs:
            return keras.Model(model.inputs, model.outputs, name=model.name)
        raise TypeError(
            f"Model '{model.name}' ({type(model).__name__}) is not a functional or built "
            "Sequential model. Subclassed models have no graph to quantize: rebuild it with "
            "the functional API, or build the Sequential model with an input shape."
        )
    return model


def iter_layers(model: keras.Model):
    """Yields every layer of `model`, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)
        else:
            yield layer


def _replay(model: keras.Model, tensors: dict, make_layers: LayerFactory, made: list) -> None:
    """Recomputes `model`'s graph on new tensors, inlining nested models."""
    pending = [(layer, node) for layer in model.layers for node in layer.inbound_nodes]
    while pending:
        progressed, rest = False, []
        for layer, node in pending:
            if isinstance(layer, L.InputLayer):
                continue
            inputs = tf.nest.flatten(node.keras_inputs)
            if not inputs or any(id(t) not in tensors for t in inputs):
                rest.append((layer, node))
                continue
            progressed = True

            def new(t):
                return tensors[id(t)] if id(t) in tensors else t

            args = tf.nest.map_structure(new, node.call_args)
            kwargs = tf.nest.map_structure(new, node.call_kwargs)
            if isinstance(layer, keras.Model):
                inner = _as_functional(layer)
                flat_in = tf.nest.flatten(args[0] if len(args) == 1 else args)
                inner_tensors = {id(t): v for t, v in zip(inner.inputs, flat_in)}
                _replay(inner, inner_tensors, make_layers, made)
                outputs = [inner_tensors[id(t)] for t in inner.outputs]
            else:
                kwargs.pop("training", None)
                outputs = args[0] if len(args) == 1 and not kwargs else None
                chain = make_layers(layer)
                for i, new_layer in enumerate(chain):
                    if i == 0:
                        outputs = new_layer(*args, **kwargs)
                    else:
                        outputs = new_layer(outputs)
                    made.append((layer, new_layer))
                outputs = tf.nest.flatten(outputs)
            for old, value in zip(tf.nest.flatten(node.outputs), outputs):
                tensors[id(old)] = value
        if not progressed:
            names = sorted({layer.name for layer, _ in rest})
            raise ValueError(
                f"Could not rebuild model '{model.name}': layers {names[:5]} have inputs that "
                "are not computed from the model inputs."
            )
        pending = rest


def rebuild(
    model: keras.Model,
    make_layers: LayerFactory,
    input_layers: Callable[[str], list] | None = None,
    name: str | None = None,
) -> tuple[keras.Model, list]:
    """Rebuilds `model` with new layers.

    Args:
      model: a functional or built Sequential tf_keras model.
      make_layers: called once per (non-input) layer node; returns the new layers that
        replace it, applied in order (an empty list drops the layer: identity).
      input_layers: optional; called with each input's name, returns layers applied to
        that input before the rest of the graph (e.g. an input quantizer).
      name: name of the new model.

    Returns:
      The new model and a list of (old_layer, new_layer) pairs, for copying weights.
    """
    model = _as_functional(model)
    new_inputs, tensors, made = [], {}, []
    for t in model.inputs:
        inp = keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name.split(":")[0].split("/")[0])
        new_inputs.append(inp)
        x = inp
        for layer in input_layers(inp.name) if input_layers else []:
            x = layer(x)
        tensors[id(t)] = x
    _replay(model, tensors, make_layers, made)
    outputs = [tensors[id(t)] for t in model.outputs]
    new = keras.Model(new_inputs, outputs if len(outputs) > 1 else outputs[0], name=name or model.name)
    return new, made


def clone_layer(layer, **changes) -> keras.layers.Layer:
    """Re-creates `layer` from its config (with `changes`) and copies its weights.

    A BatchNormalization cloned with ``scale=True`` from one without gets gamma = 1.
    """
    config = layer.get_config()
    config.update(changes)
    try:
        new = type(layer).from_config(config)
    except Exception as e:  # noqa: BLE001 - re-raised with the layer named
        raise ValueError(
            f"Could not re-create layer '{layer.name}' ({type(layer).__name__}) from its config: {e}"
        ) from e
    if layer.built and layer.weights:
        build_config = layer.get_build_config()
        if build_config:
            with tf.name_scope(new.name):
                new.build_from_config(build_config)
        values = layer.get_weights()
        if type(layer) is L.BatchNormalization and not layer.scale and new.scale:
            values = [np.ones_like(values[-1])] + values
        new.set_weights(values)
    return new


def canonicalize(model: keras.Model) -> keras.Model:
    """Returns a flat, activation-split copy of `model` with the same weights.

    Args:
      model: a functional or Sequential tf_keras model (may nest other models).

    Returns:
      A new functional model computing the same function.
    """
    used = {layer.name for layer in iter_layers(_as_functional(model))}

    def unique(base: str) -> str:
        name, i = base, 1
        while name in used:
            name, i = f"{base}_{i}", i + 1
        used.add(name)
        return name

    split: dict[int, list] = {}

    def make_layers(layer):
        if id(layer) in split:  # a shared layer: reuse its replacements
            return split[id(layer)]
        act = getattr(layer, "activation", None)
        if isinstance(layer, _ACTIVATION_HOSTS) and act is not None:
            act_name = keras.activations.serialize(act)
            if act_name != "linear":
                chain = [
                    clone_layer(layer, activation="linear"),
                    L.Activation(act, name=unique(f"{layer.name}_{act_name}")),
                ]
                split[id(layer)] = chain
                return chain
        if type(layer) is L.BatchNormalization and not layer.scale:
            chain = [clone_layer(layer, scale=True)]
        else:
            chain = [clone_layer(layer)]
        split[id(layer)] = chain
        return chain

    new, _ = rebuild(model, make_layers)
    return new


@dataclasses.dataclass
class Graph:
    """Producer/consumer relations between the layers of a flat functional model."""

    layers: dict
    producers: dict
    consumers: dict
    outputs: set


def model_graph(model: keras.Model) -> Graph:
    """Returns the layer graph of a flat functional `model` (names to names)."""
    owner = {}
    for layer in model.layers:
        for node in layer.inbound_nodes:
            for t in tf.nest.flatten(node.outputs):
                owner[id(t)] = layer.name
    producers = {layer.name: [] for layer in model.layers}
    consumers = {layer.name: [] for layer in model.layers}
    for layer in model.layers:
        for node in layer.inbound_nodes:
            for t in tf.nest.flatten(node.keras_inputs):
                src = owner.get(id(t))
                if src is not None and src not in producers[layer.name]:
                    producers[layer.name].append(src)
                    consumers[src].append(layer.name)
    outputs = {owner[id(t)] for t in model.outputs}
    return Graph({layer.name: layer for layer in model.layers}, producers, consumers, outputs)
