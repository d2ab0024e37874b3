"""Fashion-MNIST from local IDX files (Debian's `dataset-fashion-mnist`), no download.

`apt-get install dataset-fashion-mnist` puts the four gzipped IDX files in
/usr/share/datasets/fashion-mnist. `load_fashion_mnist_uint8` reads them as raw pixels;
`faq_tf.data.get_source("fashion_mnist")` serves them, and a model's preprocessing
(small_resnet's: pixels / 256, on the grid of the 8-bit input quantizer Q(8, -8)) is
applied by `faq_tf.data.make_input`.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

__all__ = ["DEFAULT_DIR", "load_fashion_mnist_uint8", "DatasetNotFoundError"]

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetNotFoundError(FileNotFoundError):
    """Raised when a dataset's files are not where they should be."""


def _find(data_dir: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    raise DatasetNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {data_dir}. Install it with "
        "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download the four IDX "
        "files from the Fashion-MNIST project and pass their folder as data_dir."
    )


def _read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path} is not an IDX file (too short)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {body.size}")
    return body.reshape(shape)


def load_fashion_mnist_uint8(split: str = "train", data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Loads a Fashion-MNIST split as raw pixels.

    Args:
      split: "train" (60000 images) or "test" (10000).
      data_dir: folder with the IDX files; default /usr/share/datasets/fashion-mnist.

    Returns:
      (images uint8 [N, 28, 28, 1], labels int64 [N]).

    Raises:
      DatasetNotFoundError: with how to get the files.
      ValueError: for an unknown split or a damaged file.
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    data_dir = data_dir or DEFAULT_DIR
    images = _read_idx(_find(data_dir, _FILES[split][0]))
    labels = _read_idx(_find(data_dir, _FILES[split][1]))
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{data_dir}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images[..., None], labels.astype(np.int64)
