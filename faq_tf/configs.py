"""The tfmot `QuantizeConfig` used for every wrapped layer.

One config class is enough because faq_tf splits fused activations into their own
layers before quantizing (see `faq_tf.graph`): a layer then has some weights to
quantize, named by attribute, and at most one output to quantize.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faq_tf.compat import deserialize, keras, register, tfmot

__all__ = ["FaqQuantizeConfig"]

_Quantizer = tfmot.quantization.keras.quantizers.Quantizer


@register
class FaqQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """Quantizes named weights of a layer and, optionally, its output.

    Args:
      weight_quantizers: maps a layer attribute (``"kernel"``, ``"bias"``,
        ``"depthwise_kernel"``, ``"gamma"``, ...) to the quantizer for it. Attributes
        that are None on the layer (``use_bias=False``) are skipped.
      output_quantizer: quantizer for the layer's output, or None when the output
        stays float because the integer runtime fuses it into the next op.

    Example:
      >>> from faq_tf.quantizers import WeightQuantizer, ActivationQuantizer
      >>> cfg = FaqQuantizeConfig({"kernel": WeightQuantizer(4)}, ActivationQuantizer(4))
      >>> FaqQuantizeConfig.from_config(cfg.get_config()) == cfg
      True
    """

    def __init__(
        self,
        weight_quantizers: Mapping[str, _Quantizer] | None = None,
        output_quantizer: _Quantizer | None = None,
    ):
        weight_quantizers = dict(weight_quantizers or {})
        for attr, q in list(weight_quantizers.items()) + [("output", output_quantizer)]:
            if isinstance(q, dict):  # nested config, from `from_config`
                q = deserialize(q)
                if attr == "output":
                    output_quantizer = q
                else:
                    weight_quantizers[attr] = q
            if q is not None and not isinstance(q, _Quantizer):
                raise TypeError(f"quantizer for '{attr}' must be a tfmot Quantizer, got {q!r}")
        self.weight_quantizers = weight_quantizers
        self.output_quantizer = output_quantizer

    def _present(self, layer) -> list[str]:
        return [a for a in self.weight_quantizers if getattr(layer, a, None) is not None]

    def get_weights_and_quantizers(self, layer):
        return [(getattr(layer, a), self.weight_quantizers[a]) for a in self._present(layer)]

    def set_quantize_weights(self, layer, quantize_weights):
        attrs = self._present(layer)
        if len(attrs) != len(quantize_weights):
            raise ValueError(f"{layer.name}: expected {len(attrs)} quantized weights, got {len(quantize_weights)}")
        for attr, value in zip(attrs, quantize_weights):
            setattr(layer, attr, value)

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [self.output_quantizer] if self.output_quantizer is not None else []

    def get_config(self) -> dict[str, Any]:
        ser = keras.utils.serialize_keras_object
        return {
            "weight_quantizers": {a: ser(q) for a, q in self.weight_quantizers.items()},
            "output_quantizer": ser(self.output_quantizer) if self.output_quantizer else None,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FaqQuantizeConfig:
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and self.weight_quantizers == other.weight_quantizers
            and self.output_quantizer == other.output_quantizer
        )

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __repr__(self) -> str:
        return (
            f"FaqQuantizeConfig(weight_quantizers={self.weight_quantizers!r}, "
            f"output_quantizer={self.output_quantizer!r})"
        )
