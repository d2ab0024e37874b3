"""Shared fixtures: small models and deterministic data."""

import numpy as np
import pytest

import faq_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from faq_tf.compat import keras, tf
from faq_tf.training import TrainConfig

# Two logical CPUs, so MirroredStrategy can be tested on this 2-core machine.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


def residual_model(input_shape=(16, 16, 3), classes=10) -> keras.Model:
    """Conv+BN+ReLU, a residual Add, a depthwise conv, concat, pooling and Dense."""
    L = keras.layers
    i = keras.Input(input_shape, name="image")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem_conv")(i)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    y = L.Conv2D(8, 3, padding="same", name="res_conv")(x)
    y = L.BatchNormalization(name="res_bn")(y)
    x = L.Add(name="res_add")([x, y])
    x = L.Activation("relu", name="res_relu")(x)
    d = L.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    x = L.Concatenate(name="concat")([x, d])
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Conv2D(16, 1, activation="relu", name="head_conv")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    o = L.Dense(classes, name="logits")(x)
    return keras.Model(i, o, name="residual")


@pytest.fixture
def model():
    return residual_model()


@pytest.fixture
def images():
    return np.random.RandomState(1).rand(64, 16, 16, 3).astype("float32")


def tiny_run_config(tmp_path, **kw):
    """A few-second faq-train run: small_resnet at 28x28 on a 3-class image folder."""
    base = dict(
        model="small_resnet",
        dataset=f"folder:{image_folder(tmp_path)}",
        precision="w8a8",
        batch_size=8,
        epochs=2,
        steps_per_epoch=4,
        lr=0.01,
        lr_schedule="exp",
        lr_final=0.001,
        model_dir=str(tmp_path / "run"),
        image_size=28,
        calibration_batches=2,
        deterministic=True,
    )
    base.update(kw)
    return TrainConfig(**base)


def image_folder(tmp_path, classes=3, per_class=16, size=(20, 24)):
    """Writes (once) a folder:PATH dataset of random PNGs under tmp_path/images."""
    root = tmp_path / "images"
    if root.exists():
        return root
    rng = np.random.RandomState(0)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            img = (rng.rand(*size, 3) * 80 + 60 * c).astype("uint8")
            (root / f"class_{c}" / f"{i}.png").write_bytes(tf.io.encode_png(img).numpy())
    return root
