"""Quantizes every keras.applications model named in the quantization core issue, both policies.

Usage: python -m scripts.check_applications [--out runs/applications.json] [--models ResNet50 ...]

Models are built with weights=None at a small input size (no download), calibrated on
random images, and run once. Writes JSON and prints a Markdown table.
"""

import argparse
import json
import time

import numpy as np

import faq_tf
from benchmarks.common import write_json
from faq_tf import introspect
from faq_tf.compat import keras

APPS = {
    "ResNet50": 32,
    "ResNet101": 32,
    "ResNet152": 32,
    "VGG16": 32,
    "VGG19": 32,
    "InceptionV3": 75,
    "DenseNet121": 32,
    "DenseNet169": 32,
    "DenseNet201": 32,
    "MobileNet": 32,
    "MobileNetV2": 32,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/applications.json")
    parser.add_argument("--models", nargs="*", default=list(APPS))
    args = parser.parse_args()
    rows = []
    for name in args.models:
        size = APPS[name]
        model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10)
        x = np.random.RandomState(0).rand(8, size, size, 3).astype("float32")
        for precision in ("w8a8", "w4a4"):
            start = time.perf_counter()
            row = {"model": name, "precision": precision, "input": size}
            try:
                qat = faq_tf.quantize_model(model, precision, x, batch_size=4, calibration_batches=2, verbose=False)
                y = qat.predict(x[:2], verbose=0)
                tensors = introspect.quantized_tensors(qat)
                row.update(
                    ok=bool(np.isfinite(y).all()),
                    layers=len(qat.layers),
                    weights_4bit=sum(1 for t in tensors if t.tensor in ("kernel", "depthwise_kernel") and t.bits == 4),
                    weights_8bit=sum(1 for t in tensors if t.tensor in ("kernel", "depthwise_kernel") and t.bits == 8),
                    activations_4bit=sum(1 for t in tensors if t.tensor in ("output", "input") and t.bits == 4),
                    activations_8bit=sum(1 for t in tensors if t.tensor in ("output", "input") and t.bits == 8),
                )
            except Exception as e:  # noqa: BLE001 - reported in the table
                row.update(ok=False, error=f"{type(e).__name__}: {e}")
            row["seconds"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
        keras.backend.clear_session()
    write_json(args.out, rows)
    print("\n| model | precision | ok | 4-bit / 8-bit weights | 4-bit / 8-bit activations | s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['precision']} | {r['ok']} | {r.get('weights_4bit', '-')} / "
            f"{r.get('weights_8bit', '-')} | {r.get('activations_4bit', '-')} / "
            f"{r.get('activations_8bit', '-')} | {r['seconds']} |"
        )
    if not all(r["ok"] for r in rows):
        raise SystemExit("some models failed")


if __name__ == "__main__":
    main()
