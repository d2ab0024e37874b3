"""Keras 3 models and .keras files into tf_keras (faq_tf.from_keras3), and through FAQ to integer TFLite."""

import json
import os
import subprocess
import sys
import zipfile

import keras as keras3  # Keras 3, next to tf_keras
import numpy as np
import pytest

import faq_tf
from benchmarks.keras3_start import keras3_model
from conftest import image_folder, tiny_run_config
from export_tflite.evaluate import TfliteRunner
from faq_tf import registry
from faq_tf.compat import keras
from faq_tf.keras3 import Keras3ConversionError, from_keras3, is_keras3_model
from faq_tf.training import run

K3 = keras3.layers
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _randomize_batch_norms(model) -> None:
    """Non-trivial BN statistics, so that a lost moving mean or variance shows."""
    rng = np.random.RandomState(0)
    for layer in _all_layers(model):
        if isinstance(layer, K3.BatchNormalization):
            weights = [w.numpy() for w in layer.weights]
            n = weights[0].shape[0]
            values = [rng.uniform(0.5, 2, n) if layer.scale else None, rng.normal(0, 0.3, n) if layer.center else None]
            values = [v for v in values if v is not None] + [rng.normal(0, 0.3, n), rng.uniform(0.5, 2, n)]
            layer.set_weights(values)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras3.Model):
            yield from _all_layers(layer)


def _assert_same_outputs(model3, images, rtol=1e-5):
    """from_keras3 gives the same graph: outputs equal to 1e-5 of the output scale, in inference."""
    model = from_keras3(model3)
    assert isinstance(model, keras.Model) and not is_keras3_model(model)
    expected = model3.predict(images, verbose=0)
    actual = model.predict(images, verbose=0)
    expected, actual = (
        np.concatenate([np.ravel(a) for a in x]) if isinstance(x, list) else x for x in (expected, actual)
    )
    diff = float(np.max(np.abs(expected - actual)))
    scale = float(np.max(np.abs(expected)))
    assert diff <= rtol * scale, (diff, scale)
    return model, diff / scale


APPLICATIONS = [  # (name, input size): small inputs keep the suite fast
    ("ResNet50", 32),
    ("MobileNetV2", 32),
    ("DenseNet121", 32),
    ("InceptionV3", 75),
    ("MobileNet", 32),
]


@pytest.mark.parametrize("name,size", APPLICATIONS)
def test_keras3_applications_convert_to_the_same_function(name, size):
    build = getattr(keras3.applications, name)
    model3 = build(weights=None, input_shape=(size, size, 3), classes=10, classifier_activation=None)
    _randomize_batch_norms(model3)
    images = np.random.RandomState(1).rand(4, size, size, 3).astype("float32") * 2 - 1
    model, rel = _assert_same_outputs(model3, images)
    assert [layer.name for layer in model.layers] == [layer.name for layer in model3.layers]
    assert sum(w.size for w in model.get_weights()) == model3.count_params()  # BN moving stats included
    print(f"{name}: max abs diff / output scale = {rel:.2e}")


def _every_registry_layer_model():
    """A Keras 3 functional model using every layer class of faq_tf's registry."""
    i = keras3.Input((16, 16, 3), name="image")
    x = K3.Rescaling(1 / 127.5, offset=-1, name="rescale")(i)
    x = K3.Normalization(mean=[0.1, 0.2, 0.3], variance=[1.0, 2.0, 4.0], name="norm")(x)
    x = K3.ZeroPadding2D(1, name="pad")(x)
    x = K3.Conv2D(8, 3, name="conv")(x)
    x = K3.BatchNormalization(name="bn")(x)
    x = K3.ReLU(6.0, name="relu6")(x)
    d = K3.DepthwiseConv2D(3, padding="same", name="dw")(x)
    d = K3.Activation("relu", name="dw_relu")(d)
    x = K3.Add(name="add")([x, d])
    x = K3.Concatenate(name="concat")([x, d])
    a = K3.AveragePooling2D(2, name="avg")(x)
    m = K3.MaxPooling2D(2, name="max")(x)
    x = K3.Concatenate(name="pools")([a, m])
    x = K3.MaxPooling2D(2, name="down")(K3.UpSampling2D(2, name="up")(x))  # a repeat and its max: x again
    x = K3.Cropping2D(1, name="crop")(x)
    x = K3.SpatialDropout2D(0.1, name="sdrop")(x)
    g = K3.GlobalAveragePooling2D(name="gap")(x)
    gm = K3.GlobalMaxPooling2D(name="gmp")(x)
    f = K3.Flatten(name="flat")(K3.Reshape((36, 32), name="reshape")(x))
    x = K3.Concatenate(name="heads")([g, gm, f])
    x = K3.Dropout(0.2, name="drop")(x)
    x = K3.Dense(16, activation="tanh", name="fc")(x)
    return keras3.Model(i, K3.Dense(10, activation="softmax", name="probs")(x), name="every_layer")


def test_every_registry_layer_class_converts():
    model3 = _every_registry_layer_model()
    _randomize_batch_norms(model3)
    used = {type(layer).__name__ for layer in model3.layers}
    listed = {cls.__name__ for cls in registry.supported_layer_classes()}
    assert listed <= used, f"add {sorted(listed - used)} to this model"
    _assert_same_outputs(model3, np.random.RandomState(2).rand(4, 16, 16, 3).astype("float32") * 255)


def test_sequential_with_a_nested_application_multi_input_and_shared_layers():
    # The transfer-learning model of Keras's tutorials: preprocessing, a nested application, a head.
    app = keras3.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), include_top=False)
    seq = keras3.Sequential(
        [keras3.Input((32, 32, 3)), K3.Rescaling(1 / 127.5, offset=-1), app, K3.GlobalAveragePooling2D(), K3.Dense(5)],
        name="transfer",
    )
    _randomize_batch_norms(seq)
    model, _ = _assert_same_outputs(seq, np.random.RandomState(3).rand(4, 32, 32, 3).astype("float32") * 255)
    assert isinstance(model.get_layer(app.name), keras.Model)
    # Two inputs, one Conv2D called on both (shared weights), two outputs.
    a, b = keras3.Input((8, 8, 3), name="left"), keras3.Input((8, 8, 3), name="right")
    shared = K3.Conv2D(4, 3, padding="same", name="shared")
    x = K3.Add(name="sum")([shared(a), shared(b)])
    two = keras3.Model([a, b], [K3.GlobalAveragePooling2D(name="g")(x), K3.Flatten(name="f")(x)], name="two")
    rng = np.random.RandomState(4)
    images = [rng.rand(2, 8, 8, 3).astype("float32"), rng.rand(2, 8, 8, 3).astype("float32")]
    model, _ = _assert_same_outputs(two, images)
    assert [t.name.split(":")[0] for t in model.inputs] == ["left", "right"] and len(model.outputs) == 2


class Scale(K3.Layer):
    def call(self, x):
        return 2.0 * x


class Subclassed(keras3.Model):
    def __init__(self):
        super().__init__()
        self.dense = K3.Dense(3)

    def call(self, x):
        return self.dense(x)


def test_unsupported_layers_are_named_with_what_to_do(tmp_path):
    i = keras3.Input((4,))
    with pytest.raises(Keras3ConversionError, match=r"layer 'double' is a Lambda.*built-in"):
        from_keras3(keras3.Model(i, K3.Lambda(lambda t: 2 * t, name="double")(i)))
    with pytest.raises(Keras3ConversionError, match=r"layer 'scale' \(.*Scale\).*Keras's built-in layers only"):
        from_keras3(keras3.Model(i, Scale(name="scale")(i)))
    sub = Subclassed()
    sub(np.zeros((1, 4), "float32"))
    with pytest.raises(Keras3ConversionError, match="subclassed Keras 3 model.*functional API"):
        from_keras3(sub)
    with pytest.raises(TypeError, match="Expected a Keras 3 model"):
        from_keras3(object())


def test_a_lambda_in_a_keras_file_is_refused_before_loading(tmp_path, monkeypatch):
    i = keras3.Input((4,))
    path = tmp_path / "lambda.keras"
    keras3.Model(i, K3.Dense(2)(K3.Lambda(lambda t: t + 1, name="plus_one")(i))).save(path)

    def never(*args, **kwargs):
        raise AssertionError("the file was deserialized")

    monkeypatch.setattr(keras3.saving, "load_model", never)
    with pytest.raises(Keras3ConversionError, match=r"Lambda layer\(s\) \['plus_one'\].*safe_mode"):
        faq_tf.load_model(path)
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(Keras3ConversionError, match="not a readable .keras file"):
        faq_tf.load_model(tmp_path / "broken.keras")


def _small_keras3_model():
    """Conv2D, DepthwiseConv2D, BN, ReLU6, Add, Concatenate, pooling, Dropout, Dense: the issue's list."""
    return keras3_model(input_shape=(28, 28, 3), classes=3, width=8)


def test_load_model_reads_fp32_keras_files_and_refuses_qat_ones(tmp_path, capsys):
    model3 = _small_keras3_model()
    path = tmp_path / "fp32.keras"
    model3.save(path)
    images = np.random.RandomState(5).rand(4, 28, 28, 3).astype("float32")
    loaded = faq_tf.load_model(path)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model3.predict(images, verbose=0), atol=1e-5)
    # quantize_model takes the Keras 3 model itself and says it converted it.
    qat = faq_tf.quantize_model(model3, "w8a8", images, verbose=True)
    assert "converted Keras 3 model 'mine' to tf_keras" in capsys.readouterr().out
    assert faq_tf.quantized_tensors(qat)
    # A QAT model in a .keras file (tf_keras's own .keras format) gets the refusal that says so.
    qat.save(tmp_path / "qat.keras")
    with pytest.raises(ValueError, match="holds a QAT model.*an fp32 .keras model loads fine"):
        faq_tf.load_model(tmp_path / "qat.keras")
    # tf_keras's .keras format with an fp32 model loads too.
    with zipfile.ZipFile(path) as zf:
        assert json.loads(zf.read("metadata.json"))["keras_version"].startswith("3.")
    # The exporter loads an fp32 .keras file and says how to quantize it first.
    from export_tflite.__main__ import main as export_main

    capsys.readouterr()
    assert export_main(["--model", str(path), "--output", str(tmp_path / "x.tflite")]) == 2
    assert "faq-train --pretrained=" in capsys.readouterr().err and not (tmp_path / "x.tflite").exists()
    loaded.save(tmp_path / "tf_keras.keras")
    again = faq_tf.load_model(tmp_path / "tf_keras.keras")
    np.testing.assert_allclose(again.predict(images, verbose=0), loaded.predict(images, verbose=0), atol=1e-6)


def test_keras3_fit_to_faq_train_to_integer_tflite(tmp_path):
    """Keras 3 model.fit -> .keras -> faq-train w8a8 -> python -m export_tflite -> identical logits."""
    folder = image_folder(tmp_path)
    train = keras3.utils.image_dataset_from_directory(folder, image_size=(28, 28), batch_size=8, shuffle=False)
    model3 = _small_keras3_model()
    model3.compile("sgd", keras3.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model3.fit(train.map(lambda x, y: (x / 256.0, y)), epochs=1, verbose=0)
    path = tmp_path / "mine.keras"
    model3.save(path)

    cfg = tiny_run_config(tmp_path, pretrained=str(path), image_size=None, epochs=1, steps_per_epoch=2)
    final = run(cfg)
    assert 0 <= final["test_top1"] <= 100
    out = tmp_path / "out.tflite"
    done = subprocess.run(
        [sys.executable, "-m", "export_tflite", f"--model_dir={cfg.model_dir}", f"--output={out}"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fully integer: True" in done.stdout
    qat = faq_tf.load_model(tmp_path / "run" / "model.h5")
    images = np.concatenate([x.numpy() for x, _ in train.take(2)]) / 256.0
    np.testing.assert_array_equal(TfliteRunner(out.read_bytes())(images), qat.predict(images, verbose=0))
