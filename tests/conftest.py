"""Shared fixtures: small models and deterministic data."""

import numpy as np
import pytest

import faq_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from faq_tf.compat import keras, tf
from faq_tf.training import TrainConfig

L = keras.layers

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


def ops_model() -> keras.Model:
    """The layers residual_model lacks: average pooling, depthwise+BN, a signed concat, nearest
    upsampling, Dense+ReLU."""
    i = keras.Input((16, 16, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="conv")(i)
    x = L.BatchNormalization(name="bn")(x)  # signed: no ReLU
    a = L.AveragePooling2D(2, name="avg")(x)
    d = L.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name="dw")(x)
    d = L.BatchNormalization(name="dw_bn")(d)
    d = L.ReLU(name="dw_relu")(d)
    x = L.Concatenate(name="concat")([a, d])
    x = L.MaxPooling2D(2, name="down")(L.UpSampling2D(2, name="up")(x))  # a repeat, then its max: x again
    x = L.Flatten(name="flat")(x)
    x = L.Dense(16, activation="relu", name="fc")(x)
    return keras.Model(i, L.Dense(10, name="logits")(x), name="ops")


def inception_model() -> keras.Model:
    """InceptionV3's mixed0 pattern: convs and a 3x3 'same' average pool read one max-pooled tensor."""
    i = keras.Input((16, 16, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(i)
    x = L.BatchNormalization(scale=False, name="stem_bn")(x)
    x = L.Activation("relu", name="stem_relu")(x)
    x = L.MaxPooling2D(3, strides=2, name="pool")(x)
    branches = []
    for k, source in enumerate([x, x, L.AveragePooling2D(3, strides=1, padding="same", name="avg")(x)]):
        b = L.Conv2D(4, 1, use_bias=False, name=f"b{k}")(source)
        b = L.BatchNormalization(scale=False, name=f"b{k}_bn")(b)
        branches.append(L.Activation("relu", name=f"b{k}_relu")(b))
    x = L.Concatenate(name="mixed")(branches)
    # mixed9's pattern: a concat inside a concat, and an average pool of a concat.
    pair = [L.Conv2D(4, k, padding="same", activation="relu", name=f"n{k[0]}")(x) for k in ((1, 3), (3, 1))]
    pool = L.Conv2D(4, 1, activation="relu", name="p_conv")(L.AveragePooling2D(3, 1, "same", name="p_avg")(x))
    x = L.Concatenate(name="mixed_out")([L.Concatenate(name="nested")(pair), pool])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, L.Dense(10, name="logits")(x), name="inception")


def densenet_model() -> keras.Model:
    """DenseNet's pattern: BatchNormalization on a concat (standalone, not after a conv)."""
    i = keras.Input((16, 16, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="stem")(i)
    for k in range(2):
        y = L.ReLU(name=f"b{k}_relu")(L.BatchNormalization(name=f"b{k}_bn")(x))  # standalone BN
        y = L.Conv2D(4, 3, padding="same", use_bias=False, name=f"b{k}_conv")(y)
        x = L.Concatenate(name=f"b{k}_concat")([x, y])
    x = L.ReLU(name="final_relu")(L.BatchNormalization(name="final_bn")(x))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, L.Dense(10, name="logits")(x), name="densenet")


def listed_layers_model() -> keras.Model:
    """The layer classes and activations the other models lack: input scaling, padding, relu6, softmax."""
    i = keras.Input((16, 16, 3))
    x = L.Rescaling(2.0, offset=-1.0, name="rescale")(i)
    norm = L.Normalization(mean=[0.1, 0.2, 0.3], variance=[1.0, 2.0, 4.0], name="norm")
    x = norm(x)
    x = L.ZeroPadding2D(1, name="pad")(x)
    x = L.Conv2D(8, 3, name="conv")(x)
    x = L.BatchNormalization(scale=False, name="bn")(x)  # InceptionV3 style
    x = L.ReLU(6.0, name="relu6")(x)
    x = L.AveragePooling2D(name="avg")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.Activation("relu6", name="act6")(x)
    x = L.Reshape((8, 8, 8), name="reshape")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dropout(0.5, name="drop")(x)
    x = L.Dense(16, activation="relu", name="fc")(x)
    out = L.Dense(4, activation="softmax", name="pred")(x)
    return keras.Model(i, out, name="listed_layers")


def randomize_batch_norms(model: keras.Model, seed: int = 2) -> keras.Model:
    """Gives every BatchNormalization random statistics (and gamma), so that the BN multipliers and
    offsets are not trivial, as in a trained network; returns the model."""
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.beta.shape[0]
            gamma = [rng.uniform(0.5, 2, n)] if layer.scale else []
            layer.set_weights(gamma + [rng.normal(0, 0.3, n), rng.normal(0, 0.3, n), rng.uniform(0.5, 2, n)])
    return model


# The models the export tests convert; with listed_layers_model they use every computing
# layer class of the registry and every activation quantizer role.
OP_MODELS = [residual_model, ops_model, inception_model, densenet_model]
EVERY_LAYER_MODELS = [*OP_MODELS, listed_layers_model]


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
