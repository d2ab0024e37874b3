"""How the weight clip k (clip at k standard deviations) affects 8- and 4-bit weights.

For a trained Fashion-MNIST model (e.g. the fp32.h5 of `benchmarks.core_accuracy`),
reports per k: the mean signal-to-quantization-noise ratio of its kernels (dB, higher
is better) and the top-1 accuracy on the test images right after w8a8 / w4a4
calibration (on the first 640 training images). This is the measurement behind the
default k = 5 at 5 bits and more (`faq_tf.quantizers.default_clip_sigmas(8) == 5.0`);
the 4-bit default 4.12 is the paper's.

Usage: python -m benchmarks.weight_clip_sweep runs/core_accuracy/fp32.h5 [--out runs/weight_clip_sweep.json]
"""

import argparse
import json

import numpy as np

import faq_tf
from benchmarks.common import fashion_mnist_arrays, keras_top1, write_json
from faq_tf.compat import tf
from faq_tf.data import get_source
from faq_tf.quantizers import fake_quant, weight_exponent

KS = [2.0, 3.0, 4.12, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0]


def sqnr_db(w: np.ndarray, bits: int, k: float) -> float:
    w = tf.constant(w, tf.float32)
    q = fake_quant(w, bits, weight_exponent(w, bits, k), signed=True)
    noise = float(tf.reduce_mean(tf.square(q - w)))
    return 10.0 * np.log10(float(tf.reduce_mean(tf.square(w))) / max(noise, 1e-30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--out", default="runs/weight_clip_sweep.json")
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args()
    model = faq_tf.load_model(args.model)
    kernels = [v.numpy() for v in model.weights if v.name.split("/")[-1].startswith(("kernel", "depthwise_kernel"))]
    source = get_source("fashion_mnist", args.data_dir)
    x_train, _ = fashion_mnist_arrays(source, "train")
    x_test, y_test = fashion_mnist_arrays(source, "test")
    calib = x_train[:640]
    rows = []
    for bits in (8, 4):
        for k in KS:
            precision = faq_tf.Precision(bits, bits)
            qat = faq_tf.quantize_model(model, precision, calib, batch_size=128, weight_clip_sigmas=k, verbose=False)
            top1 = keras_top1(qat, x_test, y_test)
            row = {
                "bits": bits,
                "k": k,
                "mean_sqnr_db": round(float(np.mean([sqnr_db(w, bits, k) for w in kernels])), 2),
                "top1_after_calibration": round(top1, 2),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_json(args.out, rows)
    print("\n| bits | k | mean kernel SQNR (dB) | top-1 after calibration |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['bits']} | {r['k']} | {r['mean_sqnr_db']} | {r['top1_after_calibration']} |")


if __name__ == "__main__":
    main()
