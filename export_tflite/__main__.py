"""python -m export_tflite --model_dir=DIR | --model=FILE --output=model.tflite [--target=xnnpack|reference|micro]

Converts a faq_tf model (a faq-train model_dir, or a .h5/SavedModel) into a fully integer
.tflite model for a deployment target (`faq_tf.targets`: xnnpack, LiteRT's default CPU path;
reference, LiteRT's builtin kernels; micro, TFLM), verifies it, and prints the verifier's
summary. Representative data for float outputs (w4a4 logits) comes from the run's dataset
(config.json) or --dataset; on its first batch the file is then run on the target's runtime
and its outputs compared with the Keras model's, which follow that runtime's arithmetic.

The file carries standard TFLite metadata (`export_tflite.metadata`; --no_metadata leaves it
out): the class names (the run's labels.txt, or --labels), the input normalization of the
run's preprocessing (or --model_name's; none for a --model file without it) and a description.

Exit codes: 0 written and fully integer; 1 written with --no_check but not fully integer
(`python -m export_tflite.verify` lists why); 2 a user error (one line on stderr, nothing
written): a missing or damaged model, an unknown dataset or model name, an unwritable
--output, a model that is not quantized or does not convert fully integer, a missing or
empty labels file or one with a name count other than the model's outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from export_tflite.cli import EXIT_OK, EXIT_VIOLATIONS, UsageError, fail
from faq_tf.targets import TARGETS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export_tflite", description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model_dir", help="a faq-train output folder (uses model.h5 and config.json)")
    src.add_argument("--model", help="a faq_tf model file (.h5) or SavedModel folder")
    parser.add_argument("--output", required=True, help="where to write the .tflite")
    parser.add_argument("--io_dtype", default="int8", choices=["int8", "uint8", "float32"])
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--pack_int4", action="store_true", help="store 4-bit weights as packed INT4")
    parser.add_argument(
        "--target",
        default="xnnpack",
        choices=list(TARGETS),
        help="the runtime whose arithmetic the Keras model reproduces: LiteRT's default CPU path (xnnpack), "
        "its builtin kernels (reference) or TFLM (micro; also checks TFLM's ops)",
    )
    parser.add_argument(
        "--tensor_names",
        default="short",
        choices=["short", "full", "none"],
        help="tensor names: <layer>/<op> (short), the converter's fused-op names (full), or I/O only (none)",
    )
    parser.add_argument("--dataset", default=None, help="for representative data (default: the run's dataset)")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument(
        "--model_name",
        default=None,
        help="model name for the preprocessing, of the representative data and the metadata (default: the run's)",
    )
    parser.add_argument("--no_check", action="store_true", help="write the file even if it is not fully integer")
    parser.add_argument(
        "--labels",
        default=None,
        help="class names, one per line in output order, for the metadata (default: the model_dir's labels.txt)",
    )
    parser.add_argument(
        "--no_metadata", action="store_true", help="write no TFLite metadata (labels, input normalization)"
    )
    return parser


def _run_config(model_dir: str) -> tuple[str, dict]:
    """model.h5 and the parsed config.json ({} if absent) of a faq-train output folder."""
    path = os.path.join(model_dir, "model.h5")
    if not os.path.isfile(path):
        raise UsageError(
            f"--model_dir={model_dir} has no model.h5: give a faq-train output folder, or a model file with --model"
        )
    cfg_path = os.path.join(model_dir, "config.json")
    if not os.path.exists(cfg_path):
        return path, {}
    try:
        with open(cfg_path) as f:
            return path, json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {cfg_path}: {e}; fix or remove it and pass --dataset") from e


def _preprocessing(args: argparse.Namespace, config: dict):
    """The model's input preprocessing: --model_name's, or the run's; None: the model's own, once loaded."""
    from faq_tf.models import MODELS, PREPROCESSING

    name = args.model_name or config.get("model", "small_resnet")
    chosen = config.get("preprocess", "auto")
    if not args.model_name and (chosen != "auto" or str(config.get("pretrained", "")).endswith(".keras")):
        # The run's own choice; a user's .keras model: decided from the model once it is loaded.
        return PREPROCESSING.get(chosen)
    if name not in MODELS:
        raise UsageError(
            f"--model_name={name!r} is unknown (it selects the preprocessing): use one of {sorted(MODELS)}"
        )
    return MODELS[name].preprocess


def _representative_source(args: argparse.Namespace, config: dict):
    """The dataset of the representative data: --dataset or the run's, or None."""
    from faq_tf.data.datasets import get_source

    dataset = args.dataset or config.get("dataset")
    if not dataset:
        return None
    try:
        return get_source(dataset, args.data_dir or config.get("data_dir"))
    except (OSError, ValueError) as e:
        given = f"--dataset={dataset}" if args.dataset else f"the run's dataset {dataset!r} (config.json; or --dataset)"
        raise UsageError(f"{given}: {e}") from e


def _labels(args: argparse.Namespace) -> tuple[tuple[str, ...] | None, str]:
    """The class names for the metadata (--labels, or the model_dir's labels.txt, or None) and where they are from."""
    from export_tflite.metadata import parse_labels

    if args.labels:
        path, name = args.labels, f"--labels={args.labels}"
    elif args.model_dir and os.path.isfile(os.path.join(args.model_dir, "labels.txt")):
        path = name = os.path.join(args.model_dir, "labels.txt")
    else:
        return None, ""
    try:
        with open(path, encoding="utf-8") as f:
            return parse_labels(f.read()), name
    except OSError as e:
        raise UsageError(f"cannot read {name}: {e.strerror or e}; give a text file with one class name per line") from e
    except UnicodeDecodeError as e:
        raise UsageError(f"{name} is not UTF-8 text: {e}; give a text file with one class name per line") from e
    except ValueError as e:
        raise UsageError(f"{name}: {e}") from e


def _metadata(model, labels, preprocess, config: dict, io_dtype: str):
    """The TFLite metadata of the exported model; None for a model that is not a one-input image classifier.

    `preprocess` None: unknown (a model file without --model_name), no normalization is written.
    """
    from export_tflite.metadata import ImageClassifierMetadata, normalization_of
    from faq_tf.input_scaling import folded_input_scaling

    if not isinstance(model.output_shape, tuple) or len(model.input_shape) != 4:
        return None
    normalization = normalization_of(preprocess, int(model.input_shape[-1])) if preprocess else None
    mean, std = normalization or (None, None)  # None: also not per-channel affine (Keras' "caffe" mode)
    pretrained = str(config.get("pretrained", ""))
    trained = os.path.basename(pretrained) if pretrained.endswith(".keras") else config.get("model", model.name)
    if config.get("precision"):
        trained += f" at {config['precision']}"
    description = (
        f"{trained}, trained with faq_tf (FAQ quantization-aware training) and exported to integer TFLite "
        f"({io_dtype} input and output)"
    )
    scaling = folded_input_scaling(model)
    if scaling is not None:
        description += f"; the model's {scaling.describe()}: it takes pixels"
    return ImageClassifierMetadata(model.name, mean, std, description=description, labels=labels)


def run(args: argparse.Namespace) -> int:
    """Converts, writes and verifies; user errors raise `UsageError`."""
    from export_tflite.cli import check_output_path, export_error_line, load_keras_model, write_output

    path, config = _run_config(args.model_dir) if args.model_dir else (args.model, {})
    if args.batch_size < 1:
        raise UsageError(f"--batch_size must be a positive integer, got {args.batch_size}")
    if args.labels and args.no_metadata:
        raise UsageError("--labels has no effect with --no_metadata: drop one of them")
    check_output_path(args.output, "--output")  # before a conversion that would be lost
    labels, labels_from = (None, "") if args.no_metadata else _labels(args)  # all before loading the model
    preprocess = _preprocessing(args, config)
    source = _representative_source(args, config)

    from export_tflite.converter import ExportError, convert
    from export_tflite.verify import verify
    from faq_tf.data.datasets import make_input
    from faq_tf.input_scaling import folded_input_scaling
    from faq_tf.models import own_model_preprocess

    model = load_keras_model(path, "--model_dir" if args.model_dir else "--model")
    if preprocess is None or (folded_input_scaling(model) is not None and not args.model_name):
        preprocess = own_model_preprocess(model)  # a folded Rescaling / Normalization: pixels
    outputs = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None
    if labels is not None and len(labels) != outputs:
        raise UsageError(
            f"{labels_from} has {len(labels)} class names but {path} has {outputs} outputs: "
            "give one name per output, one per line"
        )
    # A model file's preprocessing is a guess (small_resnet's) unless --model_name says it, or the
    # model folded its own Rescaling / Normalization (it takes pixels): else not recorded.
    known = preprocess if args.model_name or config or folded_input_scaling(model) else None
    metadata = None if args.no_metadata else _metadata(model, labels, known, config, args.io_dtype)
    try:
        representative = None
        if source is not None:
            data = make_input(source, "train", 64, tuple(model.input_shape[1:]), preprocess)
            representative = data.map(lambda x, y: x).take(5)
        content = convert(
            model,
            args.io_dtype,
            args.batch_size,
            representative,
            check=not args.no_check,
            pack_int4=args.pack_int4,
            tensor_names=args.tensor_names,
            metadata=metadata,
            target=args.target,
        )
    except ExportError as e:
        raise UsageError(f"{path}: {export_error_line(e, args.output)}") from e
    except (OSError, ValueError) as e:  # e.g. representative data that does not fit the model
        raise UsageError(f"{path}: {e}") from e
    write_output(args.output, "--output", content)
    report = verify(content)
    print(f"wrote {args.output} ({len(content)} bytes): {len(report.ops)} ops, fully integer: {report.ok}")
    if metadata is not None:
        print(f"metadata: {metadata.summary()}" + (f" (labels from {labels_from})" if labels_from else ""))
        if known is None:
            print("  give --model_name to record the input normalization of its preprocessing")
        elif metadata.mean is None:
            print("  the preprocessing is not (pixel - mean) / std per channel (Keras' caffe mode swaps RGB to BGR)")
    elif not args.no_metadata:
        print("metadata: none (written for models with one image input and one output)")
    if representative is not None:
        print(_runtime_check(model, content, representative, args))
    else:
        print(f"check on the {args.target} runtime: skipped (no representative data: give --dataset)")
    return EXIT_OK if report.ok else EXIT_VIOLATIONS


def _runtime_check(model, content: bytes, representative, args: argparse.Namespace) -> str:
    """The line the binary prints on the file's outputs on its target's runtime, against the Keras model's."""
    from export_tflite.converter import check_on_runtime
    from faq_tf.outputs import quantize_float_outputs
    from faq_tf.targets import RUNTIME_OF, as_target

    runtime = RUNTIME_OF[as_target(args.target)]
    x = next(iter(representative)).numpy()
    reference = quantize_float_outputs(model, representative)  # the model itself when its outputs are quantized
    try:
        same, not_emulated = check_on_runtime(reference, content, x, args.target, args.pack_int4)
    except ImportError as e:
        return f"check on {runtime}: skipped ({e})"
    except (ValueError, RuntimeError) as e:
        return f"WARNING: check on {runtime}: the runtime cannot run the file: {e}"
    line = f"check on {runtime}: outputs identical to the Keras model's for {same} of {len(x)} images"
    if same < len(x):
        line = "WARNING: " + line
        if not_emulated:
            line += f" (faq_tf does not reproduce the arithmetic of {sorted(not_emulated)} on {args.target})"
    return line


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UsageError as e:
        return fail(parser.prog, e)


if __name__ == "__main__":
    sys.exit(main())
