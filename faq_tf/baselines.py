"""What users would otherwise pick: tfmot's own quantization-aware training, for comparisons.

`faq-train --precision=tfmot_int8` (tfmot's default 8-bit QAT: per-channel weights,
moving-average activation ranges, BN folded) or `--precision=tfmot_w4a4` (tfmot's
experimental n-bit scheme at 4-bit weights and activations) trains the same model on the
same data and schedule as an FAQ run, so the benchmark compares methods, not recipes.
These are baselines, not faq_tf features: no power-of-two scales, no calibration, and the
n-bit scheme does not convert to a fully integer model.

Example:

  >>> qat = tfmot_quantize(model, "tfmot_int8")

A tfmot_int8 model.h5 reloads under `tfmot.quantization.keras.quantize_scope()`.
"""

from __future__ import annotations

from faq_tf.compat import keras, tfmot

__all__ = ["TFMOT_BASELINES", "is_tfmot_baseline", "tfmot_quantize"]

TFMOT_BASELINES = ("tfmot_int8", "tfmot_w4a4")


def is_tfmot_baseline(precision: str) -> bool:
    """True for the precision names that select a tfmot QAT baseline."""
    return precision in TFMOT_BASELINES


def tfmot_quantize(model: keras.Model, name: str) -> keras.Model:
    """Wraps `model` for tfmot QAT.

    Args:
      model: a float Keras 2 (tf_keras) functional model.
      name: "tfmot_int8" (default 8-bit scheme) or "tfmot_w4a4" (experimental n-bit, 4/4).

    Returns:
      The QAT model (not compiled).
    """
    q = tfmot.quantization.keras
    if name == "tfmot_int8":
        return q.quantize_model(model)
    if name == "tfmot_w4a4":
        n_bit = q.experimental.default_n_bit
        scheme = n_bit.DefaultNBitQuantizeScheme(num_bits_weight=4, num_bits_activation=4)
        with q.quantize_scope():
            return q.quantize_apply(q.quantize_annotate_model(model), scheme)
    raise ValueError(f"Unknown tfmot baseline {name!r}; use one of {TFMOT_BASELINES}.")
