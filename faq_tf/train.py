"""faq-train: FAQ fine-tuning (or fp32 training) from absl flags.

  faq-train --flagfile=flags/fashion_mnist/w8a8.flags --model_dir=runs/fm_w8a8
  python -m faq_tf.train --flagfile=...

Flags become a frozen `TrainConfig` (written to model_dir/config.json); the library
never sees FLAGS.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from faq_tf.training.config import TrainConfig

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the faq-train flags (safe to call twice)."""
    if "model_dir" in FLAGS:
        return
    d = TrainConfig()
    # model and weights
    flags.DEFINE_string("model", d.model, "Model name (faq_tf.models.MODELS).")
    flags.DEFINE_string("pretrained", d.pretrained, "imagenet | none | path to .h5 weights or a SavedModel.")
    flags.DEFINE_integer("image_size", None, "Square input size (default: the model's).")
    # data
    flags.DEFINE_string("dataset", d.dataset, "fashion_mnist | cifar10 | imagenet2012 | tfds:NAME | folder:PATH.")
    flags.DEFINE_string("data_dir", None, "Data folder (IDX files, TFDS data dir, ImageNet manual dir).")
    flags.DEFINE_integer("batch_size", d.batch_size, "Global real batch size (summed over replicas).")
    # quantization
    flags.DEFINE_string(
        "precision",
        d.precision,
        "fp32 | w8a8 | w4a4 | w<b>a<b> (custom; see --layer_overrides) | tfmot_int8 | tfmot_w4a4 (baselines).",
    )
    flags.DEFINE_list("layer_overrides", [], "Per-layer overrides NAME_OR_REGEX=SPEC, e.g. conv1=w8,fc=a8.")
    flags.DEFINE_bool("calibrate", d.calibrate, "Calibrate activation ranges (False: the random-init control).")
    flags.DEFINE_integer("calibration_batches", d.calibration_batches, "Batches of training data for calibration.")
    flags.DEFINE_float("calibration_percentile", d.calibration_percentile, "Percentile for 8-bit tensors.")
    flags.DEFINE_float("calibration_percentile_low_bit", d.calibration_percentile_low_bit, "Percentile below 8 bits.")
    # schedule
    flags.DEFINE_integer("epochs", d.epochs, "Epochs.")
    flags.DEFINE_integer("steps_per_epoch", None, "Real batches per epoch (default: the whole training set).")
    flags.DEFINE_integer("eval_steps", None, "Test batches per evaluation (default: all).")
    flags.DEFINE_float("lr", d.lr, "Initial learning rate.")
    flags.DEFINE_enum("lr_schedule", d.lr_schedule, ["exp", "step", "cosine", "constant"], "Per-epoch schedule.")
    flags.DEFINE_float("lr_final", None, "Final learning rate (exp floor / step last value / cosine end).")
    flags.DEFINE_float("lr_decay", None, "exp: factor per epoch (default: reach lr_final); step: factor (0.1).")
    flags.DEFINE_list("lr_boundaries", [], "step: epochs at which the learning rate drops.")
    flags.DEFINE_string("batch_schedule", d.batch_schedule, "Effective batch per epoch, e.g. 256@0,512@55.")
    # optimizer
    flags.DEFINE_float("weight_decay", d.weight_decay, "Weight decay.")
    flags.DEFINE_bool("decoupled_weight_decay", d.decoupled_weight_decay, "Decoupled instead of PyTorch-style L2.")
    flags.DEFINE_float("momentum", d.momentum, "SGD momentum.")
    # run
    flags.DEFINE_enum("strategy", d.strategy, ["default", "mirrored", "multi_worker", "tpu"], "tf.distribute.")
    flags.DEFINE_string("model_dir", d.model_dir, "Output and checkpoint folder; rerun to resume.")
    flags.DEFINE_integer("seed", d.seed, "Random seed.")
    flags.DEFINE_integer("eval_every", d.eval_every, "Evaluate every N epochs.")
    flags.DEFINE_integer("checkpoint_every_steps", d.checkpoint_every_steps, "Also checkpoint every N updates.")
    flags.DEFINE_enum("nan_policy", d.nan_policy, ["stop", "skip"], "On NaN/Inf gradients: stop or skip the step.")
    flags.DEFINE_bool("deterministic", d.deterministic, "Bit-identical reruns (TF op determinism; slower on GPU).")
    flags.DEFINE_list(
        "diagnostics", [], "Measurements to record: grad_noise (per-layer gradient noise, diagnostics.json)."
    )


def config_from_flags(f=FLAGS) -> TrainConfig:
    """Turns parsed flags into a validated `TrainConfig`."""
    overrides = []
    for item in f.layer_overrides:
        if "=" not in item:
            raise ValueError(f"--layer_overrides entry {item!r} must be NAME=SPEC, e.g. conv1=w8")
        overrides.append(tuple(item.split("=", 1)))
    try:
        boundaries = tuple(int(b) for b in f.lr_boundaries)
    except ValueError:
        raise ValueError(f"--lr_boundaries must be integers, got {f.lr_boundaries}") from None
    return TrainConfig(
        model=f.model,
        pretrained=f.pretrained,
        dataset=f.dataset,
        data_dir=f.data_dir,
        batch_size=f.batch_size,
        image_size=f.image_size,
        precision=f.precision,
        layer_overrides=tuple(overrides),
        calibrate=f.calibrate,
        calibration_batches=f.calibration_batches,
        calibration_percentile=f.calibration_percentile,
        calibration_percentile_low_bit=f.calibration_percentile_low_bit,
        epochs=f.epochs,
        steps_per_epoch=f.steps_per_epoch,
        eval_steps=f.eval_steps,
        lr=f.lr,
        lr_schedule=f.lr_schedule,
        lr_final=f.lr_final,
        lr_decay=f.lr_decay,
        lr_boundaries=boundaries,
        batch_schedule=f.batch_schedule,
        weight_decay=f.weight_decay,
        decoupled_weight_decay=f.decoupled_weight_decay,
        momentum=f.momentum,
        strategy=f.strategy,
        model_dir=f.model_dir,
        seed=f.seed,
        eval_every=f.eval_every,
        checkpoint_every_steps=f.checkpoint_every_steps,
        nan_policy=f.nan_policy,
        deterministic=f.deterministic,
        diagnostics=tuple(f.diagnostics),
    )


def main(argv) -> None:
    from faq_tf.training.run import NonFiniteLossError, SaveError, WorkerLostError, run

    del argv
    try:
        config = config_from_flags()
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    try:
        final = run(config)
    except WorkerLostError as e:  # a scheduler should restart the job: EX_TEMPFAIL
        logging.error("%s", e)
        print(f"faq-train: {e}", file=sys.stderr)
        sys.exit(75)
    except (SaveError, NonFiniteLossError, FileNotFoundError) as e:
        print(f"faq-train: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"faq-train finished: {final}  (outputs in {config.model_dir})")


def cli() -> None:
    """Console entry point (`faq-train`)."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    cli()
