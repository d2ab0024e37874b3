"""Start from your own Keras 3 model: model.fit -> .keras -> faq-train w8a8 -> integer .tflite.

  python -m benchmarks.keras3_start [--out runs/keras3_start] [--fit_epochs 1]

1. a small network (Conv2D, DepthwiseConv2D, BatchNormalization, ReLU6, Add, Concatenate,
   max and average pooling, Flatten, Dropout, Dense) built and trained in plain Keras 3 (`import keras`) with
   `model.fit` on Fashion-MNIST (pixels / 256), saved with `model.save("mine.keras")`;
2. `faq-train --flagfile=flags/fashion_mnist/w8a8.flags --pretrained=mine.keras`: the file's
   model replaces --model (converted by faq_tf.from_keras3);
3. `python -m export_tflite --model_dir=...`: a verified fully integer .tflite;
4. top-1 of the Keras 3 model, the FAQ model and the .tflite (LiteRT) on the 10k test
   images, and the .tflite's agreement with the FAQ model.

Writes out/keras3_start.json and .md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import FLAGS, ROOT, logger, run_faq_train, write_report

_log = logger("keras3_start")


def keras3_model(input_shape=(28, 28, 1), classes=10, width=16):
    """The Keras 3 network: the layer kinds a user's own small CNN has."""
    import keras  # Keras 3

    L = keras.layers
    i = keras.Input(input_shape, name="image")
    x = L.Conv2D(width, 3, padding="same", use_bias=False, name="stem")(i)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(6.0, name="stem_relu6")(x)
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = L.BatchNormalization(name="dw_bn")(y)
    x = L.Add(name="res")([x, y])
    x = L.ReLU(6.0, name="res_relu6")(x)
    x = L.MaxPooling2D(2, name="pool")(x)
    p = L.Conv2D(width, 1, activation="relu", name="pw")(x)
    x = L.Concatenate(name="cat")([x, p])
    x = L.Conv2D(2 * width, 3, padding="same", use_bias=False, name="conv2")(x)
    x = L.BatchNormalization(name="conv2_bn")(x)
    x = L.ReLU(name="conv2_relu")(x)
    x = L.AveragePooling2D(2, name="avg")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dropout(0.2, name="drop")(x)
    return keras.Model(i, L.Dense(classes, name="logits")(x), name="mine")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/keras3_start")
    parser.add_argument("--fit_epochs", type=int, default=1)
    parser.add_argument("--data_dir", default=None, help="Fashion-MNIST IDX folder (default: Debian's).")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()

    import keras  # Keras 3

    import faq_tf
    from benchmarks.common import fashion_mnist_arrays, keras_top1
    from export_tflite.evaluate import TfliteRunner
    from faq_tf.data import get_source
    from faq_tf.training.batch_norm import recompute_statistics

    source = get_source("fashion_mnist", args.data_dir)
    x_train, y_train = fashion_mnist_arrays(source, "train")
    x_test, y_test = fashion_mnist_arrays(source, "test")
    path = os.path.join(out, "mine.keras")
    keras.utils.set_random_seed(0)
    model3 = keras3_model()
    model3.compile(
        keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    _log(f"Keras 3 model.fit, {args.fit_epochs} epoch(s)")
    model3.fit(x_train, y_train, batch_size=128, epochs=args.fit_epochs, verbose=2)
    model3.save(path)
    keras3_top1 = float(np.mean(np.argmax(model3.predict(x_test, batch_size=500, verbose=0), 1) == y_test) * 100)
    # The same fp32 weights with exact BatchNorm statistics (what faq-train's precise BN does).
    exact = faq_tf.from_keras3(path)
    recompute_statistics(exact, (x_train[i : i + 128] for i in range(0, 128 * 100, 128)), 100)
    exact_bn_top1 = keras_top1(exact, x_test, y_test)

    run_dir = os.path.join(out, "w8a8")
    metrics = run_faq_train(os.path.join(FLAGS, "w8a8.flags"), run_dir, [f"--pretrained={path}"], log=_log)
    tflite = os.path.join(out, "w8a8.tflite")
    cmd = [sys.executable, "-m", "export_tflite", f"--model_dir={run_dir}", f"--output={tflite}"]
    _log(" ".join(cmd[1:]))
    subprocess.run(cmd, check=True, cwd=ROOT)
    qat = faq_tf.load_model(os.path.join(run_dir, "model.h5"))
    with open(tflite, "rb") as f:
        content = f.read()
    integer_logits = np.concatenate([TfliteRunner(content)(x_test[i : i + 500]) for i in range(0, len(x_test), 500)])
    keras_logits = qat.predict(x_test, batch_size=500, verbose=0)
    result = {
        "keras3_fp32_top1": round(keras3_top1, 2),
        "fp32_exact_bn_top1": round(exact_bn_top1, 2),
        "faq_w8a8_keras_top1": round(keras_top1(qat, x_test, y_test), 2),
        "faq_train_final": metrics["final"],
        "tflite_top1": round(float(np.mean(np.argmax(integer_logits, 1) == y_test) * 100), 2),
        "tflite_identical_logits_percent": round(float(np.mean(np.all(integer_logits == keras_logits, 1)) * 100), 2),
        "tflite_bytes": len(content),
        "minutes": round((time.perf_counter() - t0) / 60, 1),
    }
    md = (
        "| model | top-1 (Fashion-MNIST test) |\n|---|---|\n"
        f"| Keras 3 fp32 (`model.fit`, {args.fit_epochs} epoch) | {result['keras3_fp32_top1']:.2f} |\n"
        f"| the same fp32 weights, BatchNorm statistics exact (100 batches) | {result['fp32_exact_bn_top1']:.2f} |\n"
        f"| after FAQ w8a8 (faq-train, 1 epoch) | {result['faq_w8a8_keras_top1']:.2f} |\n"
        f"| integer .tflite (LiteRT) | {result['tflite_top1']:.2f} "
        f"({result['tflite_identical_logits_percent']:.2f}% of logits identical to Keras) |\n"
    )
    write_report(out, "keras3_start", result, md)


if __name__ == "__main__":
    main()
