"""Export fidelity and size on keras.applications models (random weights, small inputs).

For ResNet50, MobileNetV2, InceptionV3 and DenseNet121 at w8a8 and w4a4: quantize with
calibration on random images, convert to a fully integer .tflite (int8 I/O, batch 1), and
compare the integer model's logits (the classifier without its softmax) with the Keras
model's on other random images, in output quantization steps, on LiteRT's default CPU
path (XNNPACK). Sizes are against the float .tflite of the same network; w4a4 is also
converted with --pack_int4.

Random weights: Keras's initializers, plus (default, --bn_init=random) BatchNormalization
statistics drawn at random as a trained network has them. With Keras's BN defaults
(gamma 1, mean 0, variance 1) every BN of a given width has the same multipliers, and the
TFLite converter merges equal constants: two of DenseNet121's standalone BNs then share
one kernel and lose its FakeQuant (the exporter refuses that model, naming the layers).

With --latency, each model is also built at its ImageNet size (224x224, InceptionV3
299x299, 1000 classes) and its fp32, w8a8, w4a4 (also packed INT4) and TFLite
post-training int8 (the reference) .tflite files are timed side by side
(batch 1, 1 thread, `export_tflite.evaluate.time_invoke`) on both LiteRT CPU paths;
those rows also give the sizes at deployment size.

Usage: python -m benchmarks.export_applications [--images 32] [--bn_init random|keras]
         [--latency [--latency_rounds 5] [--latency_only]] [--out runs/export_applications.json]
"""

import argparse
import json
import time

import numpy as np

import faq_tf
from benchmarks.common import write_json
from benchmarks.export_fidelity import tflite_ptq_int8
from export_tflite import ExportError, convert, quantize_float_outputs, verify
from export_tflite.evaluate import TfliteRunner, compare, time_invoke
from faq_tf.compat import keras, tf

APPS = {"ResNet50": 32, "MobileNetV2": 32, "InceptionV3": 75, "DenseNet121": 32}
FULL_SIZE = {"ResNet50": 224, "MobileNetV2": 224, "InceptionV3": 299, "DenseNet121": 224}


def _random_bn(model: keras.Model, rng: np.random.RandomState) -> None:
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.beta.shape[0]
            gamma = [rng.uniform(0.5, 1.5, n)] if layer.scale else []
            layer.set_weights(gamma + [rng.normal(0, 0.2, n), rng.normal(0, 0.2, n), rng.uniform(0.5, 2.0, n)])


def latency_row(name: str, rounds: int, bn_init: str = "random") -> dict:
    """Sizes and batch-1, 1-thread latency of `name` at its ImageNet size, fp32 vs w8a8/w4a4."""
    size = FULL_SIZE[name]
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=1000)
    rng = np.random.RandomState(0)
    if bn_init == "random":
        _random_bn(model, rng)
    calib = rng.rand(8, size, size, 3).astype("float32")
    files = {"fp32": tf.lite.TFLiteConverter.from_keras_model(model).convert()}
    files["ptq_int8"] = tflite_ptq_int8(model, [calib], rows_per_batch=len(calib))  # the reference int8
    for precision in ("w8a8", "w4a4"):
        qat = faq_tf.quantize_model(model, precision, calib, batch_size=4, verbose=False)
        files[precision] = convert(qat, representative_data=calib)
        if precision == "w4a4":
            files["w4a4+int4"] = convert(qat, representative_data=calib, pack_int4=True)
    row = {"model": name, "input": size, "classes": 1000, "bytes": {k: len(v) for k, v in files.items()}}
    row["size_vs_fp32"] = {k: round(len(v) / len(files["fp32"]), 4) for k, v in files.items() if k != "fp32"}
    for runtime in ("xnnpack", "builtin"):
        times = time_invoke(files, runtime, rounds=rounds, runs=2)
        row[f"latency_ms_{runtime}"] = {k: round(t * 1000, 2) for k, t in times.items()}
        row[f"latency_vs_fp32_{runtime}"] = {k: round(t / times["fp32"], 3) for k, t in times.items() if k != "fp32"}
    keras.backend.clear_session()
    return row


def latency_markdown(rows: list[dict]) -> str:
    """The --latency rows as a Markdown table."""
    lines = [
        "| model (input) | w8a8 size | w4a4 packed INT4 size | fp32 ms (XNNPACK / builtin) "
        "| w8a8 vs fp32 (XNNPACK / builtin) | w4a4 vs fp32 (XNNPACK / builtin) "
        "| TFLite PTQ int8 vs fp32 (XNNPACK / builtin) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        x, b = r["latency_vs_fp32_xnnpack"], r["latency_vs_fp32_builtin"]
        lines.append(
            f"| {r['model']} ({r['input']}x{r['input']}) | {r['size_vs_fp32']['w8a8']:.3f}x "
            f"| {r['size_vs_fp32']['w4a4+int4']:.3f}x "
            f"| {r['latency_ms_xnnpack']['fp32']:.1f} / {r['latency_ms_builtin']['fp32']:.1f} "
            f"| {x['w8a8']:.3f}x / {b['w8a8']:.3f}x | {x['w4a4']:.3f}x / {b['w4a4']:.3f}x "
            f"| {x['ptq_int8']:.3f}x / {b['ptq_int8']:.3f}x |"
        )
    return "\n".join(lines)


def fidelity_markdown(rows: list[dict]) -> str:
    """The fidelity rows as a Markdown table."""
    lines = [
        "| model | precision | logits within 1 step (%) | identical (%) | max diff (steps) | top-1 agreement (%) "
        "| size vs fp32 | packed INT4 | fully integer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['precision']} | - | - | - | - | - | - | no: {r['error'][:150]} |")
            continue
        packed = f"{r['packed_size_vs_fp32']:.3f}x" if "packed_size_vs_fp32" in r else ""
        lines.append(
            f"| {r['model']} ({r['input']}x{r['input']}) | {r['precision']} | {r['within_one_step']:.2f} "
            f"| {r['identical']:.2f} | {r['max_logit_diff_steps']:.0f} | {r['top1_agreement']:.1f} "
            f"| {r['size_vs_fp32']:.3f}x | {packed} | {'yes' if r['fully_integer'] else 'no'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--out", default="runs/export_applications.json")
    parser.add_argument("--models", nargs="*", default=list(APPS))
    parser.add_argument("--bn_init", choices=["random", "keras"], default="random")
    parser.add_argument("--latency", action="store_true", help="also time each model at its ImageNet size")
    parser.add_argument("--latency_rounds", type=int, default=5)
    parser.add_argument("--latency_only", action="store_true", help="skip the fidelity rows")
    args = parser.parse_args()
    rows = []
    latency = []
    if args.latency:
        for name in args.models:
            latency.append(latency_row(name, args.latency_rounds, args.bn_init))
            print(json.dumps(latency[-1]), flush=True)
    for name in [] if args.latency_only else args.models:
        size = APPS[name]
        keras.utils.set_random_seed(0)
        # Logits (no softmax), so that the comparison is on the values the softmax would squash.
        model = getattr(keras.applications, name)(
            weights=None, input_shape=(size, size, 3), classes=10, classifier_activation=None
        )
        rng = np.random.RandomState(0)
        if args.bn_init == "random":
            _random_bn(model, rng)
        fp32_bytes = len(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        calib = rng.rand(32, size, size, 3).astype("float32")
        test = rng.rand(args.images, size, size, 3).astype("float32")
        for precision in ("w8a8", "w4a4"):
            start = time.perf_counter()
            qat = faq_tf.quantize_model(model, precision, calib, batch_size=8, verbose=False)
            row = {"model": name, "precision": precision, "input": size, "bn_init": args.bn_init}
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
            row["size_vs_fp32"] = round(len(content) / fp32_bytes, 4)
            if precision != "w8a8":
                row["packed_size_vs_fp32"] = round(
                    len(convert(qat, representative_data=calib, pack_int4=True)) / fp32_bytes, 4
                )
            row["seconds"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
        keras.backend.clear_session()
    write_json(args.out, {"fidelity": rows, "latency": latency})
    if latency:
        print("\n" + latency_markdown(latency))
    if rows:
        print("\n" + fidelity_markdown(rows))


if __name__ == "__main__":
    main()
