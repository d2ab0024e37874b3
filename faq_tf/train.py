"""faq-train: FAQ fine-tuning (or fp32 training) from absl flags.

  faq-train --flagfile=flags/fashion_mnist/w8a8.flags --model_dir=runs/fm_w8a8
  python -m faq_tf.train --flagfile=...

Every flag is a `TrainConfig` field (faq_tf/training/config.py: type, default, help and
check in one place). Flags become a frozen `TrainConfig`, written to model_dir/config.json;
the library never sees FLAGS.

Exit codes: 0 done; 2 bad input (flags, files, data, an unwritable model_dir), with one
line on stderr; 1 the run diverged (NaN/Inf gradients with --nan_policy=stop); 75 a worker
of a multi-worker run died (restart every worker to resume).
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from faq_tf.training.config import TrainConfig, options

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines one flag per `TrainConfig` field (safe to call twice)."""
    if "model_dir" in flag_values:
        return
    for opt in options():
        if opt.choices is not None:
            flags.DEFINE_enum(opt.name, opt.default, list(opt.choices), opt.help, flag_values=flag_values)
        else:
            define = getattr(flags, f"DEFINE_{opt.kind}")
            define(opt.name, opt.flag_default, opt.help, flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> TrainConfig:
    """Turns parsed flags into a validated `TrainConfig` (ValueError names the bad flag)."""
    return TrainConfig.from_flag_values({opt.name: flag_values[opt.name].value for opt in options()})


def _fail(error: BaseException | str, code: int) -> None:
    message = " ".join(str(error).split())  # one line, whatever the exception's text
    print(f"faq-train: error: {message}", file=sys.stderr)
    sys.exit(code)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return FLAGS(argv)
    except flags.Error as e:  # unknown flag, bad value, unreadable flagfile
        _fail(e, 2)


def main(argv: list[str]) -> None:
    del argv
    try:
        config = config_from_flags()
    except ValueError as e:
        _fail(e, 2)
    from faq_tf.training import errors, run

    try:
        final = run(config)
    except errors.WorkerLostError as e:  # a scheduler should restart the job: EX_TEMPFAIL
        logging.error("%s", e)
        _fail(e, 75)
    except errors.NonFiniteLossError as e:
        _fail(e, 1)
    except (ValueError, OSError) as e:  # bad input: files, data, layers, model_dir (SaveError is an OSError)
        logging.debug("faq-train stopped", exc_info=True)
        _fail(e, 2)
    print(f"faq-train finished: {final}  (outputs in {config.model_dir})")


def cli() -> None:
    """Console entry point (`faq-train`)."""
    define_flags()
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    cli()
