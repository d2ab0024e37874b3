"""The main job end to end on Fashion-MNIST: FAQ w8a8 and w4a4, integer export, evaluation.

  python -m benchmarks.demo                  # what `make demo` runs
  python -m benchmarks.demo --train_baseline # retrain the fp32 baseline first (fp32.flags, 8 epochs)

1. the fp32 "pretrained" model: baselines/fashion_mnist/small_resnet_fp32.h5 (made by
   flags/fashion_mnist/fp32.flags; see baselines/fashion_mnist/README.md), or retrained;
2. faq-train with flags/fashion_mnist/w8a8.flags (1 epoch) and w4a4.flags (10 epochs);
3. export_tflite: fully integer .tflite (int8 in/out, batch 1), verified;
4. the LiteRT interpreter on the 10k test images, against the Keras model;
5. a table: model, precision, Keras and integer TFLite top-1, size and latency vs fp32.

Everything goes to --out (default runs/demo): demo.json, demo.md, each run's folder
(config, metrics, checkpoints, TensorBoard, model.h5) and the .tflite files. Rerunning
resumes finished or interrupted runs from their checkpoints.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

from benchmarks.common import BASELINE, FLAGS, ROOT, logger, run_faq_train, write_report

_log = logger("demo")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="Output folder.")
    parser.add_argument("--baseline", default=BASELINE, help="fp32 .h5 to start from.")
    parser.add_argument("--train_baseline", action="store_true", help="Retrain the fp32 baseline (fp32.flags).")
    parser.add_argument("--w4a4_epochs", type=int, default=None, help="Override w4a4.flags' 10 epochs.")
    parser.add_argument("--data_dir", default=None, help="Fashion-MNIST IDX folder (default: Debian's).")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    t_start = time.perf_counter()

    # Imported here so that --help works before TensorFlow has loaded.
    from faq_tf.data import get_source

    data_flags = [f"--data_dir={args.data_dir}"] if args.data_dir else []
    source = get_source("fashion_mnist", args.data_dir)  # a clear error if the data is missing
    _log(f"Fashion-MNIST: {source.num_train} training images")

    fp32_dir = os.path.join(out, "fp32")
    os.makedirs(fp32_dir, exist_ok=True)
    fp32_model = os.path.join(fp32_dir, "model.h5")
    if args.train_baseline:
        run_faq_train(os.path.join(FLAGS, "fp32.flags"), fp32_dir, data_flags, log=_log)
    elif not os.path.exists(fp32_model):
        if not os.path.exists(args.baseline):
            raise SystemExit(f"No fp32 baseline at {args.baseline}; pass --baseline=FILE.h5 or --train_baseline.")
        shutil.copyfile(args.baseline, fp32_model)
        _log(f"fp32 baseline: {os.path.relpath(args.baseline, ROOT)} (92.47% test top-1 when made)")

    results = {}
    for precision in ("w8a8", "w4a4"):
        extra = [f"--pretrained={fp32_model}", *data_flags]
        if precision == "w4a4" and args.w4a4_epochs:
            extra.append(f"--epochs={args.w4a4_epochs}")
        _log(f"FAQ {precision}: calibrate, then fine-tune")
        flagfile = os.path.join(FLAGS, f"{precision}.flags")
        results[precision] = run_faq_train(flagfile, os.path.join(out, precision), extra, log=_log)["final"]

    _log("exporting to fully integer .tflite, verifying, evaluating with LiteRT")
    from benchmarks import export_fidelity

    rows = export_fidelity.measure(out, os.path.join(out, "tflite"), log=_log, data_dir=args.data_dir)
    table = [
        "| model | precision | Keras top-1 | integer TFLite top-1 | top-1 agreement | size vs fp32 "
        "| latency vs fp32 (XNNPACK / builtin kernels) | file |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        precision = name.split("+")[0]
        labels = {"fp32": "fp32 (float .tflite)", "ptq_int8": "TFLite post-training int8 of fp32 (reference)"}
        label = labels.get(name, "w4a4, packed INT4 weights" if "+int4" in name else name)
        tflite_top1 = f"{r['top1']:.2f}" if "top1" in r else "-"
        agreement = f"{r['top1_agreement']:.2f}" if "top1_agreement" in r else "-"
        table.append(
            f"| small_resnet | {label} | {r['keras_top1']:.2f} | {tflite_top1} | {agreement} "
            f"| {r['size_vs_fp32']:.3f}x | {r['latency_vs_fp32']:.3f}x / {r['latency_vs_fp32_builtin']:.3f}x "
            f"| {os.path.relpath(r['file'], ROOT)} |"
        )
        r["precision"] = precision
    minutes = (time.perf_counter() - t_start) / 60
    summary = {"rows": rows, "fine_tuning": results, "minutes": round(minutes, 2), "out": out}
    md = (
        "Fashion-MNIST, small_resnet (78k parameters), 10k test images. Keras = the fine-tuned QAT model; "
        "integer TFLite = its export run by the LiteRT interpreter (XNNPACK, batch 1, int8 in/out); "
        "latency: batch 1, 1 thread, invoke() only, median of interleaved runs against the fp32 .tflite on each CPU path.\n\n"
        + "\n".join(table)
        + "\n"
    )
    write_report(out, "demo", summary, md)
    _log(f"done in {minutes:.1f} min; outputs in {os.path.relpath(out, ROOT)}/ (demo.md, demo.json, tflite/)")


if __name__ == "__main__":
    main()
