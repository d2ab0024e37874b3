"""FAQ against what users would otherwise pick, side by side on one baseline: `make bench`.

Everything starts from the same fp32 baseline (baselines/fashion_mnist/small_resnet_fp32.h5)
and uses the same Fashion-MNIST data, loop (faq-train) and schedules:

  accuracy, mean +- sd over --seeds (each a faq-train run with --seed):
    fp32                the baseline itself (its top-1 as recorded in baselines/fashion_mnist/README.md)
    fp32 control 8      fp32 fine-tuned with FAQ w8a8's epochs/schedule (w8a8.flags, --precision=fp32)
    FAQ w8a8            flags/fashion_mnist/w8a8.flags (1 epoch)
    tfmot int8 QAT      tfmot's default 8-bit scheme, w8a8.flags' epochs and lr
    TFLite PTQ int8     the converter with a representative dataset (32 images of each of 5 batches), no training
    fp32 control 4      fp32 with FAQ w4a4's epochs/schedule (w4a4.flags, --precision=fp32)
    FAQ w4a4            flags/fashion_mnist/w4a4.flags with --epochs=--w4a4_epochs (default 5)
    tfmot n-bit W4A4    tfmot's experimental n-bit scheme at 4/4 bits, w4a4.flags' schedule
  and for each integer-deployable entry the .tflite's accuracy under LiteRT (tfmot int8's QAT
  model converted with the same converter settings as TFLite PTQ int8);
  training cost: step time per method / fp32 (benchmarks.step_time, interleaved);
  inference: .tflite size and batch-1 1-thread latency / fp32 (LiteRT builtin kernels, interleaved medians);
  memory: peak RSS of each fine-tuning process;
  plots: accuracy vs bits per method, and the FAQ w4a4 learning curve.

Writes --out/bench.json, bench.md, accuracy_vs_bits.png, w4a4_learning_curve.png. Finished
runs are reused (faq-train resumes from its checkpoints), so an interrupted suite continues.

The w4a4 budget defaults to 5 epochs (the flagfile and `make demo` use 10, the paper 110).
The three w4a4 methods share w4a4.flags, its weight averaging (--ema_decay) included.

Usage: python -m benchmarks.suite [--out runs/bench] [--seeds 0,1,2] [--w4a4_epochs 5]

With --methods (a subset, e.g. control4,faq_w4a4) the suite trains only those and writes
bench_subset.md/.json: each method's Keras top-1 against fp32 and against its fp32 control,
then the step-time table (--step_rounds=0 skips it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks import step_time
from benchmarks.common import BASELINE, FLAGS, ROOT, logger, read_metrics, run_faq_train, write_report

# name -> (flagfile, precision override or None, label)
METHODS = {
    "control8": ("w8a8", "fp32", "fp32 control (w8a8 budget)"),
    "faq_w8a8": ("w8a8", None, "FAQ w8a8"),
    "tfmot_int8": ("w8a8", "tfmot_int8", "tfmot default 8-bit QAT"),
    "control4": ("w4a4", "fp32", "fp32 control (w4a4 budget)"),
    "faq_w4a4": ("w4a4", None, "FAQ w4a4"),
    "tfmot_w4a4": ("w4a4", "tfmot_w4a4", "tfmot n-bit W4A4 QAT"),
}

# faq-train in a process that writes its peak RSS (KB) to the file named by its first argument.
_RSS_WRAPPER = (
    "import atexit, resource, runpy, sys\n"
    "out = sys.argv.pop(1)\n"
    "atexit.register(lambda: open(out, 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))\n"
    "sys.argv[0] = 'faq-train'\n"
    "runpy.run_module('faq_tf.train', run_name='__main__')\n"
)

_log = logger("bench")


def _train(method: str, seed: int, out: str, epochs4: int | None, baseline: str, extra: list[str]) -> dict:
    flagfile, precision, _ = METHODS[method]
    model_dir = os.path.join(out, "runs", f"{method}_seed{seed}")
    args = [f"--pretrained={baseline}", f"--seed={seed}"]
    if precision:
        args.append(f"--precision={precision}")
    if flagfile == "w4a4" and epochs4:  # the exp schedule still decays to lr_final over these epochs
        args.append(f"--epochs={epochs4}")
    args += extra
    rss_file = os.path.join(model_dir, "peak_rss_kb")
    if not (os.path.exists(os.path.join(model_dir, "metrics.json")) and os.path.exists(rss_file)):
        _log(f"{method} seed {seed}: faq-train {' '.join(args)}")
        os.makedirs(model_dir, exist_ok=True)
        launcher = ("-c", _RSS_WRAPPER, rss_file)
        run_faq_train(os.path.join(FLAGS, f"{flagfile}.flags"), model_dir, args, launcher=launcher)
    result = read_metrics(model_dir)
    with open(rss_file) as f:
        result["peak_rss_mb"] = int(f.read()) / 1024
    result["model_dir"] = model_dir
    return result


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _baseline_top1() -> float:
    """The fp32 baseline's test top-1, as baselines/fashion_mnist/README.md records it."""
    with open(os.path.join(ROOT, "baselines", "fashion_mnist", "README.md")) as f:
        return float(f.read().split("Test top-1: **")[1].split("%")[0])


def _step_time(out: str, rounds: int) -> dict:
    """benchmarks.step_time in its own process (interleaved fp32, FAQ and tfmot steps)."""
    _log("step time, interleaved (benchmarks.step_time)")
    step_json = os.path.join(out, "step_time.json")
    subprocess.run(
        [sys.executable, "-m", "benchmarks.step_time", f"--rounds={rounds}", f"--out={step_json}"],
        check=True,
        cwd=ROOT,
    )
    with open(step_json) as f:
        return json.load(f)


# Each FAQ or tfmot method's fp32 control: the same flagfile's epochs and schedule, unquantized.
CONTROLS = {"faq_w8a8": "control8", "tfmot_int8": "control8", "faq_w4a4": "control4", "tfmot_w4a4": "control4"}


def _subset_report(out: str, runs: dict, methods: list[str], seeds: list[int], args, t0: float) -> None:
    """bench_subset.md/.json for --methods: Keras top-1 per method against fp32 and its control, and step time."""
    fp32 = _baseline_top1()
    rows = {}
    for method in methods:
        accs = [runs[method][s]["final"]["test_top1"] for s in seeds]
        mean, sd = _mean_sd(accs)
        rows[method] = {"label": METHODS[method][2], "mean": mean, "sd": sd, "per_seed": accs, "vs_fp32": mean - fp32}
        rows[method]["epochs"] = runs[method][seeds[0]]["final"]["epoch"] + 1
    for method, row in rows.items():
        control = CONTROLS.get(method)
        if control in rows:
            row["vs_control"] = row["mean"] - rows[control]["mean"]
    steps = _step_time(out, args.step_rounds) if args.step_rounds else None
    lines = [
        f"Fashion-MNIST small_resnet, fp32 baseline {fp32:.2f}, seeds {args.seeds}; "
        f"{(time.perf_counter() - t0) / 60:.0f} min on this machine.",
        "",
        "| method | epochs | Keras top-1 (mean ± sd) | per seed | vs fp32 | vs its fp32 control |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows.values():
        control = f"{row['vs_control']:+.2f}" if "vs_control" in row else "-"
        per_seed = " / ".join(f"{a:.2f}" for a in row["per_seed"])
        lines.append(
            f"| {row['label']} | {row['epochs']} | {row['mean']:.2f} ± {row['sd']:.2f} | {per_seed} "
            f"| {row['vs_fp32']:+.2f} | {control} |"
        )
    md = "\n".join(lines) + "\n" + ("\n" + step_time.markdown(steps) if steps else "")
    write_report(out, "bench_subset", {"fp32": fp32, "rows": rows, "step_time": steps, "seeds": seeds}, md)


def _deploy(out: str, runs: dict, seeds: list[int], baseline: str, latency_rounds: int) -> dict:
    """Exports every integer-deployable model, evaluates the .tflite files, times them."""
    import faq_tf
    from benchmarks.common import fashion_mnist_arrays, fashion_mnist_calibration
    from benchmarks.export_fidelity import tflite_ptq_int8
    from export_tflite import convert
    from export_tflite.evaluate import TfliteRunner, evaluate_arrays, time_invoke
    from faq_tf.compat import tf, tfmot
    from faq_tf.data import get_source

    source = get_source("fashion_mnist")
    x_test, y_test = fashion_mnist_arrays(source, "test")
    rep = fashion_mnist_calibration(source)
    rep_batches = [b.numpy() for b in rep]  # TFLite's representative data: 32 rows of each

    tflite_dir = os.path.join(out, "tflite")
    os.makedirs(tflite_dir, exist_ok=True)
    fp32 = faq_tf.load_model(baseline)
    files = {"fp32": tf.lite.TFLiteConverter.from_keras_model(fp32).convert()}
    _log("TFLite post-training int8 of the baseline")
    files["ptq_int8"] = tflite_ptq_int8(fp32, rep_batches)
    deployed = {"ptq_int8": [], "faq_w8a8": [], "faq_w4a4": [], "faq_w4a4+int4": [], "tfmot_int8": []}
    for seed in seeds:
        for method in ("faq_w8a8", "faq_w4a4", "tfmot_int8"):
            path = os.path.join(runs[method][seed]["model_dir"], "model.h5")
            if method == "tfmot_int8":
                with tfmot.quantization.keras.quantize_scope():
                    model = tf.keras.models.load_model(path, compile=False)
                variants = {method: tflite_ptq_int8(model, rep_batches)}
            else:
                model = faq_tf.load_model(path)
                variants = {method: convert(model, representative_data=rep)}
                if method == "faq_w4a4":
                    variants["faq_w4a4+int4"] = convert(model, representative_data=rep, pack_int4=True)
            for name, content in variants.items():
                result, _ = evaluate_arrays(TfliteRunner(content), x_test, y_test)
                deployed[name].append(result["top1"])
                if seed == seeds[0]:
                    files[name] = content
            _log(f"{method} seed {seed}: .tflite top-1 {deployed[method][-1]:.2f}")
    deployed["ptq_int8"] = [evaluate_arrays(TfliteRunner(files["ptq_int8"]), x_test, y_test)[0]["top1"]]

    # LiteRT's builtin kernels (XNNPACK's fp32 path is as fast as its int8 one on this tiny
    # network; benchmarks.export_fidelity times both paths).
    _log(f"latency: {latency_rounds} interleaved rounds, batch 1, 1 thread, builtin kernels, invoke only")
    times = time_invoke(files, "builtin", rounds=latency_rounds)
    base = times["fp32"]
    inference = {}
    for name, content in files.items():
        with open(os.path.join(tflite_dir, f"{name}.tflite"), "wb") as f:
            f.write(content)
        inference[name] = {
            "bytes": len(content),
            "size_vs_fp32": round(len(content) / len(files["fp32"]), 3),
            "latency_ms": round(times[name] * 1000, 4),
            "latency_vs_fp32": round(times[name] / base, 3),
        }
    return {"tflite_top1": deployed, "inference": inference}


def _plots(out: str, table: dict, curve: list[dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fp32 = table["fp32"]["mean"]
    fig, ax = plt.subplots(figsize=(6, 4))
    lines = {
        "FAQ (Keras)": [(32, fp32), (8, table["faq_w8a8"]["mean"]), (4, table["faq_w4a4"]["mean"])],
        "FAQ (integer .tflite)": [(8, table["faq_w8a8"]["tflite_mean"]), (4, table["faq_w4a4"]["tflite_mean"])],
        "tfmot QAT": [(32, fp32), (8, table["tfmot_int8"]["mean"]), (4, table["tfmot_w4a4"]["mean"])],
        "TFLite PTQ": [(32, fp32), (8, table["ptq_int8"]["mean"])],
        "fp32 control (w4a4 budget)": [(32, table["control4"]["mean"])],
    }
    for label, points in lines.items():
        bits, acc = zip(*points)
        ax.plot(bits, acc, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks([4, 8, 32], ["4", "8", "32 (fp)"])
    ax.set_xlabel("bits (weights and activations)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("Fashion-MNIST small_resnet: accuracy vs bits")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    p1 = os.path.join(out, "accuracy_vs_bits.png")
    fig.savefig(p1, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [r["epoch"] + 1 for r in curve]
    ax.plot(epochs, [r["test_top1"] for r in curve], marker="o", label="test top-1 (FAQ w4a4)")
    ax.axhline(fp32, color="gray", ls="--", label="fp32 baseline")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 (%)")
    ax2 = ax.twinx()
    ax2.semilogy(epochs, [r["lr"] for r in curve], color="tab:red", alpha=0.6, label="learning rate")
    ax2.set_ylabel("learning rate")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("FAQ w4a4 fine-tuning (seed 0)")
    fig.tight_layout()
    p2 = os.path.join(out, "w4a4_learning_curve.png")
    fig.savefig(p2, dpi=120)
    plt.close(fig)
    return [p1, p2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--w4a4_epochs", type=int, default=5, help="w4a4 budget (w4a4.flags has 10; 0 = its value).")
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--latency_rounds", type=int, default=20)
    parser.add_argument("--step_rounds", type=int, default=12, help="benchmarks.step_time rounds (0: skip, subsets).")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="Train only these methods; the report needs all of them, so a subset stops after training.",
    )
    parser.add_argument("--train_flags", default="", help="Extra faq-train flags, e.g. --steps_per_epoch=10 (smoke).")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    if unknown := sorted(set(methods) - set(METHODS)):
        parser.error(f"unknown --methods {unknown}: choose from {', '.join(METHODS)}")
    t0 = time.perf_counter()

    runs = {m: {} for m in METHODS}
    for seed in seeds:  # seed-major, so a partial suite already covers every method
        for method in methods:
            runs[method][seed] = _train(method, seed, out, args.w4a4_epochs, args.baseline, args.train_flags.split())
    if set(methods) != set(METHODS):  # the full tables and plots compare every method
        _subset_report(out, runs, methods, seeds, args, t0)
        _log(f"trained {', '.join(methods)}; a later run of all methods into the same --out reuses them")
        return
    deploy = _deploy(out, runs, seeds, args.baseline, args.latency_rounds)
    steps = _step_time(out, args.step_rounds) if args.step_rounds else None
    fp32_top1 = _baseline_top1()
    table = {"fp32": {"label": "fp32 baseline", "mean": fp32_top1, "sd": 0.0, "n": 1}}
    for method in METHODS:
        accs = [runs[method][s]["final"]["test_top1"] for s in seeds]
        mean, sd = _mean_sd(accs)
        row = {"label": METHODS[method][2], "mean": mean, "sd": sd, "n": len(accs), "per_seed": accs}
        row["peak_rss_mb"] = statistics.median(runs[method][s]["peak_rss_mb"] for s in seeds)
        row["epochs"] = runs[method][seeds[0]]["final"]["epoch"] + 1
        if method in deploy["tflite_top1"]:
            row["tflite_mean"], row["tflite_sd"] = _mean_sd(deploy["tflite_top1"][method])
        table[method] = row
    ptq = deploy["tflite_top1"]["ptq_int8"][0]
    table["ptq_int8"] = {"label": "TFLite PTQ int8", "mean": ptq, "sd": 0.0, "n": 1, "tflite_mean": ptq}
    table["faq_w4a4+int4"] = {
        "label": "FAQ w4a4, packed INT4 .tflite",
        "tflite_mean": _mean_sd(deploy["tflite_top1"]["faq_w4a4+int4"])[0],
    }
    curve = runs["faq_w4a4"][seeds[0]]["epochs"]
    plots = _plots(out, table, curve)

    order = ["fp32", "control8", "faq_w8a8", "ptq_int8", "tfmot_int8", "control4", "faq_w4a4", "tfmot_w4a4"]
    lines = [
        f"Fashion-MNIST small_resnet (78k parameters), one fp32 baseline, seeds {args.seeds}; "
        f"{(time.perf_counter() - t0) / 60:.0f} min on this machine.",
        "",
        "| method | epochs | Keras top-1 (mean ± sd) | integer .tflite top-1 | peak RSS (MB) |",
        "|---|---|---|---|---|",
    ]
    for key in order:
        r = table[key]
        tfl = f"{r['tflite_mean']:.2f}" if "tflite_mean" in r else "not integer-deployable"
        if key in ("fp32", "control8", "control4"):
            tfl = "(float)"
        rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-"
        keras_top1 = "-" if key == "ptq_int8" else f"{r['mean']:.2f} ± {r['sd']:.2f} (n={r['n']})"
        epochs = {"fp32": "8 (from scratch)", "ptq_int8": "0"}.get(key, r.get("epochs", "-"))
        lines.append(f"| {r['label']} | {epochs} | {keras_top1} | {tfl} | {rss} |")
    lines += ["", "| .tflite | size vs fp32 | latency vs fp32 (batch 1, 1 thread) |", "|---|---|---|"]
    for name, r in deploy["inference"].items():
        lines.append(f"| {name} | {r['size_vs_fp32']:.3f}x | {r['latency_vs_fp32']:.3f}x |")
    md = "\n".join(lines) + "\n" + ("\n" + step_time.markdown(steps) if steps else "")
    result = {"table": table, "deploy": deploy, "step_time": steps, "plots": plots, "seeds": seeds}
    write_report(out, "bench", result, md)
    _log(f"wrote {out}/bench.md, bench.json and {', '.join(os.path.basename(p) for p in plots)}")


if __name__ == "__main__":
    main()
