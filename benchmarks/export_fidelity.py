"""Integer export of the Fashion-MNIST FAQ models: fidelity, size and latency vs fp32.

Reads the faq-train outputs of flags/fashion_mnist/{fp32,w8a8,w4a4}.flags, exports each
FAQ model with `export_tflite.convert` (int8 I/O, batch 1), evaluates the integer model
with the LiteRT interpreter on the 10k test images against its Keras model, and times
batch-1 single-thread inference of every .tflite interleaved with the fp32 .tflite.

Usage: python benchmarks/export_fidelity.py [--runs runs/fashion_mnist] [--out runs/export]
"""

import argparse
import json
import os
import statistics
import time

import numpy as np

import faq_tf
from export_tflite import convert, quantize_float_outputs
from export_tflite.evaluate import TfliteRunner, compare, evaluate_arrays
from faq_tf.compat import tf
from faq_tf.data.datasets import get_source, make_input
from faq_tf.models import MODELS


def _arrays(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", default="runs/fashion_mnist")
    parser.add_argument("--out", default="runs/export")
    parser.add_argument("--latency_rounds", type=int, default=20)
    parser.add_argument("--latency_runs", type=int, default=50)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    source = get_source("fashion_mnist")
    pre = MODELS["small_resnet"].preprocess
    x_test, y_test = _arrays(make_input(source, "test", 500, (28, 28, 1), pre))
    rep = make_input(source, "train", 128, (28, 28, 1), pre).map(lambda x, y: x).take(5)

    fp32 = faq_tf.load_model(os.path.join(args.runs, "fp32", "model.h5"))
    files = {"fp32": tf.lite.TFLiteConverter.from_keras_model(fp32).convert()}
    rows = {"fp32": {"keras_top1": float(np.mean(fp32.predict(x_test, 500, verbose=0).argmax(1) == y_test) * 100)}}
    for precision in ("w8a8", "w4a4"):
        qat = faq_tf.load_model(os.path.join(args.runs, precision, "model.h5"))
        variants = {precision: False} if precision == "w8a8" else {precision: False, f"{precision}+int4": True}
        reference = quantize_float_outputs(qat, rep)
        keras_logits = reference.predict(x_test, 500, verbose=0)
        qat_top1 = float(np.mean(qat.predict(x_test, 500, verbose=0).argmax(1) == y_test) * 100)
        for name, pack in variants.items():
            content = convert(qat, representative_data=rep, pack_int4=pack)
            files[name] = content
            runner = TfliteRunner(content)
            result, logits = evaluate_arrays(runner, x_test, y_test)
            result.update(compare(logits, keras_logits, y_test, runner.output_scale))
            result["keras_top1_float_logits"] = qat_top1
            rows[name] = result
    for name, content in files.items():
        path = os.path.join(args.out, f"{name}.tflite")
        with open(path, "wb") as f:
            f.write(content)
        rows[name]["bytes"] = len(content)
        rows[name]["size_vs_fp32"] = round(len(content) / len(files["fp32"]), 3)

    runners = {name: TfliteRunner(content, threads=1) for name, content in files.items()}
    one = x_test[:1]
    times = {name: [] for name in runners}
    for _ in range(args.latency_rounds):  # interleaved, so noise hits every model alike
        for name, runner in runners.items():
            start = time.perf_counter()
            for _ in range(args.latency_runs):
                runner(one)
            times[name].append((time.perf_counter() - start) / args.latency_runs)
    base = statistics.median(times["fp32"])
    for name in runners:
        rows[name]["latency_ms"] = round(statistics.median(times[name]) * 1000, 4)
        rows[name]["latency_vs_fp32"] = round(statistics.median(times[name]) / base, 3)
    with open(os.path.join(args.out, "export_fidelity.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print(json.dumps(rows, indent=1))
    print(
        "\n| model | Keras top-1 | TFLite top-1 | top-1 agreement | logits within 1 step | max diff (steps) "
        "| size vs fp32 | latency vs fp32 |\n|---|---|---|---|---|---|---|---|"
    )
    for name, r in rows.items():
        print(
            f"| {name} | {r.get('keras_top1', '-'):.2f} | {r.get('top1', r['keras_top1']):.2f} | "
            f"{r.get('top1_agreement', 100.0):.2f} | {r.get('within_one_step', 100.0):.2f} | "
            f"{r.get('max_logit_diff_steps', 0):.0f} | {r['size_vs_fp32']} | {r['latency_vs_fp32']} |"
        )


if __name__ == "__main__":
    main()
