"""Training step time of fp32 vs FAQ fine-tuning (w8a8, w4a4) vs tfmot QAT, interleaved in one run.

Builds the same model once per variant (fp32; FAQ w8a8, w4a4; tfmot's default 8-bit and
n-bit 4/4 QAT), then times `Trainer.train_update` for each in round-robin blocks on the
same batches, so machine noise hits all of them alike.
Reports the median step time, the ratio to fp32 and the implied seconds per epoch.

Usage: python -m benchmarks.step_time [--model small_resnet] [--batch_size 128] [--rounds 15]
"""

import argparse
import json
import statistics
import time

import numpy as np

import faq_tf
from benchmarks.common import write_json
from faq_tf.baselines import is_tfmot_baseline, tfmot_quantize
from faq_tf.compat import keras, tf
from faq_tf.data import get_source, make_input
from faq_tf.models import build_model
from faq_tf.training import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small_resnet")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps_per_round", type=int, default=10)
    parser.add_argument("--variants", default="fp32,w8a8,w4a4,tfmot_int8,tfmot_w4a4")
    parser.add_argument("--out", default="runs/step_time.json")
    args = parser.parse_args()

    source = get_source(args.dataset)
    strategy = tf.distribute.get_strategy()
    base, spec = build_model(args.model, source.num_classes)
    shape = tuple(base.input_shape[1:])
    train = make_input(source, "train", args.batch_size, shape, spec.preprocess)
    calib = train.map(lambda x, y: x).take(5)
    variants = {}
    for precision in args.variants.split(","):
        if is_tfmot_baseline(precision):
            model = tfmot_quantize(base, precision)
        else:
            model = faq_tf.quantize_model(base, precision, calib, verbose=False)
        opt = keras.optimizers.SGD(1e-4, momentum=0.9)
        opt.build(model.trainable_variables)
        trainer = Trainer(model, opt, strategy, args.batch_size, weight_decay=5e-5)
        it = iter(train.repeat())
        trainer.train_update(it, 1, 1e-4)  # trace
        variants[precision] = (trainer, it, [])
    for _ in range(args.rounds):
        for _precision, (trainer, it, times) in variants.items():
            start = time.perf_counter()
            for _ in range(args.steps_per_round):
                trainer.train_update(it, 1, 1e-4)
            times.append((time.perf_counter() - start) / args.steps_per_round)
    steps_per_epoch = source.num_train // args.batch_size
    fp32 = statistics.median(variants["fp32"][2])
    result = {
        "model": args.model,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "steps_per_round": args.steps_per_round,
        "median_step_ms": {p: round(statistics.median(v[2]) * 1000, 2) for p, v in variants.items()},
        "ratio_to_fp32": {p: round(statistics.median(v[2]) / fp32, 3) for p, v in variants.items()},
        "seconds_per_epoch": {p: round(statistics.median(v[2]) * steps_per_epoch, 1) for p, v in variants.items()},
        "spread_ms": {
            p: [round(float(np.percentile(v[2], q)) * 1000, 1) for q in (10, 90)] for p, v in variants.items()
        },
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=1))
    print("\n| precision | median step (ms) | ratio to fp32 | s / epoch |\n|---|---|---|---|")
    for p in variants:
        print(
            f"| {p} | {result['median_step_ms'][p]} | {result['ratio_to_fp32'][p]} | {result['seconds_per_epoch'][p]} |"
        )


if __name__ == "__main__":
    main()
