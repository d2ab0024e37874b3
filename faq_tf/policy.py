"""The precision policy: which tensor of which layer gets how many bits (section 3.1).

This module only decides; `faq_tf.quantize` applies the decisions. A policy is a frozen
`Precision` (parsed from strings such as ``"w8a8"``, ``"w4a4"`` or ``"w4a8"``) plus
per-layer overrides, resolved against a canonical model into one `LayerPlan` per layer
(`plan_model`). After calibration, `share_runtime_scales` gives the tensors that the
TFLite converter stores on one scale (pooling outputs, concatenations) that scale.

Low-precision rules (any policy below 8 bits), from the paper:

* the first and the last weight layers keep 8-bit weights;
* ReLU outputs get the activation bits, except those feeding the classifier with no
  weight layer in between (the last ReLU, its pooling): 8 bits;
* the logits (the last weight layers' outputs and what follows them) stay float;
* the network input is quantized to 8 bits.

Tensors the paper leaves unquantized but an integer runtime must store (residual
branches before their Add, linear bottlenecks, concatenations, global means) get
``other_activation_bits`` (8 by default; 4-bit activations live in int8 anyway). A
pooling layer's output (AveragePooling2D, MaxPooling2D) keeps its input's bits and scale.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from typing import Any

from absl import logging

from faq_tf import registry
from faq_tf.compat import keras
from faq_tf.graph import Graph, model_graph
from faq_tf.quantizers import MAX_BITS, MIN_BITS, Rounding, check_bits
from faq_tf.registry import ActivationKind, FuseKind, OutputKind, WeightRole

__all__ = [
    "Precision",
    "Role",
    "Override",
    "LayerPlan",
    "parse_precision",
    "parse_override",
    "plan_model",
    "share_runtime_scales",
    "shared_scale_layers",
    "PRESETS",
]

_SPEC = re.compile(r"^(?:w(\d+))?(?:a(\d+))?$")


@dataclasses.dataclass(frozen=True)
class Precision:
    """A network-wide precision policy.

    Attributes:
      weight_bits: bits of weight tensors inside the network.
      activation_bits: bits of ReLU outputs inside the network.
      other_activation_bits: bits of other quantized tensors (see module docstring).
      input_bits: bits of the network input.
      edge_weight_bits: bits of the first and last weight layers.
      classifier_input_bits: bits of the activations feeding the last weight layer.
      quantize_logits: whether the last weight layers' outputs are quantized.
    """

    weight_bits: int = 8
    activation_bits: int = 8
    other_activation_bits: int | None = None
    input_bits: int = 8
    edge_weight_bits: int | None = None
    classifier_input_bits: int | None = None
    quantize_logits: bool | None = None

    def __post_init__(self):
        check_bits(self.weight_bits, "weight_bits")
        check_bits(self.activation_bits, "activation_bits")
        check_bits(self.input_bits, "input_bits")
        low = self.weight_bits < 8 or self.activation_bits < 8
        defaults = {
            "other_activation_bits": max(8, self.activation_bits),
            "edge_weight_bits": 8 if low else self.weight_bits,
            "classifier_input_bits": 8 if low else self.activation_bits,
            "quantize_logits": not low,
        }
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        for name in ("other_activation_bits", "edge_weight_bits", "classifier_input_bits"):
            check_bits(getattr(self, name), name)

    @property
    def name(self) -> str:
        return f"w{self.weight_bits}a{self.activation_bits}"


PRESETS: dict[str, Precision | None] = {
    "fp32": None,
    "w8a8": Precision(8, 8),
    "w4a4": Precision(4, 4),
}


def parse_precision(precision: str | Precision | None) -> Precision | None:
    """Parses "fp32", "w8a8", "w4a4" or any "w<bits>a<bits>" into a `Precision`.

    Args:
      precision: the string (case and surrounding spaces ignored), a `Precision`
        (returned as is) or None (fp32).

    Returns:
      The policy, or None for "fp32" (no quantization).

    Raises:
      ValueError: for an unknown string or bits outside [2, 16].
    """
    if precision is None or isinstance(precision, Precision):
        return precision
    text = str(precision).strip().lower()
    if text in PRESETS:
        return PRESETS[text]
    match = _SPEC.match(text)
    if not text or not match or None in match.groups():
        raise ValueError(
            f"Unknown precision {precision!r}: use 'fp32', 'w8a8', 'w4a4' or "
            f"'w<bits>a<bits>' with bits in [{MIN_BITS}, {MAX_BITS}], e.g. 'w4a8'."
        )
    return Precision(int(match.group(1)), int(match.group(2)))


@dataclasses.dataclass(frozen=True)
class Override:
    """A per-layer override: None fields keep the policy's choice."""

    weight_bits: int | None = None
    activation_bits: int | None = None
    skip: bool = False


def parse_override(spec: str | Mapping[str, Any] | Override) -> Override:
    """Parses "skip", "w8", "a4", "w4a8" or {"weight_bits": 8, "activation_bits": 4}.

    Args:
      spec: the override: "skip" (also "float", "fp32"), "w<bits>", "a<bits>",
        "w<bits>a<bits>", a dict with keys weight_bits/activation_bits/skip, or an
        `Override` (returned as is).

    Returns:
      The `Override`; fields it does not set are None.

    Raises:
      ValueError: for an unknown string or key, or bits outside [2, 16].
    """
    if isinstance(spec, Override):
        return spec
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"weight_bits", "activation_bits", "skip"}
        if unknown:
            raise ValueError(f"Unknown override keys {sorted(unknown)} in {dict(spec)!r}")
        wb, ab = spec.get("weight_bits"), spec.get("activation_bits")
        return Override(
            None if wb is None else check_bits(wb, "weight_bits"),
            None if ab is None else check_bits(ab, "activation_bits"),
            bool(spec.get("skip", False)),
        )
    text = str(spec).strip().lower()
    if text in ("skip", "float", "fp32"):
        return Override(skip=True)
    match = _SPEC.match(text)
    if not text or not match:
        raise ValueError(
            f"Unknown layer override {spec!r}: use 'skip', 'w<bits>', 'a<bits>', "
            "'w<bits>a<bits>' or a dict with weight_bits/activation_bits."
        )
    wb, ab = match.groups()
    return Override(
        None if wb is None else check_bits(int(wb), "weight_bits"),
        None if ab is None else check_bits(int(ab), "activation_bits"),
    )


class Role(str, enum.Enum):
    """Why a layer's output is, or is not, quantized (`LayerPlan.role`)."""

    INPUT = "input"  # the network input: input_bits
    RELU = "relu"  # a ReLU output inside the network: activation_bits, unsigned
    OTHER = "other"  # another stored tensor (residual branch, concat, pooled mean): other_activation_bits
    FIXED = "fixed"  # softmax/sigmoid/tanh: 8 bits on the range the int8 kernels fix
    CLASSIFIER_INPUT = "classifier_input"  # feeds the last weight layer: classifier_input_bits
    LOGITS = "logits"  # the last weight layers' outputs and what follows: float unless quantize_logits
    FUSED = "fused"  # the integer runtime fuses it into its sole consumer: float
    PASSTHROUGH = "passthrough"  # stays on its input's grid: not quantized again
    SKIPPED = "skipped"  # left float by a "skip" override


@dataclasses.dataclass
class LayerPlan:
    """What one layer gets.

    Attributes:
      name: layer name in the canonical model.
      class_name: layer class.
      weight_bits: bits of its kernel (8 for BN constants); None: float weights.
      activation_bits: bits of its output; None: output not quantized.
      role: why the output is (not) quantized, a `Role`.
      signed: whether the output range is signed (set by calibration).
      exponent: the output's l (set by calibration); None: control value.
      rounding: the tie rule of the integer op that computes the output: that of the
        first layer up the chain of layers fused into it (conv -> BN -> ReLU: the conv's).
    """

    name: str
    class_name: str
    weight_bits: int | None = None
    activation_bits: int | None = None
    role: Role = Role.PASSTHROUGH
    signed: bool = False
    exponent: int | None = None
    rounding: Rounding = Rounding.HALF_UP


def _is_relu(layer) -> bool:
    info = registry.get_layer_info(layer)
    return info.output is OutputKind.ACTIVATION and registry.activation_kind(layer) is ActivationKind.RELU


def _fused(layer, info, graph: Graph) -> bool:
    consumers = graph.consumers[layer.name]
    if len(consumers) != 1 or layer.name in graph.outputs:
        return False
    nxt = graph.layers[consumers[0]]
    if FuseKind.BATCH_NORM in info.fuses_into and type(nxt) is keras.layers.BatchNormalization:
        return True
    return FuseKind.RELU in info.fuses_into and registry.supports(nxt) and _is_relu(nxt)


def _match_overrides(name: str, overrides) -> Override | None:
    result = None
    for pattern, ov in overrides:
        if pattern.fullmatch(name):
            if result is None:
                result = ov
            else:  # later overrides refine earlier ones
                result = Override(
                    ov.weight_bits if ov.weight_bits is not None else result.weight_bits,
                    ov.activation_bits if ov.activation_bits is not None else result.activation_bits,
                    result.skip or ov.skip,
                )
    return result


def plan_model(
    model: keras.Model,
    precision: Precision,
    layer_overrides: Mapping[str, Any] | None = None,
) -> dict[str, LayerPlan]:
    """Resolves `precision` and overrides against a canonical model.

    Args:
      model: a canonical model (see `faq_tf.graph.canonicalize`).
      precision: the network-wide policy.
      layer_overrides: maps a layer name or regular expression (full match) to an
        override spec (see `parse_override`).

    Returns:
      One `LayerPlan` per layer, in topological order.

    Raises:
      UnsupportedLayerError: for a layer that is neither supported nor skipped.
      ValueError: for a malformed override, or one that matches no layer.
    """
    overrides = [_compile_override(pattern, spec) for pattern, spec in (layer_overrides or {}).items()]
    graph = model_graph(model)
    names = list(graph.layers)
    for pattern, _ in overrides:
        if not any(pattern.fullmatch(n) for n in names):
            raise ValueError(
                f"layer_overrides key {pattern.pattern!r} matches no layer of '{model.name}'. "
                f"Layer names look like: {names[1:6]}"
            )
    infos = _layer_infos(graph, overrides)
    first, tail, feeds_classifier = _positions(graph, infos)

    plans: dict[str, LayerPlan] = {}
    for name, layer in graph.layers.items():
        plan = LayerPlan(name, type(layer).__name__)
        plans[name] = plan
        if name not in infos:
            plan.role = Role.SKIPPED
            continue
        info = infos[name]
        roles = {r for _, r in info.weights}
        if WeightRole.WEIGHT in roles:
            edge = name in first or name in tail
            plan.weight_bits = precision.edge_weight_bits if edge else precision.weight_bits
        elif WeightRole.BN_MULTIPLIER in roles:
            plan.weight_bits = registry.BN_BITS
        _assign_role(plan, layer, info, graph, precision, name in tail, feeds_classifier[name])
        ov = _match_overrides(name, overrides)
        if ov is not None:
            _apply_override(plan, ov, has_kernel=WeightRole.WEIGHT in roles)
    for name, plan in plans.items():
        if plan.activation_bits is not None and name in infos:
            plan.rounding = _output_rounding(name, graph, plans)
    return plans


def _compile_override(pattern: str, spec: Any) -> tuple[re.Pattern, Override]:
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"layer_overrides key {pattern!r} is not a valid regex: {e}") from e
    return compiled, parse_override(spec)


def _layer_infos(graph: Graph, overrides) -> dict[str, registry.LayerInfo]:
    """The table rows of the layers no override skips; raises naming the first unsupported one."""
    infos, unsupported = {}, []
    for name, layer in graph.layers.items():
        ov = _match_overrides(name, overrides)
        if ov is not None and ov.skip:
            continue
        try:
            infos[name] = registry.get_layer_info(layer)
        except registry.UnsupportedLayerError as e:
            unsupported.append(e)
    if unsupported:
        extra = f" ({len(unsupported) - 1} more unsupported layers follow it)" if len(unsupported) > 1 else ""
        raise registry.UnsupportedLayerError(f"{unsupported[0]}{extra}")
    return infos


def _positions(graph: Graph, infos: dict[str, registry.LayerInfo]) -> tuple[set[str], set[str], dict[str, bool]]:
    """Where each layer sits relative to the weight layers (kernels).

    Returns:
      (first, tail, feeds_classifier): the weight layers with no weight layer above them;
      the last weight layers and every layer after them (the logits); and, per layer,
      whether its output feeds the classifier.
    """
    names = list(graph.layers)
    kernels = {n for n, i in infos.items() if any(r is WeightRole.WEIGHT for _, r in i.weights)}
    has_kernel_above = {}
    for n in names:  # topological order
        has_kernel_above[n] = any(p in kernels or has_kernel_above[p] for p in graph.producers[n])
    has_kernel_below = {}
    for n in reversed(names):
        has_kernel_below[n] = any(c in kernels or has_kernel_below[c] for c in graph.consumers[n])
    first = {n for n in kernels if not has_kernel_above[n]}
    tail = {n for n in names if not has_kernel_below[n] and (n in kernels or has_kernel_above[n])}
    # A tensor feeds the classifier when every path from it reaches a last weight
    # layer without another weight layer in between: the last ReLU, its pooling. An
    # earlier block output that also feeds a shortcut into the last Add keeps its bits.
    feeds_classifier = {}
    for n in reversed(names):
        cons = graph.consumers[n]
        feeds_classifier[n] = (
            n not in kernels
            and bool(cons)
            and all((c in kernels and c in tail) or feeds_classifier.get(c, False) for c in cons)
        )
    return first, tail, feeds_classifier


def _assign_role(
    plan: LayerPlan,
    layer,
    info: registry.LayerInfo,
    graph: Graph,
    precision: Precision,
    in_tail: bool,
    feeds_classifier: bool,
) -> None:
    """Sets the plan's role and output bits (the rules of the module docstring)."""
    kind = registry.activation_kind(layer) if info.output is OutputKind.ACTIVATION else None
    if isinstance(layer, keras.layers.InputLayer):
        plan.role, plan.activation_bits = Role.INPUT, precision.input_bits
    elif info.output is OutputKind.PASSTHROUGH or kind is ActivationKind.IDENTITY:
        plan.role = Role.PASSTHROUGH
    elif info.output is OutputKind.COMPUTED and _fused(layer, info, graph):
        plan.role = Role.FUSED
    elif in_tail:
        plan.role = Role.LOGITS
        if precision.quantize_logits:
            plan.activation_bits = 8 if kind is ActivationKind.FIXED else precision.other_activation_bits
    elif kind is ActivationKind.FIXED:
        plan.role, plan.activation_bits = Role.FIXED, 8
    elif feeds_classifier:
        plan.role, plan.activation_bits = Role.CLASSIFIER_INPUT, precision.classifier_input_bits
    elif info.output is OutputKind.ACTIVATION:
        plan.role, plan.activation_bits = Role.RELU, precision.activation_bits
    else:
        plan.role, plan.activation_bits = Role.OTHER, precision.other_activation_bits


def _apply_override(plan: LayerPlan, ov: Override, has_kernel: bool) -> None:
    """Applies a layer override to a plan whose role is set; warns where it cannot apply."""
    if ov.weight_bits is not None:
        if has_kernel:
            plan.weight_bits = ov.weight_bits
        else:
            logging.warning("Override w%d ignored for '%s': it has no kernel.", ov.weight_bits, plan.name)
    if ov.activation_bits is not None:
        if plan.role in (Role.FUSED, Role.PASSTHROUGH):
            logging.warning(
                "Override a%d ignored for '%s': its output is %s (not a stored tensor).",
                ov.activation_bits,
                plan.name,
                plan.role.value,
            )
        elif plan.role is Role.FIXED:
            logging.warning("Override ignored for '%s': its output range is fixed.", plan.name)
        else:
            plan.activation_bits = ov.activation_bits


def _output_rounding(name: str, graph: Graph, plans: dict[str, LayerPlan]) -> Rounding:
    """The tie rule of the integer op computing `name`'s output (walks up fused layers)."""
    while True:
        producers = graph.producers[name]
        if len(producers) != 1 or plans[producers[0]].role is not Role.FUSED:
            break
        name = producers[0]
    layer = graph.layers[name]
    return registry.get_layer_info(layer).rounding if registry.supports(layer) else Rounding.HALF_UP


def share_runtime_scales(plans: dict[str, LayerPlan], graph: Graph) -> None:
    """Gives tensors the scale the TFLite converter will give them, so Keras rounds the same.

    * AveragePooling2D, MaxPooling2D: the integer op keeps its input's scale; the output
      takes the input's bits, exponent and sign. (MaxPooling2D has its own output
      quantizer, a no-op on values already on the grid, because the converter turns a
      max-pooled tensor read by both convs and an average pool, as in InceptionV3's
      mixed0, into float without one.)
    * Concatenate: the converter gives a joined tensor the concat's scale (rounding its
      accumulator once, straight to that grid) unless the op producing it fixes its scale
      (a pooling op: a QUANTIZE op then re-rounds it, as the Keras concat's quantizer
      does). The concat and the joined tensors get one exponent (the coarsest, so every
      range is kept) and one sign (with mixed signs the converter picks a range that is
      not a power of two).

    `faq_tf.quantize_model` calls it after calibration, so that the Keras model rounds
    each of these tensors on the grid the integer model stores it on.

    Args:
      plans: the calibrated plans from `plan_model` (`signed` and `exponent` set). The
        plans of pooling and concatenation layers, and of the tensors a concatenation
        joins, are changed in place.
      graph: the layer graph of the canonical model the plans were made for.
    """
    # Until every rule holds at once (InceptionV3: pools of concats, nested concats). It ends:
    # exponents only grow and signs only turn signed, pools copying their (growing) sources.
    changed = True
    while changed:
        changed = False
        for group, shared, _ in _scale_groups(plans, graph):
            for p in group if shared is not None else []:
                bits = shared[0] if shared[0] is not None else p.activation_bits
                if (p.activation_bits, p.exponent, p.signed) != (bits, shared[1], shared[2]):
                    p.activation_bits, p.exponent, p.signed = bits, shared[1], shared[2]
                    changed = True


def shared_scale_layers(plans: dict[str, LayerPlan], graph: Graph) -> set[str]:
    """The layers whose output exponent `share_runtime_scales` ties to another tensor's.

    A pooling layer and the tensor it pools, a concatenation and the tensors it joins: a
    search that moves one exponent at a time leaves these alone
    (`faq_tf.calibration.output_exponents`).

    Args:
      plans: the plans from `plan_model`.
      graph: the layer graph of the canonical model the plans were made for.
    """
    tied = set()
    for group, _, source in _scale_groups(plans, graph):
        tied.update(p.name for p in group + ([source] if source is not None else []))
    return tied


def _scale_groups(plans: dict[str, LayerPlan], graph: Graph):
    """Yields (plans that take one scale, the (bits or None, exponent, signed) they take or None, its source plan).

    A pool takes its source's scale; a concat and the tensors it joins take the coarsest
    of theirs (no source plan).
    """
    for name, plan in plans.items():
        kind = type(graph.layers[name])
        if plan.activation_bits is None:
            continue
        if kind in (keras.layers.AveragePooling2D, keras.layers.MaxPooling2D):
            source = _stored_input(plans, graph, graph.producers[name][0])
            shared = None if source is None else (source.activation_bits, source.exponent, source.signed)
            yield [plan], shared, source
        elif kind is keras.layers.Concatenate:
            joined = [_stored_input(plans, graph, n) for n in graph.producers[name]]
            fixed = ("AveragePooling2D", "MaxPooling2D")  # keep their input's scale: requantized
            group = [plan] + [p for p in joined if p is not None and p.class_name not in fixed]
            exponents = [p.exponent for p in group if p.exponent is not None]
            signed = plan.signed or any(p.signed for p in joined if p is not None)
            yield group, None if not exponents else (None, max(exponents), signed), None


def _stored_input(plans: dict[str, LayerPlan], graph: Graph, name: str) -> LayerPlan | None:
    """The plan of the quantized tensor a layer input comes from (through pass-through layers)."""
    while plans[name].activation_bits is None:
        producers = graph.producers[name]
        if plans[name].role not in (Role.PASSTHROUGH, Role.INPUT) or len(producers) != 1:
            return None
        name = producers[0]
    return plans[name]
