"""Accuracy of FAQ quantization right after calibration (no fine-tuning), on Fashion-MNIST.

Trains the small fp32 ResNet briefly, then quantizes it with `faq_tf.quantize_model`
at w8a8 and w4a4 (5 calibration batches of training data) and evaluates all three on
the 10k test images. Writes JSON and prints a Markdown table.

Usage: python -m benchmarks.core_accuracy [--epochs 3] [--out runs/core_accuracy]
"""

import argparse
import os
import time

import numpy as np

import faq_tf
from benchmarks.common import fashion_mnist_arrays, keras_top1, write_json
from faq_tf.compat import keras, tf
from faq_tf.data import get_source
from faq_tf.models import small_resnet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--out", default="runs/core_accuracy")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)

    source = get_source("fashion_mnist", args.data_dir)
    x_train, y_train = fashion_mnist_arrays(source, "train")
    x_test, y_test = fashion_mnist_arrays(source, "test")

    model = small_resnet()
    steps = args.epochs * int(np.ceil(len(x_train) / args.batch_size))
    lr = keras.optimizers.schedules.CosineDecay(0.05, steps)
    model.compile(
        keras.optimizers.SGD(lr, momentum=0.9, nesterov=True),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, shuffle=True, verbose=2)
    train_s = time.perf_counter() - start
    faq_tf.save_model(model, os.path.join(args.out, "fp32.h5"))

    rng = np.random.RandomState(args.seed)
    calib = x_train[rng.permutation(len(x_train))[: 5 * args.batch_size]]
    calib_ds = tf.data.Dataset.from_tensor_slices(calib).batch(args.batch_size)

    results = {"fp32": keras_top1(model, x_test, y_test)}
    for precision in ("w8a8", "w4a4"):
        qat = faq_tf.quantize_model(model, precision, calib_ds, verbose=False)
        results[precision] = keras_top1(qat, x_test, y_test)
        with open(os.path.join(args.out, f"{precision}_summary.txt"), "w") as f:
            f.write(faq_tf.precision_summary(qat) + "\n")

    report = {
        "dataset": "fashion_mnist (Debian dataset-fashion-mnist), 10k test images",
        "model": f"small_resnet ({model.count_params()} parameters)",
        "fp32_training": f"{args.epochs} epochs, SGD+Nesterov 0.9, lr 0.05 cosine, batch {args.batch_size}",
        "fp32_train_seconds": round(train_s, 1),
        "calibration": "5 batches of training data, P = 99.99 (8-bit) / 99.9 (4-bit)",
        "top1": results,
        "drop_vs_fp32": {k: round(v - results["fp32"], 2) for k, v in results.items()},
        "seed": args.seed,
    }
    write_json(os.path.join(args.out, "core_accuracy.json"), report)
    print("\n| model | top-1 (%) | change vs fp32 |\n|---|---|---|")
    for k, v in results.items():
        label = "fp32 (trained)" if k == "fp32" else f"{k} after calibration, no fine-tuning"
        print(f"| {label} | {v:.2f} | {v - results['fp32']:+.2f} |")


if __name__ == "__main__":
    main()
