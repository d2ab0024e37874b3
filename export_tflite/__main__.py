"""python -m export_tflite --model_dir=DIR | --model=FILE --output=model.tflite

Converts a faq_tf model (a faq-train model_dir, or a .h5/SavedModel) into a fully integer
.tflite model, verifies it, and prints the verifier's summary. Representative data for
float outputs (w4a4 logits) comes from the run's dataset (config.json) or --dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export_tflite", description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model_dir", help="a faq-train output folder (uses model.h5 and config.json)")
    src.add_argument("--model", help="a faq_tf model file (.h5) or SavedModel folder")
    parser.add_argument("--output", required=True, help="where to write the .tflite")
    parser.add_argument("--io_dtype", default="int8", choices=["int8", "uint8", "float32"])
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--pack_int4", action="store_true", help="store 4-bit weights as packed INT4")
    parser.add_argument(
        "--tensor_names",
        default="short",
        choices=["short", "full", "none"],
        help="tensor names: <layer>/<op> (short), the converter's fused-op names (full), or I/O only (none)",
    )
    parser.add_argument("--dataset", default=None, help="for representative data (default: the run's dataset)")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--model_name", default=None, help="model name for preprocessing (default: the run's)")
    args = parser.parse_args(argv)

    import faq_tf
    from export_tflite.converter import ExportError, convert
    from export_tflite.verify import verify

    config = {}
    path = args.model
    if args.model_dir:
        path = os.path.join(args.model_dir, "model.h5")
        cfg_path = os.path.join(args.model_dir, "config.json")
        if os.path.exists(cfg_path):
            with open(cfg_path) as f:
                config = json.load(f)
    try:
        model = faq_tf.load_model(path)
        dataset = args.dataset or config.get("dataset")
        representative = None
        if dataset:
            from faq_tf.data.datasets import get_source, make_input
            from faq_tf.models import MODELS

            name = args.model_name or config.get("model", "small_resnet")
            source = get_source(dataset, args.data_dir or config.get("data_dir"))
            shape = tuple(model.input_shape[1:])
            representative = make_input(source, "train", 64, shape, MODELS[name].preprocess).map(lambda x, y: x).take(5)
        content = convert(
            model,
            args.io_dtype,
            args.batch_size,
            representative,
            pack_int4=args.pack_int4,
            tensor_names=args.tensor_names,
        )
    except (ExportError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with open(args.output, "wb") as f:
        f.write(content)
    report = verify(content)
    print(f"wrote {args.output} ({len(content)} bytes): {len(report.ops)} ops, fully integer: {report.ok}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
