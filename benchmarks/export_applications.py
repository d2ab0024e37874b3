"""Export fidelity on keras.applications models (random weights, small inputs, after calibration).

For ResNet50, MobileNetV2, InceptionV3 and DenseNet121 at w8a8 and w4a4: quantize with
calibration on random images, convert to a fully integer .tflite (int8 I/O, batch 1),
and compare the integer model's logits (the classifier without its softmax) with the
Keras model's on other random images, in output quantization steps.

Usage: python benchmarks/export_applications.py [--images 32] [--out runs/export_applications.json]
"""

import argparse
import json
import os
import time

import numpy as np

import faq_tf
from export_tflite import ExportError, convert, quantize_float_outputs, verify
from export_tflite.evaluate import TfliteRunner, compare
from faq_tf.compat import keras

APPS = {"ResNet50": 32, "MobileNetV2": 32, "InceptionV3": 75, "DenseNet121": 32}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--out", default="runs/export_applications.json")
    parser.add_argument("--models", nargs="*", default=list(APPS))
    args = parser.parse_args()
    rows = []
    for name in args.models:
        size = APPS[name]
        # Logits (no softmax), so that the comparison is on the values the softmax would squash.
        model = getattr(keras.applications, name)(
            weights=None, input_shape=(size, size, 3), classes=10, classifier_activation=None
        )
        rng = np.random.RandomState(0)
        calib = rng.rand(32, size, size, 3).astype("float32")
        test = rng.rand(args.images, size, size, 3).astype("float32")
        for precision in ("w8a8", "w4a4"):
            start = time.perf_counter()
            qat = faq_tf.quantize_model(model, precision, calib, batch_size=8, verbose=False)
            row = {"model": name, "precision": precision, "input": size}
            try:
                content = convert(qat, representative_data=calib)
            except ExportError as e:  # reported in the table, not hidden
                row.update(fully_integer=False, error=str(e).splitlines()[0][:300])
                rows.append(row)
                print(json.dumps(row), flush=True)
                continue
            reference = quantize_float_outputs(qat, calib)
            runner = TfliteRunner(content)
            result = compare(
                runner(test), reference.predict(test, verbose=0), np.zeros(len(test), int), runner.output_scale
            )
            result.pop("keras_top1")
            row.update(result)
            row["fully_integer"] = verify(content).ok
            row["seconds"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
        keras.backend.clear_session()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1)
    print(
        "\n| model | precision | outputs within 1 step (%) | max diff (steps) | top-1 agreement (%) | fully integer |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['precision']} | - | - | - | no: {r['error'][:150]} |")
            continue
        print(
            f"| {r['model']} | {r['precision']} | {r['within_one_step']:.2f} | {r['max_logit_diff_steps']:.0f} | "
            f"{r['top1_agreement']:.1f} | {r['fully_integer']} |"
        )


if __name__ == "__main__":
    main()
