"""Keras's transfer-learning model, preprocessing inside, exported fully integer.

Usage: python -m benchmarks.transfer_export [--out runs/transfer_export] [--size 96] [--images 16]

`Sequential([Input((96, 96, 3)), Rescaling(1/127.5, offset=-1), MobileNetV2(include_top=False),
GlobalAveragePooling2D(), Dropout(0.2), Dense(5)])` (random weights and BN statistics; no
download), quantized at w8a8 and w4a4 with its Rescaling folded into the first conv
(`faq_tf.input_scaling`), exported with uint8 and int8 input, and run on LiteRT. Writes
JSON and a Markdown table: file size, the input's quantization, the ops, and whether the
logits equal the Keras model's on seeded random pixel images.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import faq_tf
from benchmarks.common import write_report
from export_tflite import convert, quantize_float_outputs, read_model
from export_tflite.evaluate import TfliteRunner
from faq_tf import graph
from faq_tf.compat import keras

L = keras.layers


def transfer_model(size: int, seed: int = 0, alpha: float = 1.0) -> keras.Model:
    """The tutorial's model with random weights and non-trivial BN statistics (alpha: MobileNetV2's width)."""
    app = keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3), include_top=False, alpha=alpha)
    model = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            L.Rescaling(1 / 127.5, offset=-1),
            app,
            L.GlobalAveragePooling2D(),
            L.Dropout(0.2),
            L.Dense(5),
        ],
        name="transfer",
    )
    rng = np.random.RandomState(seed)
    for layer in graph.iter_layers(model):
        if isinstance(layer, L.BatchNormalization):
            n = layer.beta.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 2, n), rng.normal(0, 0.3, n), rng.normal(0, 0.3, n), rng.uniform(0.5, 2, n)]
            )
    return model


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transfer_export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/transfer_export")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args(argv)
    rng = np.random.RandomState(0)
    model = transfer_model(args.size)
    calibration = rng.randint(0, 256, (64, args.size, args.size, 3)).astype("float32")
    test = rng.randint(0, 256, (args.images, args.size, args.size, 3)).astype("float32")
    rows = []
    for precision in ("w8a8", "w4a4"):
        qat = faq_tf.quantize_model(model, precision, calibration, verbose=False)
        reference = quantize_float_outputs(qat, calibration)  # w4a4: the logits' 8-bit range
        for io_dtype in ("uint8", "int8"):
            start = time.perf_counter()
            content = convert(reference, io_dtype=io_dtype)  # raises unless fully integer
            seconds = time.perf_counter() - start
            runner = TfliteRunner(content)
            scale, zero = runner.input["quantization"]
            identical = float(np.mean(runner(test) == reference.predict(test, verbose=0)) * 100)
            rows.append(
                {
                    "precision": precision,
                    "io_dtype": io_dtype,
                    "bytes": len(content),
                    "input_scale": float(scale),
                    "input_zero_point": int(zero),
                    "ops": sorted({op.name for op in read_model(content).ops}),
                    "identical_logits_percent": identical,
                    "convert_seconds": round(seconds, 1),
                }
            )
    table = [
        f"Transfer model (Rescaling + MobileNetV2 at {args.size}x{args.size}, Dense(5)), {args.images} random images",
        "",
        "| precision | input | file bytes | input scale, zero point | identical logits | ops |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        table.append(
            f"| {r['precision']} | {r['io_dtype']} | {r['bytes']:,} | {r['input_scale']:g}, {r['input_zero_point']} "
            f"| {r['identical_logits_percent']:.2f}% | {', '.join(r['ops'])} |"
        )
    result = {"size": args.size, "images": args.images, "rows": rows}
    write_report(args.out, "transfer_export", result, "\n".join(table))
    return result


if __name__ == "__main__":
    main()
