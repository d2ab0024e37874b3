"""Evaluating a .tflite model with the LiteRT interpreter, optionally against its Keras model.

  python -m export_tflite.evaluate --tflite=model.tflite --dataset=fashion_mnist \
      [--model=small_resnet] [--keras_model=runs/fm/model.h5] [--runtime=xnnpack|builtin|micro]
      [--json=out.json] [--plot=confusion.png]

Prints top-1 and top-5 on the test split, per-class top-1 (by class name) and the
confusion matrix (`--plot` draws it); with the Keras model also top-1 agreement, the share
of identical logits and the largest logit difference in output quantization steps. The
Keras model computes with the integer arithmetic of the runtime evaluated
(`faq_tf.set_target`: xnnpack, builtin = the reference target, micro), so a file exported
by faq_tf gives logits identical to its Keras model's on each. Class names are the dataset's; a
.tflite that carries labels in its TFLite metadata (`export_tflite.metadata`) has them
printed too, used as the names when the dataset has none, and a warning when they differ
from the dataset's.

Exit codes: 0 evaluated; 2 a user error (one line on stderr): a missing, empty or damaged
.tflite or Keras model, a missing or unknown dataset, an unknown --model, an unwritable --json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
from absl import logging

__all__ = ["TfliteRunner", "evaluate_arrays", "compare", "time_invoke", "RUNTIMES"]

# "xnnpack": LiteRT's default CPU path (its XNNPACK delegate takes the integer ops it
# supports; convolutions with packed INT4 weights stay on the builtin kernels).
# "builtin": LiteRT's own kernels only. "micro": TensorFlow Lite for Microcontrollers'
# reference kernels (the tflite-micro package; export_tflite.micro). Each rounds as
# `faq_tf.targets` describes; the Keras model follows the one evaluated.
RUNTIMES = ("xnnpack", "builtin", "micro")


class TfliteRunner:
    """Runs a .tflite model on float inputs (quantizing them as the model's input says).

    Args:
      content: .tflite bytes.
      threads: interpreter threads.
      runtime: "xnnpack" (LiteRT's default CPU path), "builtin" or "micro" (TFLM; see `RUNTIMES`).
    """

    def __init__(self, content: bytes, threads: int = 1, runtime: str = "xnnpack"):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.runtime = runtime
        if runtime == "micro":
            from export_tflite.micro import MicroInterpreter

            self.interpreter = MicroInterpreter(content)
        else:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType

            resolver = OpResolverType.AUTO if runtime == "xnnpack" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            self.interpreter = Interpreter(
                model_content=content, num_threads=threads, experimental_op_resolver_type=resolver
            )
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = int(self.input["shape"][0])

    @property
    def output_scale(self) -> float:
        scale = self.output["quantization"][0]
        return float(scale) if scale else 0.0

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if dtype == np.float32:
            return x.astype(np.float32)
        scale, zero = self.input["quantization"]
        info = np.iinfo(dtype)
        # Ties round up, as the Keras model's input FakeQuant does.
        return np.clip(np.floor(x / scale + 0.5) + zero, info.min, info.max).astype(dtype)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Float logits (dequantized) for a batch of float inputs of any size."""
        expected = tuple(self.input["shape"][1:])
        if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"inputs have shape {x.shape}, but the model takes (N,) + {expected}")
        if not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"inputs must be numeric, got dtype {x.dtype}")
        outs = []
        for start in range(0, len(x), self.batch):
            chunk = x[start : start + self.batch]
            pad = self.batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            self.interpreter.set_tensor(self.input["index"], self._quantize(chunk))
            self.interpreter.invoke()
            y = self.interpreter.get_tensor(self.output["index"])
            if self.output["dtype"] != np.float32:
                scale, zero = self.output["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            outs.append(y[: len(y) - pad] if pad else y)
        return np.concatenate(outs)


def time_invoke(
    files: dict[str, bytes], runtime: str = "xnnpack", rounds: int = 20, runs: int = 50, threads: int = 1
) -> dict[str, float]:
    """Median seconds of one `invoke()` for each model, timed side by side.

    Each model's input is set once (zeros of its dtype) and only the interpreter's
    invoke is timed, as LiteRT's benchmark_model does: the Python-side quantization and
    copies of `TfliteRunner.__call__` are not the model's time. Rounds interleave the
    models, so machine noise hits all of them alike; compare ratios from one call.

    Args:
      files: name -> .tflite bytes.
      runtime: "xnnpack" or "builtin" (see `RUNTIMES`).
      rounds: interleaved rounds; each gives one mean per model, the median is returned.
      runs: invocations per model per round.
      threads: interpreter threads.
    """
    runners = {name: TfliteRunner(content, threads=threads, runtime=runtime) for name, content in files.items()}
    for runner in runners.values():
        runner.interpreter.set_tensor(runner.input["index"], np.zeros(runner.input["shape"], runner.input["dtype"]))
        runner.interpreter.invoke()  # warm-up: XNNPACK packs its weights on the first run
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            invoke = runner.interpreter.invoke
            start = time.perf_counter()
            for _ in range(runs):
                invoke()
            times[name].append((time.perf_counter() - start) / runs)
    return {name: statistics.median(t) for name, t in times.items()}


def _topk(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    # Stable: equal (quantized) logits rank by class index, as np.argmax and Keras's
    # accuracy metrics break ties, so top-1 here is the top-1 faq-train reports.
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)) * 100)


def evaluate_arrays(runner: TfliteRunner, x: np.ndarray, y: np.ndarray) -> tuple[dict, np.ndarray]:
    """Top-1/top-5 (%) of the .tflite model on arrays; also returns its logits."""
    logits = runner(x)
    result = {"top1": _topk(logits, y, 1), "examples": int(len(y))}
    if logits.shape[1] > 5:
        result["top5"] = _topk(logits, y, 5)
    return result, logits


def compare(tflite_logits: np.ndarray, keras_logits: np.ndarray, labels: np.ndarray, output_scale: float) -> dict:
    """Agreement of the integer model with the Keras model."""
    diff = np.abs(tflite_logits - keras_logits)
    steps = diff / output_scale if output_scale else diff
    return {
        "keras_top1": _topk(keras_logits, labels, 1),
        "top1_agreement": float(np.mean(np.argmax(tflite_logits, 1) == np.argmax(keras_logits, 1)) * 100),
        "max_logit_diff_steps": float(steps.max()),
        "within_one_step": float(np.mean(steps <= 1.0 + 1e-6) * 100),
        "identical": float(np.mean(steps < 1e-6) * 100),
        "output_scale": output_scale,
    }


def _test_arrays(source, model_name: str, shape, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    from faq_tf.data.datasets import make_input
    from faq_tf.models import MODELS

    xs, ys = [], []
    for x, y in make_input(source, "test", 500, shape, MODELS[model_name].preprocess):
        xs.append(x.numpy())
        ys.append(y.numpy())
        if limit and sum(len(a) for a in ys) >= limit:
            break
    x, y = np.concatenate(xs), np.concatenate(ys)
    return (x[:limit], y[:limit]) if limit else (x, y)


def _metadata_labels(content: bytes, path: str) -> tuple[str, ...] | None:
    """The class labels in the .tflite's metadata, or None (damaged metadata: a warning)."""
    from export_tflite.metadata import read_metadata
    from export_tflite.reader import TfliteFormatError

    try:
        metadata = read_metadata(content)
    except TfliteFormatError as e:
        logging.warning("--tflite=%s: its TFLite metadata is not used: %s", path, e)
        return None
    return metadata.labels if metadata is not None else None


def _label_difference(labels: tuple[str, ...], classes: tuple[str, ...]) -> str | None:
    """Where the .tflite's labels differ from the dataset's class names, in words; None if they agree."""
    for i, (label, name) in enumerate(zip(labels, classes)):
        if label != name:
            return f"output {i} is {label!r} in the .tflite and {name!r} in the dataset"
    if len(labels) != len(classes):
        return f"the .tflite has {len(labels)} labels and the dataset {len(classes)} classes"
    return None


def _class_names(labels: tuple[str, ...] | None, source, outputs: int) -> tuple[str, ...]:
    """The per-class names: the dataset's, else the .tflite's labels, else "0", "1", ...; one per output at least."""
    names = source.label_names()
    if labels is None:
        pass
    elif len(labels) != outputs:
        logging.warning("the .tflite's %d labels do not fit its %d outputs; they are not used", len(labels), outputs)
    elif not source.class_names:
        names = labels
    elif difference := _label_difference(labels, source.class_names):
        logging.warning(
            "the .tflite's labels differ from the dataset's class names (%s); per-class results use the dataset's",
            difference,
        )
    return names + tuple(f"output {i}" for i in range(len(names), outputs))  # a model with more outputs than classes


def _run(args: argparse.Namespace) -> dict:
    """The results for the flags; user errors raise `UsageError`."""
    from export_tflite.cli import UsageError, check_output_path, load_keras_model, read_tflite
    from faq_tf.data.datasets import get_source
    from faq_tf.diagnostics.confusion import confusion_matrix, per_class_top1, plot_confusion
    from faq_tf.models import MODELS

    if args.model not in MODELS:
        raise UsageError(
            f"--model={args.model!r} is unknown (it selects the preprocessing): use one of {sorted(MODELS)}"
        )
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be a positive number of images, got {args.limit}")
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            check_output_path(path, flag)  # before the evaluation, whose results would be lost
    content = read_tflite(args.tflite, "--tflite")
    labels = _metadata_labels(content, args.tflite)
    try:
        source = get_source(args.dataset, args.data_dir)
    except (OSError, ValueError) as e:
        raise UsageError(f"--dataset={args.dataset}: {e}") from e
    keras_model = load_keras_model(args.keras_model, "--keras_model") if args.keras_model else None
    try:
        runner = TfliteRunner(content, runtime=args.runtime)
    except ImportError as e:  # --runtime=micro without tflite-micro
        raise UsageError(f"--runtime={args.runtime}: {e}") from e
    except (ValueError, RuntimeError) as e:  # a readable flatbuffer that the runtime cannot run
        name = "TFLM" if args.runtime == "micro" else "the LiteRT interpreter"
        raise UsageError(f"--tflite={args.tflite}: {name} cannot load it: {e}") from e
    shape = tuple(int(s) for s in runner.input["shape"][1:])
    try:
        x, y = _test_arrays(source, args.model, shape, args.limit)
    except (OSError, ValueError) as e:  # unreadable or unfitting files in the dataset
        raise UsageError(f"--dataset={args.dataset}: {e}") from e
    result, logits = evaluate_arrays(runner, x, y)
    outputs = int(logits.shape[-1])
    names = _class_names(labels, source, outputs)
    if labels is not None:
        result["labels"] = list(labels)
    confusion = confusion_matrix(y, np.argmax(logits, axis=-1), max(source.num_classes, outputs))
    result["per_class_top1"] = per_class_top1(confusion, names)
    result["confusion"] = {"classes": list(names), "counts": confusion.tolist()}
    if args.plot:
        plot_confusion(confusion, names, args.plot, title=f"{args.tflite} ({args.runtime})")
    if keras_model is not None:
        from export_tflite.reader import file_target, has_int4_weights
        from faq_tf.targets import RUNTIME_OF, as_target, set_target

        target = as_target(args.runtime)
        exported_for = file_target(content)
        if exported_for is not None and exported_for != target.value:
            logging.warning(
                "--tflite=%s was exported for the %s target and runs here on %s (the Keras model follows %s); "
                "evaluate it with --runtime=%s for the runtime it was made for",
                args.tflite, exported_for, args.runtime, target.value, RUNTIME_OF[as_target(exported_for)],
            )  # fmt: skip
        try:
            report = set_target(keras_model, target, pack_int4=has_int4_weights(content))
        except ValueError as e:  # a Keras model without faq_tf quantizers
            raise UsageError(f"--keras_model={args.keras_model}: {e}") from e
        result["keras_target"] = target.value
        if report.not_emulated:
            logging.warning(
                "on %s the Keras model does not reproduce these layers' integer arithmetic, so their outputs may "
                "differ by a step: %s",
                args.runtime, report.not_emulated,
            )  # fmt: skip
        try:
            keras_logits = keras_model.predict(x, batch_size=256, verbose=0)
        except ValueError as e:  # a Keras model of another input shape
            raise UsageError(f"--keras_model={args.keras_model} does not take the --tflite model's inputs: {e}") from e
        result.update(compare(logits, keras_logits, y, runner.output_scale))
    return result


def main(argv: list[str] | None = None) -> int:
    from export_tflite.cli import EXIT_OK, UsageError, fail, write_output

    parser = argparse.ArgumentParser(prog="python -m export_tflite.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tflite", required=True)
    parser.add_argument("--dataset", required=True, help="as for faq-train: fashion_mnist, cifar10, folder:PATH, ...")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--model", default="small_resnet", help="model name, for its preprocessing")
    parser.add_argument("--keras_model", default=None, help="the Keras model (.h5/SavedModel) to compare with")
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="xnnpack",
        help="LiteRT with XNNPACK (default), LiteRT's builtin kernels, or micro (TFLM, needs tflite-micro)",
    )
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N test images")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--plot", default=None, help="write the confusion matrix here (.png)")
    args = parser.parse_args(argv)
    try:
        result = _run(args)
        text = json.dumps(result, indent=1)
        print(text)
        if "labels" in result:
            shown = result["labels"][:10] + (["..."] if len(result["labels"]) > 10 else [])
            print(f"labels in the .tflite: {len(result['labels'])} ({', '.join(shown)})")
        print(
            "per-class top-1: "
            + ", ".join(f"{k} {v:.1f}" for k, v in result["per_class_top1"].items() if v is not None)
        )
        if args.json:
            write_output(args.json, "--json", text + "\n")
    except UsageError as e:
        return fail(parser.prog, e)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
