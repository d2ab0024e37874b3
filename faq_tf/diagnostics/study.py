"""The sensitivity runner: a base flagfile and variants, run and tabulated like the paper's Table 2.

  python -m faq_tf.diagnostics study --base=flags/fashion_mnist/w4a4.flags --preset=fashion_mnist \\
      --out=runs/study --parallel=1 [--extra=--epochs=3]
  python -m faq_tf.diagnostics study --base=F.flags --variant="wd 1e-4=--weight_decay=0.0001" ...

Each row is one faq-train run (a subprocess, in turn or --parallel at a time) in
out/NAME; finished rows (with model.h5) are reused, interrupted ones resume. The table lists each row's flag changes, its test
top-1 and the change against the base row, and goes to out/study.md and study.json.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import subprocess
import sys

__all__ = ["Variant", "PRESETS", "parse_variant", "run_study", "table"]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row: a name and the faq-train flags it adds to the base flagfile."""

    name: str
    flags: tuple[str, ...] = ()


# Table 2's knobs, on the Fashion-MNIST w4a4 flagfile (a CPU-sized version of the paper's study),
# then the opt-in levers beyond the paper.
PRESETS: dict[str, tuple[Variant, ...]] = {
    "fashion_mnist": (
        Variant("base"),
        Variant("half the epochs", ("--epochs=HALF",)),
        Variant("batch 128 -> 256 (virtual)", ("--batch_schedule=128@0,256@HALF",)),
        Variant("step lr schedule", ("--lr_schedule=step", "--lr_boundaries=HALF", "--lr_decay=0.1")),
        Variant("weight decay 5e-4", ("--weight_decay=0.0005",)),
        Variant("no calibration", ("--calibrate=false",)),
        Variant("no pretrained weights", ("--pretrained=none",)),
        # Beyond the paper: opt-in levers.
        Variant("distill from fp32 (alpha 0.5, T 2)", ("--distill=0.5", "--distill_temperature=2")),
    ),
}


def parse_variant(text: str) -> Variant:
    """Parses "NAME=--flag=value,--flag2=value" (or "NAME" alone for the base row).

    Only a comma followed by "--" starts the next flag, so a value may hold commas
    ("--batch_schedule=128@0,256@4", "--lr_boundaries=3,6,9").
    """
    name, _, flags = text.partition("=")
    if not name.strip():
        raise ValueError(f"variant {text!r}: expected NAME=--flag=value[,--flag=value]")
    parts = tuple(f.strip(",") for f in re.split(r",(?=--)", flags) if f.strip(",")) if flags else ()
    for f in parts:
        if not f.startswith("--"):
            raise ValueError(f"variant {name!r}: {f!r} is not a flag (flags start with --)")
    return Variant(name.strip(), parts)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "row"


def _epochs(base: str, extra: tuple[str, ...]) -> int:
    value = None
    with open(base) as f:
        for line in f:
            if line.startswith("--epochs="):
                value = int(line.strip().split("=", 1)[1])
    for flag in extra:
        if flag.startswith("--epochs="):
            value = int(flag.split("=", 1)[1])
    if value is None:
        raise ValueError(f"{base} sets no --epochs; pass --extra=--epochs=N")
    return value


def _resolve(variant: Variant, epochs: int) -> tuple[str, ...]:
    half = str(max(1, epochs // 2))
    return tuple(f.replace("HALF", half) for f in variant.flags)


def _run_row(base: str, flags: tuple[str, ...], model_dir: str, log) -> dict:
    metrics = os.path.join(model_dir, "metrics.json")
    # faq-train saves model.h5 last: without it the row was interrupted, and running it again resumes it.
    if not os.path.exists(os.path.join(model_dir, "model.h5")) or not os.path.exists(metrics):
        cmd = [sys.executable, "-m", "faq_tf.train", f"--flagfile={base}", *flags, f"--model_dir={model_dir}"]
        log(" ".join(cmd[1:]))
        os.makedirs(model_dir, exist_ok=True)
        with open(os.path.join(model_dir, "study.log"), "w") as out:
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            return {"error": f"faq-train exited with {done.returncode}; see {model_dir}/study.log"}
    return _read_json(metrics)["final"]


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def run_study(
    base: str,
    variants: list[Variant],
    out: str,
    extra: tuple[str, ...] = (),
    parallel: int = 1,
    log=print,
) -> list[dict]:
    """Runs every variant of `base` (plus `extra` flags) and returns one row per variant.

    The first variant is the base row the others are compared with. `HALF` in a flag value
    stands for half the run's epochs.
    """
    if not os.path.exists(base):
        raise FileNotFoundError(f"base flagfile {base} does not exist")
    if not variants:
        raise ValueError("a study needs at least one variant (the base row)")
    names = [v.name for v in variants]
    if len(set(map(_slug, names))) != len(names):
        raise ValueError(f"variant names must differ: {names}")
    os.makedirs(out, exist_ok=True)
    epochs = _epochs(base, extra)
    jobs = [(v, (*extra, *_resolve(v, epochs)), os.path.join(out, _slug(v.name))) for v in variants]
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}")
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        finals = list(pool.map(lambda job: _run_row(base, job[1], job[2], log), jobs))
    rows = []
    for (variant, flags, model_dir), final in zip(jobs, finals):
        rows.append({"name": variant.name, "flags": list(flags), "model_dir": model_dir, **final})
    base_top1 = rows[0].get("test_top1")
    for row in rows:
        if "test_top1" in row and base_top1 is not None:
            row["delta_vs_base"] = row["test_top1"] - base_top1
    with open(os.path.join(out, "study.json"), "w") as f:
        json.dump({"base": base, "extra": list(extra), "rows": rows}, f, indent=1)
    with open(os.path.join(out, "study.md"), "w") as f:
        f.write(table(rows, base) + "\n")
    return rows


def table(rows: list[dict], base: str) -> str:
    """Markdown table in the style of the paper's Table 2."""
    lines = [
        f"Base: `{base}`" + (f" with `{' '.join(rows[0]['flags'])}`" if rows and rows[0]["flags"] else ""),
        "",
        "| row | change | test top-1 (%) | change vs base |",
        "|---|---|---|---|",
    ]
    base_flags = set(rows[0]["flags"]) if rows else set()
    for i, row in enumerate(rows):
        changed = [f for f in row["flags"] if f not in base_flags] or ["-"]
        top1 = f"{row['test_top1']:.2f}" if "test_top1" in row else row.get("error", "failed")
        delta = "" if i == 0 or "delta_vs_base" not in row else f"{row['delta_vs_base']:+.2f}"
        lines.append(f"| {row['name']} | `{' '.join(changed)}` | {top1} | {delta} |")
    return "\n".join(lines)
