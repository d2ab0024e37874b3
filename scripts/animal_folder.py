"""Writes Animal-MNIST as an image folder, the layout `--dataset=folder:PATH` reads.

Usage: python -m scripts.animal_folder --out data/animals [--train_per_class 300] [--test_per_class 100]

Animal-MNIST (the `animal-mnist` package on PyPI, MIT license) ships 10,000 28x28
grayscale silhouettes of 10 animals, 1,000 per class, inside its wheel. This script
fetches that wheel (`pip download --no-deps`, about 2.6 MB; or `--wheel` a local copy),
reads its two arrays, and writes a seeded split as PNGs:

  OUT/train/<class>/<n>.png   (train_per_class per class)
  OUT/test/<class>/<n>.png    (test_per_class per class)

It stands in for "a folder of your own images" in the README.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

PACKAGE = "animal-mnist==0.4"
CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
_MEMBERS = {
    "images": "animal_mnist/data/Animal_MNIST/animal_data_version_3.gz",
    "labels": "animal_mnist/data/Animal_MNIST/animal_label_version_3.gz",
}


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else (the wheel's data files are pickled arrays)."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are expected")
        return super().find_class(module, name)


def download_wheel(directory: str) -> str:
    """Downloads the animal-mnist wheel into `directory` and returns its path."""
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", PACKAGE, "-d", directory]
    try:
        subprocess.run(cmd, check=True)
    except subprocess.CalledProcessError as e:
        raise SystemExit(
            f"could not download {PACKAGE} (pip exited with {e.returncode}); download its wheel "
            "on a machine with access to PyPI and pass it with --wheel"
        ) from e
    wheels = [f for f in os.listdir(directory) if f.endswith(".whl")]
    return os.path.join(directory, wheels[0])


def read_arrays(wheel: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels int [N]) from the animal-mnist wheel."""
    with zipfile.ZipFile(wheel) as z:
        out = []
        for member in (_MEMBERS["images"], _MEMBERS["labels"]):
            with gzip.open(io.BytesIO(z.read(member))) as f:
                out.append(np.asarray(_ArraysOnly(f).load()))
    images, labels = out
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise SystemExit(f"{wheel}: unexpected arrays {images.shape} and {labels.shape}")
    return images.astype(np.uint8), labels.astype(np.int64)


def write_folder(
    images: np.ndarray, labels: np.ndarray, out: str, train_per_class: int, test_per_class: int, seed: int = 0
) -> dict[str, int]:
    """Writes the split as PNGs; returns the image count per split."""
    from PIL import Image

    rng = np.random.RandomState(seed)
    counts = {"train": 0, "test": 0}
    for c, name in enumerate(CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) < train_per_class + test_per_class:
            raise SystemExit(f"class {name} has {len(idx)} images, fewer than {train_per_class + test_per_class}")
        for split, chosen in (("train", idx[:train_per_class]), ("test", idx[train_per_class:][:test_per_class])):
            folder = os.path.join(out, split, name)
            os.makedirs(folder, exist_ok=True)
            for n, i in enumerate(chosen):
                Image.fromarray(images[i], mode="L").save(os.path.join(folder, f"{n:04d}.png"))
            counts[split] += len(chosen)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.animal_folder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the folder to write (train/ and test/ inside)")
    parser.add_argument("--train_per_class", type=int, default=300)
    parser.add_argument("--test_per_class", type=int, default=100)
    parser.add_argument("--wheel", default=None, help="a local animal_mnist-0.4 wheel (default: download it)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if os.path.exists(os.path.join(args.out, "train")):
        print(f"{args.out}/train exists: leaving it as it is", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(tmp)
        images, labels = read_arrays(wheel)
    counts = write_folder(images, labels, args.out, args.train_per_class, args.test_per_class, args.seed)
    print(f"wrote {counts['train']} training and {counts['test']} test images of {len(CLASSES)} classes to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
