"""The Fashion-MNIST integer models on every integer runtime: XNNPACK, LiteRT's builtin kernels, TFLM.

Reads `make demo`'s outputs (runs/demo/tflite/{w8a8,w4a4,w4a4+int4}.tflite and the Keras
models they came from), runs each file on the 10k test images with LiteRT's default CPU
path (XNNPACK), LiteRT's builtin kernels and TensorFlow Lite for Microcontrollers
(tflite-micro), and reports per file and runtime: top-1, top-1 agreement with Keras, the
share of images whose logits are all identical to Keras's, the largest difference in
output steps. The Keras model computes with each runtime's arithmetic in turn
(`faq_tf.set_target`), and also, for comparison, with XNNPACK's alone (what it reproduced
before targets existed). Also: how often the builtin kernels and TFLM give identical logits
(are they one target?), and the microcontroller footprint (`export_tflite.micro`) of each
file and of TFLite's own post-training int8 file of the fp32 network (ptq_int8.tflite).

Usage: python -m benchmarks.runtimes [--demo runs/demo] [--out runs/runtimes] [--limit N]
"""

from __future__ import annotations

import argparse
import dataclasses
import os

import numpy as np

from benchmarks.common import fashion_mnist_arrays, write_report

FILES = {"w8a8": "w8a8", "w4a4": "w4a4", "w4a4+int4": "w4a4"}  # .tflite -> the run it came from
RUNTIMES = ("xnnpack", "builtin", "micro")
REFERENCE_FILE = "ptq_int8"  # TFLite's own post-training int8 of the fp32 model (make demo writes it)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", default="runs/demo", help="make demo's output folder")
    parser.add_argument("--out", default="runs/runtimes")
    parser.add_argument("--limit", type=int, default=None, help="only the first N test images")
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args()

    import faq_tf
    from export_tflite import quantize_float_outputs
    from export_tflite.evaluate import TfliteRunner, compare
    from export_tflite.micro import micro_report
    from export_tflite.reader import has_int4_weights
    from faq_tf.data import get_source

    x, y = fashion_mnist_arrays(get_source("fashion_mnist", args.data_dir), "test")
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    result: dict = {"images": len(x), "files": {}}
    lines = [
        f"Fashion-MNIST test set ({len(x)} images). Agreement and identical logits: against the Keras model.",
        "",
        "| file | runtime | top-1 | top-1 agreement | identical logit values (%) | max diff (steps) "
        "| identical logit values with XNNPACK's arithmetic (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in FILES.items():
        path = os.path.join(args.demo, "tflite", f"{name}.tflite")
        with open(path, "rb") as f:
            content = f.read()
        keras_model = quantize_float_outputs(faq_tf.load_model(os.path.join(args.demo, run, "model.h5")), x[:640])
        xnnpack_logits = keras_model.predict(x, batch_size=500, verbose=0)
        logits, rows = {}, {}
        for runtime in RUNTIMES:
            runner = TfliteRunner(content, runtime=runtime)
            logits[runtime] = runner(x)
            faq_tf.set_target(keras_model, runtime, pack_int4=has_int4_weights(content))
            keras_logits = keras_model.predict(x, batch_size=500, verbose=0)
            rows[runtime] = compare(logits[runtime], keras_logits, y, runner.output_scale)
            rows[runtime]["top1"] = float(np.mean(np.argmax(logits[runtime], 1) == y) * 100)
            rows[runtime]["identical_rows"] = float(np.mean(np.all(logits[runtime] == keras_logits, axis=1)) * 100)
            single = compare(logits[runtime], xnnpack_logits, y, runner.output_scale)
            rows[runtime]["identical_with_xnnpack_arithmetic"] = single["identical"]
            r = rows[runtime]
            lines.append(
                f"| {name} | {runtime} | {r['top1']:.2f} | {r['top1_agreement']:.2f} | {r['identical']:.2f} "
                f"| {r['max_logit_diff_steps']:.0f} | {single['identical']:.2f} |"
            )
        faq_tf.set_target(keras_model, "xnnpack")
        same = float(np.mean(np.all(logits["builtin"] == logits["micro"], axis=1)) * 100)
        result["files"][name] = {
            "runtimes": rows,
            "builtin_vs_micro_identical": same,
            "micro": dataclasses.asdict(micro_report(content)),
        }
    lines += ["", "| file | builtin vs TFLM: images with all logits identical (%) |", "|---|---|"]
    lines += [f"| {n} | {r['builtin_vs_micro_identical']:.2f} |" for n, r in result["files"].items() if "runtimes" in r]
    reference = os.path.join(args.demo, "tflite", f"{REFERENCE_FILE}.tflite")
    if os.path.exists(reference):
        with open(reference, "rb") as f:
            result["files"][f"{REFERENCE_FILE} (TFLite's own)"] = {"micro": dataclasses.asdict(micro_report(f.read()))}
    lines += [
        "",
        "| file | flash (bytes) | weights | biases | TFLM arena (bytes) | largest activation |",
        "|---|---|---|---|---|---|",
    ]
    for n, r in result["files"].items():
        m = r["micro"]
        lines.append(
            f"| {n} | {m['file_bytes']:,d} | {m['weight_bytes']:,d} | {m['bias_bytes']:,d} | {m['arena_bytes']:,d} "
            f"| {m['largest_activation_bytes']:,d} |"
        )
    write_report(args.out, "runtimes", result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
