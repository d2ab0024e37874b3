"""Data pipelines: determinism under skipping (resume), resizing, preprocessing."""

import os

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


def test_animal_folder_script_writes_a_folder_dataset_from_the_wheel(tmp_path):
    import gzip
    import pickle
    import zipfile

    from scripts import animal_folder

    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (40, 28, 28)).astype(np.uint8)
    labels = np.repeat(np.arange(10), 4)
    wheel = tmp_path / "animal_mnist-0.4-py3-none-any.whl"  # the real wheel's layout, made up arrays
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(animal_folder._MEMBERS["images"], gzip.compress(pickle.dumps(images)))
        z.writestr(animal_folder._MEMBERS["labels"], gzip.compress(pickle.dumps(labels)))
    out = tmp_path / "animals"
    assert (
        animal_folder.main(["--out", str(out), "--wheel", str(wheel), "--train_per_class=3", "--test_per_class=1"]) == 0
    )
    source = get_source(f"folder:{out}")
    assert source.class_names == animal_folder.CLASSES and source.num_train == 30
    assert sum(1 for _ in source.test()) == 10
    # Only numpy arrays are unpickled from the download.
    evil = tmp_path / "evil.whl"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr(animal_folder._MEMBERS["images"], gzip.compress(pickle.dumps(os.system)))
        z.writestr(animal_folder._MEMBERS["labels"], gzip.compress(pickle.dumps(labels)))
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        animal_folder.read_arrays(str(evil))
