"""`QuantizeInput`: the layer that quantizes a network input.

tfmot's own input layer is not part of its public API, so faq_tf has this small one.
"""

from __future__ import annotations

from typing import Any

from faq_tf.compat import deserialize, keras, register, tf

__all__ = ["QuantizeInput"]


@register
class QuantizeInput(keras.layers.Layer):
    """Applies a quantizer to its input (the network input, 8 bits in the paper).

    Args:
      quantizer: a tfmot Quantizer (an `ActivationQuantizer`), or its serialized config.
    """

    def __init__(self, quantizer, **kwargs):
        super().__init__(**kwargs)
        if isinstance(quantizer, dict):
            quantizer = deserialize(quantizer)
        self.quantizer = quantizer

    def build(self, input_shape):
        self.quantizer_vars = self.quantizer.build(input_shape, self.name, self)
        super().build(input_shape)

    def call(self, inputs, training=None):
        if training is None:
            training = keras.backend.learning_phase()
        training = bool(training) if not tf.is_tensor(training) else training
        if tf.is_tensor(training):
            return tf.cond(
                training,
                lambda: self.quantizer(inputs, True, self.quantizer_vars),
                lambda: self.quantizer(inputs, False, self.quantizer_vars),
            )
        return self.quantizer(inputs, training, self.quantizer_vars)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["quantizer"] = keras.utils.serialize_keras_object(self.quantizer)
        return config
