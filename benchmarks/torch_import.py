"""The Table 1 networks imported from torchvision, at full size, against torchvision itself.

Usage: python -m benchmarks.torch_import [--out runs/torch_import] [--models resnet18,...] [--images 2]

For each network: torchvision builds it with random weights and randomized BatchNorm
statistics at its ImageNet input size (224, Inception-v3 299), in a subprocess
(scripts/torchvision_reference.py); `faq_tf.models.import_torch.import_torch_weights` builds
the Keras model and imports the .pth; both run the same random images. Writes JSON and a
Markdown table: parameters, the import time (build + read + copy) and the largest logit
difference relative to the logit scale. Needs the torch extra (`make test` installs it).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import ROOT, logger, write_report

FULL_SIZE = {
    "resnet18": 224,
    "resnet34": 224,
    "resnet50": 224,
    "resnet152": 224,
    "inception_v3": 299,
    "densenet161": 224,
    "vgg16_bn": 224,
}


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/torch_import")
    parser.add_argument("--models", default=",".join(FULL_SIZE))
    parser.add_argument("--images", type=int, default=2)
    args = parser.parse_args()
    log = logger("torch_import")
    names = args.models.split(",")
    from faq_tf.models import MODELS
    from faq_tf.models.import_torch import import_torch_weights

    rows = []
    with tempfile.TemporaryDirectory() as ref:
        for name in names:
            log(f"{name}: torchvision reference at {FULL_SIZE[name]}x{FULL_SIZE[name]}")
            subprocess.run(
                [sys.executable, "-m", "scripts.torchvision_reference", "--out", ref, "--images", str(args.images)]
                + ["--models", f"{name}:{FULL_SIZE[name]}"],
                cwd=ROOT,
                env=os.environ | {"PYTHONPATH": ROOT},
                check=True,
                stdout=subprocess.DEVNULL,
            )
            pth = os.path.join(ref, f"{name}.pth")
            start = time.perf_counter()
            model = import_torch_weights(name, pth)
            seconds = time.perf_counter() - start
            pixels = np.load(os.path.join(ref, f"{name}_pixels.npy"))
            expected = np.load(os.path.join(ref, f"{name}_logits.npy"))
            logits = model(MODELS[name].preprocess(pixels), training=False).numpy()
            scale = float(np.abs(expected).max())
            rows.append(
                {
                    "model": name,
                    "input": FULL_SIZE[name],
                    "parameters": int(model.count_params()),
                    "pth_bytes": os.path.getsize(pth),
                    "import_seconds": round(seconds, 2),
                    "logit_scale": scale,
                    "max_abs_diff": float(np.abs(logits - expected).max()),
                    "max_rel_diff": float(np.abs(logits - expected).max() / scale),
                    "top1_agree": float(np.mean(logits.argmax(-1) == expected.argmax(-1))),
                }
            )
            log(f"{name}: max relative logit difference {rows[-1]['max_rel_diff']:.1e}, import {seconds:.1f} s")
            for suffix in (".pth", "_pixels.npy", "_logits.npy"):
                os.remove(os.path.join(ref, name + suffix))
    cpu = _cpu()
    md = [
        f"torchvision -> Keras import, {args.images} random images per network, on {cpu} "
        f"({os.cpu_count()} cores). Command: python -m benchmarks.torch_import",
        "",
        "| network | input | parameters | import (s) | max logit difference / logit scale |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['model']} | {r['input']} | {r['parameters']:,} | {r['import_seconds']:.1f} | {r['max_rel_diff']:.1e} |"
        )
    write_report(args.out, "torch_import", {"cpu": cpu, "images": args.images, "rows": rows}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
