#!/bin/bash
# The README's diagnostics numbers on Fashion-MNIST:
# gradient noise at 8/4/2 bits, weight similarity, a Table 2 style study, and the plots.
# Run from the repository root after `make` (and `make demo`, whose w4a4 run is compared).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=runs/diag
mkdir -p $OUT
# (a) gradient noise at 8, 4, 2 bits: the paper's w4a4 recipe for one epoch, from the fp32 baseline
for p in w8a8 w4a4 w2a2; do
  $PY -m faq_tf.train --flagfile=flags/fashion_mnist/w4a4.flags --precision=$p --epochs=1 --ema_decay=0 --calibration_method_low_bit=percentile --calibration_percentile_low_bit=99.9 \
      --diagnostics=grad_noise --model_dir=$OUT/noise_$p > $OUT/noise_$p.log 2>&1
done
# (b) similarity: a from-scratch fp32 run from a saved random init (3 epochs of fp32.flags)
$PY - <<'PY'
import faq_tf
from faq_tf.compat import keras
from faq_tf.models import build_model
keras.utils.set_random_seed(0)
m, _ = build_model("small_resnet", 10, "none")
m.save("runs/diag/random_init.h5")
PY
$PY -m faq_tf.train --flagfile=flags/fashion_mnist/fp32.flags --pretrained=$OUT/random_init.h5 --epochs=3 \
    --model_dir=$OUT/scratch > $OUT/scratch.log 2>&1
# (c) Table 2 style study: the paper's w4a4 recipe, 2 epochs per row
$PY -m faq_tf.diagnostics study --base=flags/fashion_mnist/w4a4.flags --preset=fashion_mnist \
    --extra=--epochs=2 --extra=--ema_decay=0 --extra=--calibration_method_low_bit=percentile --extra=--calibration_percentile_low_bit=99.9 --out=$OUT/study > $OUT/study.out 2>&1
# similarity: random init -> scratch, and the fp32 baseline -> FAQ w4a4 of `make demo`
$PY -m faq_tf.diagnostics similarity $OUT/random_init.h5 $OUT/scratch/model.h5 --json $OUT/sim_scratch.json
$PY -m faq_tf.diagnostics similarity baselines/fashion_mnist/small_resnet_fp32.h5 runs/demo/w4a4/model.h5 \
    --json $OUT/sim_faq_w4a4.json
$PY -m faq_tf.diagnostics plot $OUT/noise_w8a8 $OUT/noise_w4a4 $OUT/noise_w2a2 --out $OUT/plots \
    --similarity="random init -> fp32 scratch (3 ep)=$OUT/random_init.h5,$OUT/scratch/model.h5" \
    --similarity="fp32 baseline -> FAQ w4a4 (10 ep)=baselines/fashion_mnist/small_resnet_fp32.h5,runs/demo/w4a4/model.h5"
echo "outputs in $OUT"
