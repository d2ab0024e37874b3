"""The precision policy on every keras.applications model named in the quantization core issue.

Models are built with weights=None at a small input size. The policy is checked on all
of them; the full quantize_model (wrapping, calibration) runs on one model per family
to keep the suite fast (`python -m scripts.check_applications` runs all of them).
"""

import numpy as np
import pytest

import faq_tf
from faq_tf import graph, policy
from faq_tf.compat import keras
from scripts.check_applications import APPS  # name -> the small input size used

# (model, precision) pairs that also run the full quantize_model here. ResNet50 (both
# policies) and InceptionV3 (w8a8) run in full through their flagfiles (test_flagfiles).
FULL = [
    ("MobileNetV2", "w8a8"),
    ("MobileNetV2", "w4a4"),
    ("MobileNet", "w4a4"),
    ("VGG16", "w4a4"),
    ("InceptionV3", "w4a4"),
    ("DenseNet121", "w4a4"),
]


def _app(name):
    size = APPS[name]
    return getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10)


@pytest.mark.parametrize("name", list(APPS))
def test_policy_on_application(name):
    canonical = graph.canonicalize(_app(name))
    kernels_in_order = [
        n
        for n, layer in ((layer.name, layer) for layer in canonical.layers)
        if type(layer) in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    ]
    first, last = kernels_in_order[0], kernels_in_order[-1]
    softmax = canonical.layers[-1].name  # the output: softmax (split out of the last layer)
    assert canonical.layers[-1].get_config()["activation"] == "softmax"

    w4 = policy.plan_model(canonical, policy.parse_precision("w4a4"))
    assert w4[first].weight_bits == 8
    assert w4[last].weight_bits == 8
    inner = [w4[n].weight_bits for n in kernels_in_order[1:-1]]
    assert inner and set(inner) == {4}
    # logits and what follows them (softmax) stay float
    assert w4[last].activation_bits is None
    assert w4[softmax].activation_bits is None
    assert next(iter(w4.values())).role == "input" and next(iter(w4.values())).activation_bits == 8
    relus = [
        p for p in w4.values() if p.role in ("relu", "classifier_input") and p.class_name in ("ReLU", "Activation")
    ]
    four = [p for p in relus if p.activation_bits == 4]
    eight = [p for p in relus if p.activation_bits == 8]
    assert len(four) > len(eight) >= 1
    assert all(p.role == "classifier_input" for p in eight)
    # the classifier's input is 8-bit (global pooling or the last hidden Dense's ReLU)
    feeding = [p for p in w4.values() if p.role == "classifier_input"]
    assert feeding and all(p.activation_bits == 8 for p in feeding)
    assert all(p.weight_bits == 8 for p in w4.values() if p.class_name == "BatchNormalization")

    w8 = policy.plan_model(canonical, policy.parse_precision("w8a8"))
    assert {p.weight_bits for p in w8.values() if p.weight_bits} == {8}
    assert {p.activation_bits for p in w8.values() if p.activation_bits} == {8}
    assert w8[last].activation_bits == 8
    assert w8[softmax].activation_bits == 8


@pytest.mark.parametrize("name,precision", FULL)
def test_quantize_application(name, precision):
    model = _app(name)
    size = APPS[name]
    x = np.random.RandomState(0).rand(4, size, size, 3).astype("float32")
    qat = faq_tf.quantize_model(model, precision, x, batch_size=2, calibration_batches=2, verbose=False)
    y = qat.predict(x[:2], verbose=0)
    assert y.shape == (2, 10) and np.isfinite(y).all()
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=0.02)  # softmax survives
    assert not any(isinstance(layer, keras.Model) for layer in qat.layers)
