"""Integer export of the Fashion-MNIST FAQ models: fidelity, size and latency vs fp32.

Reads the faq-train outputs of flags/fashion_mnist/{fp32,w8a8,w4a4}.flags, exports each
FAQ model with `export_tflite.convert` (int8 I/O, batch 1; 4-bit models also with packed
INT4 weights), evaluates the integer model with the LiteRT interpreter on the 10k test
images against its Keras model, and times batch-1 single-thread `invoke()` of every
.tflite interleaved with the fp32 .tflite, on both LiteRT CPU paths (XNNPACK and the
builtin kernels). TFLite's own post-training int8 of the fp32 model is a reference row.

Usage: python -m benchmarks.export_fidelity [--runs runs/fashion_mnist] [--out runs/export]
"""

import argparse
import json
import os
from collections.abc import Callable

import numpy as np

import faq_tf
from benchmarks.common import fashion_mnist_arrays, fashion_mnist_calibration, keras_top1, write_json
from export_tflite import convert, quantize_float_outputs, verify
from export_tflite.evaluate import TfliteRunner, compare, evaluate_arrays, time_invoke
from faq_tf.compat import tf
from faq_tf.data import get_source


def tflite_ptq_int8(model, batches, rows_per_batch: int = 32) -> bytes:
    """TFLite's own post-training full-integer quantization (int8 I/O), the reference point."""

    def representative():
        for batch in batches:
            for row in np.asarray(batch)[:rows_per_batch]:
                yield [row[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def measure(
    runs: str,
    out: str,
    precisions: tuple[str, ...] = ("w8a8", "w4a4"),
    latency_rounds: int = 20,
    latency_runs: int = 50,
    log: Callable[[str], None] = print,
    data_dir: str | None = None,
) -> dict:
    """Exports, verifies, evaluates and times the faq-train runs under `runs`.

    Args:
      runs: a folder with fp32/model.h5 and PRECISION/model.h5 for each precision.
      out: where the .tflite files and export_fidelity.json go.
      precisions: the FAQ runs to export (4-bit ones also get a --pack_int4 variant).
      latency_rounds, latency_runs: batch-1 timing, interleaved rounds of N invocations.
      log: progress messages.
      data_dir: the Fashion-MNIST folder (default: Debian's, else TFDS).

    Returns:
      One row per model: Keras and TFLite top-1, agreement, size and latency vs fp32.
    """
    os.makedirs(out, exist_ok=True)
    source = get_source("fashion_mnist", data_dir)
    x_test, y_test = fashion_mnist_arrays(source, "test")
    rep = fashion_mnist_calibration(source)

    fp32 = faq_tf.load_model(os.path.join(runs, "fp32", "model.h5"))
    files = {"fp32": tf.lite.TFLiteConverter.from_keras_model(fp32).convert()}
    fp32_top1 = keras_top1(fp32, x_test, y_test)
    rows = {"fp32": {"keras_top1": fp32_top1}}
    log("[export] TFLite's own post-training int8 of the fp32 model, for reference")
    files["ptq_int8"] = tflite_ptq_int8(fp32, [b.numpy() for b in rep])
    rows["ptq_int8"], _ = evaluate_arrays(TfliteRunner(files["ptq_int8"]), x_test, y_test)
    rows["ptq_int8"]["keras_top1"] = fp32_top1
    for precision in precisions:
        qat = faq_tf.load_model(os.path.join(runs, precision, "model.h5"))
        low_bit = precision != "w8a8"
        variants = {precision: False, f"{precision}+int4": True} if low_bit else {precision: False}
        faq_tf.snap_to_accumulator_grid(qat)  # what faq-train does before saving (older runs may predate it)
        reference = quantize_float_outputs(qat, rep)
        qat_top1 = keras_top1(qat, x_test, y_test)
        for name, pack in variants.items():
            log(f"[export] {name}: converting, verifying, evaluating {len(x_test)} test images with LiteRT")
            content = convert(qat, representative_data=rep, pack_int4=pack)
            # XNNPACK runs a packed file's INT4 convolutions on LiteRT's builtin kernels: their arithmetic.
            faq_tf.set_target(reference, "xnnpack", pack_int4=pack)
            keras_logits = reference.predict(x_test, 500, verbose=0)
            report = verify(content, edgetpu=not pack, sample_data=x_test[:16])
            files[name] = content
            runner = TfliteRunner(content)
            result, logits = evaluate_arrays(runner, x_test, y_test)
            result.update(compare(logits, keras_logits, y_test, runner.output_scale))
            result["keras_top1_float_logits"] = qat_top1
            result["verified"] = report.ok
            result["edgetpu_rules"] = "checked" if not pack else "not applicable (INT4)"
            rows[name] = result
    for name, content in files.items():
        path = os.path.join(out, f"{name}.tflite")
        with open(path, "wb") as f:
            f.write(content)
        rows[name]["file"] = path
        rows[name]["bytes"] = len(content)
        rows[name]["size_vs_fp32"] = round(len(content) / len(files["fp32"]), 3)

    # Both LiteRT CPU paths: XNNPACK (the default; fp32 is fast there too) and the builtin kernels.
    for runtime, suffix in (("xnnpack", ""), ("builtin", "_builtin")):
        log(f"[export] timing batch-1, 1-thread invoke ({runtime}): {latency_rounds} interleaved rounds")
        times = time_invoke(files, runtime, rounds=latency_rounds, runs=latency_runs)
        for name, seconds in times.items():
            rows[name][f"latency_ms{suffix}"] = round(seconds * 1000, 4)
            rows[name][f"latency_vs_fp32{suffix}"] = round(seconds / times["fp32"], 3)
    write_json(os.path.join(out, "export_fidelity.json"), rows)
    return rows


def markdown(rows: dict) -> str:
    """The rows of `measure` as a Markdown table."""
    lines = [
        "| model | Keras top-1 | TFLite top-1 | top-1 agreement | logits within 1 step | max diff (steps) "
        "| size vs fp32 | latency vs fp32 (XNNPACK) | latency vs fp32 (builtin kernels) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(r: dict, key: str, fmt: str = ".2f") -> str:
        return format(r[key], fmt) if key in r else "-"

    for name, r in rows.items():
        lines.append(
            f"| {name} | {cell(r, 'keras_top1')} | {cell(r, 'top1')} | {cell(r, 'top1_agreement')} "
            f"| {cell(r, 'within_one_step')} | {cell(r, 'max_logit_diff_steps', '.0f')} | {r['size_vs_fp32']} "
            f"| {r['latency_vs_fp32']} | {r['latency_vs_fp32_builtin']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/fashion_mnist")
    parser.add_argument("--out", default="runs/export")
    parser.add_argument("--latency_rounds", type=int, default=20)
    parser.add_argument("--latency_runs", type=int, default=50)
    args = parser.parse_args()
    rows = measure(args.runs, args.out, latency_rounds=args.latency_rounds, latency_runs=args.latency_runs)
    print(json.dumps(rows, indent=1))
    print("\n" + markdown(rows))


if __name__ == "__main__":
    main()
