"""Datasets by name: fashion_mnist, cifar10, imagenet2012, any `tfds:NAME`, and `folder:PATH`.

Every source yields (image, label) with images as float32 pixels in [0, 255] (RGB or
gray). `make_input` turns a source into batches for a model: deterministic order per
(seed, epoch), stateless augmentation keyed on each example's position (so a resumed
run that skips k batches sees exactly what an uninterrupted run saw), resizing and
channel conversion to the model's input, and the model's own preprocessing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np

from faq_tf.compat import tf
from faq_tf.data.fashion_mnist import DatasetNotFoundError, load_fashion_mnist_uint8

__all__ = ["ImageSource", "get_source", "make_input", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


def _check_image_file(path: str) -> None:
    """Fails early, naming the file, instead of deep inside tf.data."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head.startswith(_MAGIC):
        raise ValueError(f"{path} is not a readable image (JPEG, PNG, GIF or BMP); remove or replace it.")


@dataclasses.dataclass
class ImageSource:
    """A labelled image dataset.

    Attributes:
      name: the dataset spec it came from.
      num_classes: number of labels.
      num_train: training examples.
      train: returns the unbatched training split, in a fixed order.
      test: returns the unbatched test split.
      augment: "none", "cifar" (pad 4, crop, flip) or "imagenet" (random resized crop, flip).
      eval_crop: below 1, evaluation images are resized so that the model's input is this
        fraction of their shorter side, then center-cropped (torchvision's Resize(256) and
        CenterCrop(224) at 0.875); 1: resized to the input as they are.
      class_names: the name of each label (folder names, TFDS label names), or None.
    """

    name: str
    num_classes: int
    num_train: int
    train: Callable[[], tf.data.Dataset]
    test: Callable[[], tf.data.Dataset]
    augment: str = "none"
    eval_crop: float = 1.0
    class_names: tuple[str, ...] | None = None

    def label_names(self) -> tuple[str, ...]:
        """`class_names`, or "0", "1", ... when the dataset has none."""
        return self.class_names or tuple(str(i) for i in range(self.num_classes))


# Fashion-MNIST's labels 0..9, as its authors list them.
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _fashion_mnist(data_dir: str | None) -> ImageSource:
    try:
        x_train, y_train = load_fashion_mnist_uint8("train", data_dir)
        x_test, y_test = load_fashion_mnist_uint8("test", data_dir)
    except DatasetNotFoundError as idx_error:
        try:
            return _tfds("fashion_mnist", data_dir, augment="none")
        except DatasetNotFoundError:
            raise idx_error from None

    def arrays(x, y):
        return lambda: tf.data.Dataset.from_tensor_slices((x.astype(np.float32), y))

    return ImageSource(
        "fashion_mnist",
        10,
        len(x_train),
        arrays(x_train, y_train),
        arrays(x_test, y_test),
        class_names=FASHION_MNIST_CLASSES,
    )


def _tfds(name: str, data_dir: str | None, augment: str, eval_crop: float = 1.0) -> ImageSource:
    import tensorflow_datasets as tfds

    kwargs = {}
    if name == "imagenet2012" and data_dir:
        kwargs["download_and_prepare_kwargs"] = {"download_config": tfds.download.DownloadConfig(manual_dir=data_dir)}
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        builder.download_and_prepare(**kwargs.get("download_and_prepare_kwargs", {}))
    except Exception as e:  # noqa: BLE001 - turned into an actionable message
        hint = (
            "Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org into a folder "
            "and pass it as --data_dir (TFDS manual download)."
            if name == "imagenet2012"
            else f"Run `python -m tensorflow_datasets.scripts.download_and_prepare --datasets={name}` on a "
            "machine with internet access and pass its data folder as --data_dir."
        )
        raise DatasetNotFoundError(f"TFDS dataset '{name}' is not available ({type(e).__name__}: {e}). {hint}") from e
    splits = set(builder.info.splits.keys())
    if not splits:  # info without split metadata, e.g. under tfds.testing.mock_data
        splits = {"train", "validation" if name == "imagenet2012" else "test"}
    label = builder.info.features["label"]
    test_split = "test" if "test" in splits else "validation" if "validation" in splits else None
    train_split = "train"
    if test_split is None:  # hold out 10% of train
        train_split, test_split = "train[:90%]", "train[90%:]"

    def load(split):
        def fn():
            ds = builder.as_dataset(split=split, shuffle_files=False, as_supervised=True)
            return ds.map(lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, tf.int64)))

        return fn

    try:
        num_train = builder.info.splits[train_split].num_examples
    except KeyError:
        num_train = int(load(train_split)().reduce(0, lambda n, _: n + 1))
    names = tuple(label.names) if getattr(label, "names", None) else None
    return ImageSource(
        name, label.num_classes, num_train, load(train_split), load(test_split), augment, eval_crop, names
    )


def _folder(path: str, seed: int = 0) -> ImageSource:
    if not os.path.isdir(path):
        raise DatasetNotFoundError(f"Image folder {path} does not exist.")
    roots = {s: os.path.join(path, s) for s in ("train", "test")}
    split_dirs = all(os.path.isdir(r) for r in roots.values())
    base = roots["train"] if split_dirs else path
    classes = sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d)))
    if not classes:
        raise DatasetNotFoundError(
            f"Image folder {base} has no class subfolders: lay it out as {base}/<class>/<image>.jpg "
            "(optionally with train/ and test/ on top)."
        )

    def files(root):
        paths, labels = [], []
        for i, c in enumerate(classes):
            d = os.path.join(root, c)
            if not os.path.isdir(d):
                continue
            for f in sorted(os.listdir(d)):
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    _check_image_file(os.path.join(d, f))
                    paths.append(os.path.join(d, f))
                    labels.append(i)
        return np.array(paths), np.array(labels, np.int64)

    if split_dirs:
        train_p, train_y = files(roots["train"])
        test_p, test_y = files(roots["test"])
    else:
        p, y = files(path)
        order = np.random.RandomState(seed).permutation(len(p))
        n_test = max(1, len(p) // 10)
        test_p, test_y, train_p, train_y = p[order[:n_test]], y[order[:n_test]], p[order[n_test:]], y[order[n_test:]]
    if len(train_p) == 0 or len(test_p) == 0:
        raise DatasetNotFoundError(
            f"Image folder {path} has no images ({', '.join(IMAGE_EXTENSIONS)}) in its class subfolders "
            f"{classes[:5]} (train: {len(train_p)}, test: {len(test_p)})."
        )

    def decode(p, y):
        data = tf.io.read_file(p)
        img = tf.io.decode_image(data, channels=3, expand_animations=False)
        return tf.cast(img, tf.float32), y

    def load(p, y):
        return lambda: tf.data.Dataset.from_tensor_slices((p, y)).map(decode)

    return ImageSource(
        f"folder:{path}",
        len(classes),
        len(train_p),
        load(train_p, train_y),
        load(test_p, test_y),
        class_names=tuple(classes),
    )


def get_source(spec: str, data_dir: str | None = None) -> ImageSource:
    """Returns the dataset named by `spec`.

    Args:
      spec: "fashion_mnist", "cifar10", "imagenet2012", "tfds:NAME" or "folder:PATH".
      data_dir: where the data lives (IDX files, TFDS data dir, or the ImageNet manual dir).

    Raises:
      DatasetNotFoundError: saying how to get the data.
      ValueError: for an unknown spec.
    """
    if spec == "fashion_mnist":
        return _fashion_mnist(data_dir)
    if spec == "cifar10":
        return _tfds("cifar10", data_dir, augment="cifar")
    if spec == "imagenet2012":
        return _tfds("imagenet2012", data_dir, augment="imagenet", eval_crop=0.875)
    if spec.startswith("tfds:") and len(spec) > 5:
        return _tfds(spec[5:], data_dir, augment="imagenet" if "imagenet" in spec else "none")
    if spec.startswith("folder:") and len(spec) > 7:
        return _folder(spec[7:])
    raise ValueError(
        f"Unknown dataset {spec!r}: use fashion_mnist, cifar10, imagenet2012, tfds:NAME (any TFDS dataset) "
        "or folder:PATH (class-named subfolders of images)."
    )


def resize_and_center_crop(image: tf.Tensor, size: tuple[int, int], crop: float) -> tf.Tensor:
    """torchvision's evaluation transform, Resize(round(S / crop)) then CenterCrop(S): the shorter
    side is resized (bilinear, antialiased) to round(S / crop), 256 for 224 and 342 for 299 at
    crop 0.875, keeping the aspect ratio, and the central size[0] x size[1] is kept."""
    h, w = size
    shorter = round(min(h, w) / crop)
    dims = tf.shape(image)[:2]
    short, long = tf.reduce_min(dims), tf.reduce_max(dims)
    scaled_long = tf.maximum(shorter * long // short, shorter)  # torchvision: int(size * long / short)
    new = tf.where(dims[0] <= dims[1], tf.stack([shorter, scaled_long]), tf.stack([scaled_long, shorter]))
    image = tf.image.resize(image, new, antialias=True)
    top = tf.cast(tf.round(tf.cast(new[0] - h, tf.float32) / 2), tf.int32)
    left = tf.cast(tf.round(tf.cast(new[1] - w, tf.float32) / 2), tf.int32)
    return tf.image.crop_to_bounding_box(image, top, left, h, w)


def _resize_channels(image: tf.Tensor, shape: tuple[int, int, int], crop: float) -> tf.Tensor:
    if crop < 1.0:
        image = resize_and_center_crop(image, shape[:2], crop)
    if tuple(image.shape[:2]) != tuple(shape[:2]):
        image = tf.image.resize(image, shape[:2])
    channels = image.shape[-1]
    if channels == 1 and shape[2] == 3:
        image = tf.image.grayscale_to_rgb(image)
    elif channels == 3 and shape[2] == 1:
        image = tf.image.rgb_to_grayscale(image)
    return image


def _augment(image: tf.Tensor, kind: str, seed: tf.Tensor, shape) -> tf.Tensor:
    if kind == "cifar":
        h, w = image.shape[0], image.shape[1]
        padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])  # zeros, as torchvision RandomCrop(padding=4)
        image = tf.image.stateless_random_crop(padded, [h, w, image.shape[2]], seed)
        return tf.image.stateless_random_flip_left_right(image, seed + 1)
    if kind == "imagenet":
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image),
            tf.zeros([0, 0, 4], tf.float32),
            seed=seed,
            min_object_covered=0.1,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.08, 1.0),
            use_image_if_no_bounding_boxes=True,
        )
        image = tf.slice(image, begin, size)
        image = tf.image.resize(image, shape[:2])
        return tf.image.stateless_random_flip_left_right(image, seed + 1)
    return image


def make_input(
    source: ImageSource,
    split: str,
    batch_size: int,
    input_shape: tuple[int, int, int],
    preprocess: Callable[[tf.Tensor], tf.Tensor],
    *,
    epoch: int = 0,
    seed: int = 0,
    skip_batches: int = 0,
    global_batch_size: int | None = None,
    input_context: tf.distribute.InputContext | None = None,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Builds batches of (preprocessed image, label).

    Args:
      source: the dataset.
      split: "train" (shuffled per epoch and augmented) or "test".
      batch_size: rows per batch of this pipeline (the per-replica batch).
      input_shape: the model's (height, width, channels).
      preprocess: the model's preprocessing, applied to float pixels in [0, 255].
      epoch: selects the shuffle order and augmentation of a training epoch.
      seed: run seed.
      skip_batches: global batches of this epoch already consumed (for resuming).
      global_batch_size: batch summed over replicas (default: batch_size).
      input_context: from `distribute_datasets_from_function`, for sharding across workers.
      repeat: repeat the test split forever.

    Returns:
      A batched dataset with drop_remainder=True for training.
    """
    global_batch = global_batch_size or batch_size
    train = split == "train"
    ds = source.train() if train else source.test()
    if train:
        n = source.num_train
        ds = ds.shuffle(min(n, 50_000), seed=seed * 1_000_003 + epoch, reshuffle_each_iteration=False)
        # Repeat (same order) so an epoch of --steps_per_epoch batches may exceed the data.
        ds = ds.repeat().enumerate().skip(skip_batches * global_batch)
    if input_context is not None and input_context.num_input_pipelines > 1:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    crop = 1.0 if train and source.augment == "imagenet" else source.eval_crop

    def prepare(*item):
        if train:
            index, (image, label) = item[0], item[1]
            aug_seed = tf.stack([tf.cast(seed * 7919 + epoch, tf.int64), index])
            image = _augment(image, source.augment, aug_seed, input_shape)
        else:
            image, label = item
        image = _resize_channels(image, input_shape, crop)
        image.set_shape(input_shape)
        return preprocess(image), label

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=train)
    if repeat:
        ds = ds.repeat()
    return ds.prefetch(tf.data.AUTOTUNE)
