"""Data pipelines: determinism under skipping (resume), resizing, preprocessing."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from faq_tf.compat import tf
from faq_tf.data import get_source, make_input
from faq_tf.models import MODELS


def _batches(ds, n):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


@pytest.mark.parametrize("dataset", ["cifar10", "imagenet2012"])
def test_skipping_batches_continues_the_same_epoch(dataset):
    with tfds.testing.mock_data(num_examples=24):
        source = get_source(dataset)
        spec = MODELS["resnet18_cifar"]
        full = _batches(make_input(source, "train", 4, (32, 32, 3), spec.preprocess, epoch=3, seed=1), 5)
        resumed = _batches(
            make_input(source, "train", 4, (32, 32, 3), spec.preprocess, epoch=3, seed=1, skip_batches=2), 3
        )
        other_epoch = _batches(make_input(source, "train", 4, (32, 32, 3), spec.preprocess, epoch=4, seed=1), 1)
    for (xa, ya), (xb, yb) in zip(full[2:], resumed):
        np.testing.assert_array_equal(xa, xb)  # same images, same augmentation
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(full[0][0], other_epoch[0][0])  # a new epoch reshuffles


def test_gray_images_resized_for_a_keras_application():
    images = tf.data.Dataset.from_tensor_slices((np.full((4, 28, 28, 1), 255.0, np.float32), np.arange(4)))

    class Source:
        num_train, augment, eval_crop = 4, "none", 1.0

        def train(self):
            return images

        test = train

    spec = MODELS["MobileNetV2"]
    ((x, y),) = _batches(make_input(Source(), "test", 4, (32, 32, 3), spec.preprocess), 1)
    assert x.shape == (4, 32, 32, 3)
    np.testing.assert_allclose(x, 1.0, atol=1e-5)  # MobileNetV2 maps 255 to 1
    ((x, _),) = _batches(make_input(Source(), "test", 4, (28, 28, 1), MODELS["small_resnet"].preprocess), 1)
    np.testing.assert_allclose(x, 255 / 256)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="Unknown dataset 'mnist'"):
        get_source("mnist")
