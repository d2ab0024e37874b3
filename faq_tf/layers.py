"""Layers of faq_tf QAT models besides tfmot's wrapper.

* `QuantizeInput` quantizes a network input (tfmot's own input layer is not part of its
  public API, so faq_tf has this small one), and the float outputs that
  `faq_tf.outputs.quantize_float_outputs` quantizes for integer export.
* `BatchNormWrapper` is the QuantizeWrapper of a BatchNormalization; at inference it
  computes y = x * m + c with plain ops, exactly as the integer runtime's folded conv does.
"""

from __future__ import annotations

from typing import Any

from faq_tf.compat import deserialize, keras, register, tf, tfmot
from faq_tf.input_scaling import InputScaling
from faq_tf.quantizers import fake_quant
from faq_tf.tracing import exporting

__all__ = ["QuantizeInput", "BatchNormWrapper"]


@register
class QuantizeInput(keras.layers.Layer):
    """Applies a quantizer to its input (the network input, 8 bits in the paper, or a float output).

    Args:
      quantizer: a tfmot Quantizer (an `ActivationQuantizer`), or its serialized config.
      input_scaling: for a network input, the `faq_tf.input_scaling.InputScaling` folded
        into the first layers (its config): the input is then pixels, as the original
        model's was before its Rescaling / Normalization.
    """

    def __init__(self, quantizer, input_scaling: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(quantizer, dict):
            quantizer = deserialize(quantizer)
        self.quantizer = quantizer
        # A frozen dataclass, not a dict: Keras would wrap a dict attribute for tracking.
        self.input_scaling = InputScaling.from_config(input_scaling) if input_scaling is not None else None

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
        if self.input_scaling is not None:
            config["input_scaling"] = self.input_scaling.get_config()
        return config


@register
class BatchNormWrapper(tfmot.quantization.keras.QuantizeWrapperV2):
    """The QuantizeWrapper of a BatchNormalization, exact at inference and exportable alone.

    Training uses the wrapped layer. At inference the layer computes
    y = x * m + (Q(beta) - mean * m), m = Q_8(gamma / sqrt(var + eps)), with a multiply
    and an add. TensorFlow's fused Conv2D+BatchNorm kernels (grappler's remapper) apply
    an approximate rsqrt to var + eps even when it is 1, so they land an ulp or so off the
    exact value; after `faq_tf.snap_to_accumulator_grid` (mean 0, var + eps = 1, offsets
    on the accumulator grid) this form is exact, and the Keras model rounds exactly the
    ties that the integer model rounds.

    For export (`faq_tf.tracing.export_trace`) a BN that follows a conv traces as the
    layer's FusedBatchNorm, which the converter folds into the conv. A *standalone* BN
    (DenseNet's, after a concat) traces as the same function written as a 1x1 depthwise
    conv with the 8-bit multipliers as its kernel: the converter would otherwise make a
    MUL whose constant gets a scale that is not a power of two.

    Args:
      layer, quantize_config: as for tfmot's QuantizeWrapperV2.
      standalone: the BN does not follow a conv it can be folded into.
    """

    def __init__(self, layer, quantize_config, standalone: bool = False, **kwargs):
        super().__init__(layer, quantize_config, **kwargs)
        self.standalone = bool(standalone)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "standalone": self.standalone}

    def call(self, inputs, training=None, **kwargs):
        if training is None:
            training = keras.backend.learning_phase()
        bn = self.layer
        inference = not tf.is_tensor(training) and not training
        axis = bn.axis if isinstance(bn.axis, (list, tuple)) else [bn.axis]
        last_axis = len(axis) == 1 and axis[0] in (-1, inputs.shape.rank - 1)
        raw = {id(q): w for w, q, _ in self._weight_vars}  # the float variables, by quantizer
        quantizers = self.quantize_config.weight_quantizers
        gamma = raw.get(id(quantizers.get("gamma")))
        plain = inference and (not exporting() or self.standalone)
        if not plain or not last_axis or gamma is None or bn.renorm:
            return super().call(inputs, training=training, **kwargs)
        gamma_q = quantizers["gamma"]
        sd = tf.sqrt(bn.moving_variance + bn.epsilon)
        multiplier = gamma / sd
        offset = -bn.moving_mean
        beta = raw.get(id(quantizers.get("beta")))
        if exporting() and inputs.shape.rank == 4:
            # y = depthwise_conv(x, m) + c: the kernel on the 8-bit grid as per-channel
            # weights (scale 2^l), c folded into the conv's int32 bias by the converter.
            kernel = tf.reshape(multiplier, [1, 1, -1, 1])  # a depthwise kernel, as DepthwiseConv2D's
            kernel = fake_quant(kernel, gamma_q.bits, float(gamma_q.exponent), True, per_channel=True)
            # The bias from its own copy of m: a FakeQuant output used twice is not taken as weights.
            m = fake_quant(multiplier, gamma_q.bits, float(gamma_q.exponent), True, constant=True)
            c = offset * m + (quantizers["beta"](beta, False, {}) if beta is not None else 0.0)
            outputs = tf.nn.bias_add(tf.nn.depthwise_conv2d(inputs, kernel, [1, 1, 1, 1], "VALID"), c)
        else:
            m = fake_quant(multiplier, gamma_q.bits, float(gamma_q.exponent), True, constant=True)
            offset = offset * m
            if beta is not None:
                offset = quantizers["beta"](beta, False, {}) + offset
            outputs = inputs * m + offset
        if self._output_quantizers:  # a BN whose output is stored (not folded into the next op)
            outputs = self._output_quantizers[0](outputs, False, self._output_quantizer_vars)
        return outputs
