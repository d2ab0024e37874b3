"""The paper's evidence as tools: gradient noise (4.7), weight similarity (4.8), plots, studies.

  faq-train ... --diagnostics=grad_noise          # per-layer noise into diagnostics.json
  python -m faq_tf.diagnostics similarity A.h5 B.h5
  python -m faq_tf.diagnostics plot RUN_DIR... --out plots/
  python -m faq_tf.diagnostics study --base flags/fashion_mnist/w4a4.flags --preset=fashion_mnist

Modules: `grad_noise` (the monitor), `similarity` (neuron cosine), `plots`, `study`
(the sensitivity runner).
"""

from faq_tf.diagnostics.grad_noise import GradNoiseMonitor
from faq_tf.diagnostics.similarity import model_similarity, neuron_cosine

__all__ = ["GradNoiseMonitor", "model_similarity", "neuron_cosine"]
