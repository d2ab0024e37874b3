"""Gradient noise from weight quantization, per layer (the paper's section 4.7, Figure 1).

At every weight update t the monitor compares, for each quantized kernel:

  * delta w = w_t - w_{t-1}, the step the optimizer took on the float weights, with
  * an exponential moving average (factor 0.9) of the step actually taken by the
    quantized weights, Q(w_t) - Q(w_{t-1}),

by cosine similarity, and averages the cosine over the updates of each reporting period.
1.0 means the quantized weights move exactly as the float ones (no discretization
noise); lower means noisier. Q is the kernel's own quantizer: its bits, and l recomputed
from the weights as in training.

`faq-train --diagnostics=grad_noise` attaches one to the run and writes the per-layer
values per epoch to TensorBoard (`grad_noise/LAYER`) and to `model_dir/diagnostics.json`.
Without the flag nothing is built or run.

Example:

  >>> monitor = GradNoiseMonitor(qat_model)
  >>> for batch in data:
  ...     train_step(batch)
  ...     monitor.update()
  >>> monitor.result()      # {"conv1": 0.97, ...}, then monitor.reset()
"""

from __future__ import annotations

from faq_tf.compat import keras, tf
from faq_tf.introspect import quantized_tensors
from faq_tf.quantizers import WeightQuantizer, fake_quant, weight_exponent

__all__ = ["GradNoiseMonitor", "EMA_FACTOR"]

EMA_FACTOR = 0.9


class GradNoiseMonitor:
    """Per-layer cosine between the float step and the smoothed quantized step.

    Args:
      model: a faq_tf QAT model (its WeightQuantizer kernels are monitored).
      ema_factor: smoothing of the quantized step (the paper: 0.9).

    Raises:
      ValueError: for a model without faq_tf weight quantizers.
    """

    def __init__(self, model: keras.Model, ema_factor: float = EMA_FACTOR):
        self.kernels = [
            qt for qt in quantized_tensors(model) if isinstance(qt.quantizer, WeightQuantizer) and qt.weight is not None
        ]
        if not self.kernels:
            raise ValueError(
                f"Model '{model.name}' has no faq_tf weight quantizers: the gradient-noise monitor needs a model "
                "from faq_tf.quantize_model (it measures the noise that quantizing the weights adds)."
            )
        self.layers = [qt.layer for qt in self.kernels]
        self.ema_factor = float(ema_factor)

        def state(qt, name, value=None):
            init = tf.zeros_like(qt.weight) if value is None else value
            return tf.Variable(init, trainable=False, name=f"grad_noise_{name}")

        with tf.init_scope():
            self._prev_w = [state(qt, "w", tf.identity(qt.weight)) for qt in self.kernels]
            self._prev_q = [state(qt, "q", self._quantize(qt, tf.identity(qt.weight))) for qt in self.kernels]
            self._ema = [state(qt, "ema") for qt in self.kernels]
            self._sum = tf.Variable(tf.zeros(len(self.kernels)), trainable=False, name="grad_noise_sum")
            self._count = tf.Variable(0.0, trainable=False, name="grad_noise_count")
        self._update = tf.function(self._update_impl)

    @staticmethod
    def _quantize(qt, w):
        q = qt.quantizer
        return fake_quant(w, q.bits, weight_exponent(w, q.bits, q.clip_sigmas), signed=True)

    def _update_impl(self):
        cosines = []
        for qt, prev_w, prev_q, ema in zip(self.kernels, self._prev_w, self._prev_q, self._ema):
            w = tf.identity(qt.weight)
            q = self._quantize(qt, w)
            new_ema = self.ema_factor * ema + (1.0 - self.ema_factor) * (q - prev_q)
            dw = w - prev_w
            norm = tf.norm(dw) * tf.norm(new_ema)
            cosines.append(tf.math.divide_no_nan(tf.reduce_sum(dw * new_ema), norm))
            ema.assign(new_ema)
            prev_w.assign(w)
            prev_q.assign(q)
        self._sum.assign_add(tf.stack(cosines))
        self._count.assign_add(1.0)

    def update(self) -> None:
        """Records one weight update (call right after the optimizer step)."""
        self._update()

    def result(self) -> dict[str, float]:
        """Mean cosine per layer over the updates since the last `reset()`."""
        count = float(self._count.numpy())
        if count == 0:
            return {}
        values = self._sum.numpy() / count
        return {layer: float(v) for layer, v in zip(self.layers, values)}

    def reset(self) -> None:
        """Starts a new averaging period (the EMA and previous weights carry over)."""
        self._sum.assign(tf.zeros_like(self._sum))
        self._count.assign(0.0)
