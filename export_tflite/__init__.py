"""export_tflite: fully integer TFLite export of faq_tf models (converter, verifier, evaluator).

Not implemented yet: see issue 4. The quantizers in `faq_tf.quantizers` are written so
that the TFLite converter keeps their power-of-two scales.
"""
