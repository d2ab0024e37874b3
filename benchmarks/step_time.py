"""Training step time and peak memory: fp32 vs FAQ (w8a8, w4a4) vs tfmot QAT, side by side.

Builds the same model once per variant, then times `Trainer.train_update` for each in
round-robin blocks on the same batches, so machine noise hits all of them alike. A
variant is a precision (fp32, w8a8, w4a4, tfmot_int8, tfmot_w4a4, ...), optionally with
"+xla" for `Trainer(jit_compile=True)` or "+convertible" for a FAQ step traced as the
converter sees the model (`faq_tf.tracing.export_trace`): TensorFlow's own FakeQuant
gradients and the clip + 8-bit form of 4-bit activations, what training's cheaper ops
replace. Reported per variant: the median step time, its
ratio to fp32 in the same mode (graph or XLA) and to the faster fp32 mode, the implied
seconds per epoch, and the peak memory of a process that trains that variant alone
(GPU: TensorFlow's peak device memory; CPU: the largest resident set during its steps).

Usage: python -m benchmarks.step_time [--model small_resnet] [--batch_size 128] [--rounds 15]
           [--variants fp32,w8a8,w4a4,tfmot_int8,tfmot_w4a4,w8a8+convertible,w4a4+convertible,fp32+xla,...]
Writes --out (JSON) and the same name with .md (the table).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

import faq_tf
from benchmarks.common import write_json
from faq_tf.baselines import is_tfmot_baseline, tfmot_quantize
from faq_tf.compat import keras, tf
from faq_tf.data import get_source, make_input
from faq_tf.models import build_model
from faq_tf.tracing import export_trace
from faq_tf.training import Trainer

DEFAULT_VARIANTS = "fp32,w8a8,w4a4,tfmot_int8,tfmot_w4a4,w8a8+convertible,w4a4+convertible,fp32+xla,w8a8+xla,w4a4+xla"
XLA = "+xla"
CONVERTIBLE = "+convertible"


def _parse_variant(variant: str) -> tuple[str, bool, bool]:
    """'w4a4+xla' -> ('w4a4', True, False); 'w4a4+convertible+xla' -> ('w4a4', True, True).

    Raises:
      ValueError: for a suffix other than +xla and +convertible, or +convertible on a
        model without faq_tf quantizers (fp32, tfmot), whose step it would not change.
    """
    precision, *suffixes = variant.split("+")
    unknown = set(suffixes) - {XLA[1:], CONVERTIBLE[1:]}
    if unknown or len(set(suffixes)) != len(suffixes):
        raise ValueError(f"variant {variant!r}: suffixes are +xla and +convertible, each at most once")
    convertible = CONVERTIBLE[1:] in suffixes
    if convertible and (precision == "fp32" or is_tfmot_baseline(precision)):
        raise ValueError(f"variant {variant!r}: +convertible applies to faq_tf precisions (w8a8, w4a4, ...)")
    return precision, XLA[1:] in suffixes, convertible


def _trainers(args: argparse.Namespace, variants: list[str]) -> tuple[dict[str, tuple], int]:
    """One Trainer and batch iterator per variant, each traced once; and the steps per epoch."""
    source = get_source(args.dataset)
    strategy = tf.distribute.get_strategy()
    base, spec = build_model(args.model, source.num_classes)
    train = make_input(source, "train", args.batch_size, tuple(base.input_shape[1:]), spec.preprocess)
    calib = train.map(lambda x, y: x).take(5)
    result = {}
    for variant in variants:
        precision, jit, convertible = _parse_variant(variant)
        if precision == "fp32":
            model = keras.models.clone_model(base)
        elif is_tfmot_baseline(precision):
            model = tfmot_quantize(base, precision)
        else:
            model = faq_tf.quantize_model(base, precision, calib, verbose=False)
        opt = keras.optimizers.SGD(1e-4, momentum=0.9)
        opt.build(model.trainable_variables)
        trainer = Trainer(model, opt, strategy, args.batch_size, weight_decay=5e-5, jit_compile=jit)
        it = iter(train.repeat())
        with export_trace() if convertible else contextlib.nullcontext():
            trainer.train_update(it, 1, 1e-4)  # trace (and compile); later steps run this graph
        result[variant] = (trainer, it)
    return result, source.num_train // args.batch_size


def _resident_mib() -> float:
    """The process's current resident set (Linux /proc), in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _PeakSampler(threading.Thread):
    """Samples the resident set every 2 ms while training steps run; `peak` is the largest."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = _resident_mib()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.002):
            self.peak = max(self.peak, _resident_mib())

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.peak


def _memory_child(args: argparse.Namespace) -> None:
    """Trains one variant for a few steps and prints its peak memory during them as the last line.

    GPU: TensorFlow's peak device memory over the steps. CPU: the largest resident set
    sampled during the steps (the process's lifetime peak, `ru_maxrss`, is set by loading
    the data, the same for every variant).
    """
    trainers, _ = _trainers(args, [args.memory_of])
    trainer, it = trainers[args.memory_of]
    gpu = bool(tf.config.list_physical_devices("GPU"))
    if gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
    sampler = _PeakSampler()
    sampler.start()
    for _ in range(args.steps_per_round):
        trainer.train_update(it, 1, 1e-4)
    peak = sampler.stop()
    if gpu:
        peak, what = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, "GPU peak (MiB)"
    else:
        what = "peak RSS in training (MiB)"
    print(json.dumps({"peak_mib": round(peak, 1), "what": what}))


def _peak_memory(args: argparse.Namespace, variant: str) -> dict:
    """The peak memory of a fresh process that trains `variant` alone."""
    argv = [
        sys.executable,
        "-m",
        "benchmarks.step_time",
        f"--memory_of={variant}",
        f"--model={args.model}",
        f"--dataset={args.dataset}",
        f"--batch_size={args.batch_size}",
        f"--steps_per_round={args.steps_per_round}",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"measuring the memory of {variant} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace) -> dict:
    """Times every variant interleaved, then measures each one's peak memory."""
    variants = args.variants.split(",")
    try:
        parsed = {v: _parse_variant(v) for v in variants}
    except ValueError as e:
        raise SystemExit(f"step_time: error: {e}") from None
    if not any(precision == "fp32" for precision, _, _ in parsed.values()):
        raise SystemExit("step_time: error: --variants needs fp32 (or fp32+xla): every ratio is to fp32")
    trainers, steps_per_epoch = _trainers(args, variants)
    times = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant, (trainer, it) in trainers.items():
            start = time.perf_counter()
            for _ in range(args.steps_per_round):
                trainer.train_update(it, 1, 1e-4)
            times[variant].append((time.perf_counter() - start) / args.steps_per_round)
    median = {v: statistics.median(t) for v, t in times.items()}
    fp32 = {jit: median[v] for v, (precision, jit, _) in parsed.items() if precision == "fp32"}
    fastest_fp32 = min(fp32.values())
    memory = {v: _peak_memory(args, v) for v in variants} if args.memory else {}
    return {
        "model": args.model,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "steps_per_round": args.steps_per_round,
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        "median_step_ms": {v: round(m * 1000, 2) for v, m in median.items()},
        "ratio_to_fp32_same_mode": {v: round(m / fp32.get(parsed[v][1], fastest_fp32), 3) for v, m in median.items()},
        "ratio_to_fastest_fp32": {v: round(m / fastest_fp32, 3) for v, m in median.items()},
        "seconds_per_epoch": {v: round(m * steps_per_epoch, 1) for v, m in median.items()},
        "spread_ms": {v: [round(float(np.percentile(t, q)) * 1000, 1) for q in (10, 90)] for v, t in times.items()},
        "peak_memory_mib": {v: m["peak_mib"] for v, m in memory.items()},
        "memory_measure": next(iter(memory.values()))["what"] if memory else None,
    }


def markdown(result: dict) -> str:
    """The result as a Markdown table."""
    what = result["memory_measure"] or "peak memory (MiB)"
    lines = [
        f"| variant | median step (ms) | vs fp32 (same mode) | vs fastest fp32 | s / epoch | {what} |",
        "|---|---|---|---|---|---|",
    ]
    for v, ms in result["median_step_ms"].items():
        lines.append(
            f"| {v} | {ms} | {result['ratio_to_fp32_same_mode'][v]:.2f}x | {result['ratio_to_fastest_fp32'][v]:.2f}x "
            f"| {result['seconds_per_epoch'][v]} | {result['peak_memory_mib'].get(v, '-')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small_resnet")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps_per_round", type=int, default=10)
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument(
        "--memory", action=argparse.BooleanOptionalAction, default=True, help="Peak memory per variant."
    )
    parser.add_argument("--memory_of", default=None, help=argparse.SUPPRESS)  # the child process of --memory
    parser.add_argument("--out", default="runs/step_time.json")
    args = parser.parse_args()
    if args.memory_of:
        _memory_child(args)
        return
    result = measure(args)
    table = markdown(result)
    write_json(args.out, result)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(table)
    print(json.dumps(result, indent=1))
    print("\n" + table)


if __name__ == "__main__":
    main()
