"""python -m faq_tf.diagnostics {similarity,plot,study} ... (see each command's --help).

Exit codes: 0 done; 1 a study row failed; 2 a user error (a missing or damaged model file,
a bad flag), as one line `python -m faq_tf.diagnostics: error: ...` on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

PROG = "python -m faq_tf.diagnostics"


def _similarity(args) -> int:
    from faq_tf.diagnostics.similarity import model_similarity

    per_layer, mean = model_similarity(args.a, args.b)
    width = max(len(k) for k in per_layer)
    for layer, value in per_layer.items():
        print(f"{layer.ljust(width)}  {value:.4f}")
    print(f"{'mean over all neurons'.ljust(width)}  {mean:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"a": args.a, "b": args.b, "per_layer": per_layer, "mean": mean}, f, indent=1)
    return 0


def _plot(args) -> int:
    from faq_tf.diagnostics.plots import plot_runs, similarity_bars

    written = plot_runs(args.run_dirs, args.out)
    if args.similarity:
        from faq_tf.diagnostics.similarity import model_similarity

        bars = {}
        for spec in args.similarity:
            label, _, pair = spec.partition("=")
            a, _, b = pair.partition(",")
            if not (label and a and b):
                raise ValueError(f"--similarity {spec!r}: expected LABEL=A.h5,B.h5")
            bars[label] = model_similarity(a, b)[1]
        written.append(similarity_bars(bars, f"{args.out}/similarity.png"))
    for path in written:
        print(path)
    return 0


def _study(args) -> int:
    from faq_tf.diagnostics.study import PRESETS, parse_variant, run_study, table

    variants = list(PRESETS[args.preset]) if args.preset else []
    variants += [parse_variant(v) for v in args.variant]
    rows = run_study(args.base, variants, args.out, tuple(args.extra), args.parallel)
    print(table(rows, args.base))
    return 0 if all("test_top1" in r for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("similarity", help="Per-layer and mean neuron cosine similarity of two models.")
    p.add_argument("a", help="A model file (.h5 or SavedModel), e.g. the pretrained start.")
    p.add_argument("b", help="The same network after training, e.g. the FAQ result.")
    p.add_argument("--json", help="Also write the values here.")
    p.set_defaults(fn=_similarity)

    p = sub.add_parser("plot", help="PNGs of faq-train runs (gradient noise, learning curves, similarity).")
    p.add_argument("run_dirs", nargs="+", help="faq-train model_dirs.")
    p.add_argument("--out", default="plots", help="Output folder.")
    p.add_argument("--similarity", action="append", default=[], help="LABEL=A.h5,B.h5 (repeat): bars.")
    p.set_defaults(fn=_plot)

    p = sub.add_parser("study", help="Run a base flagfile and variants; a Table 2 style table.")
    p.add_argument("--base", required=True, help="The base flagfile.")
    p.add_argument("--preset", choices=["fashion_mnist"], help="A built-in set of Table 2 variants.")
    p.add_argument("--variant", action="append", default=[], help='"NAME=--flag=v,--flag2=v" (repeat).')
    p.add_argument("--extra", action="append", default=[], help="A flag added to every row (repeat).")
    p.add_argument("--parallel", type=int, default=1, help="Rows run at the same time.")
    p.add_argument("--out", default="runs/study", help="Output folder.")
    p.set_defaults(fn=_study)

    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, OSError) as e:  # bad input; a bug still shows its traceback
        message = " ".join(str(e).split())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
