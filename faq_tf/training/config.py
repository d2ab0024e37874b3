"""`TrainConfig`: the frozen, validated description of one faq-train run.

Every option is written once, as a field here: its type, default, help text and check.
The `faq-train` flags (`faq_tf.train`), their parsing, `config.json` and the argv that
tests and scripts pass to the binary (`TrainConfig.to_argv`) are all derived from it.

Example:

  >>> config = TrainConfig(precision="w4a4", epochs=10, lr=0.005, lr_schedule="exp", lr_final=1e-6)
  >>> config.to_argv()[:2]
  ['--precision=w4a4', '--epochs=10']
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from faq_tf.baselines import TFMOT_BASELINES, is_tfmot_baseline
from faq_tf.calibration import (
    CALIBRATION_METHODS,
    DEFAULT_BATCHES,
    DEFAULT_PERCENTILE_8BIT,
    DEFAULT_PERCENTILE_LOW_BIT,
    check_percentile,
)
from faq_tf.policy import parse_override, parse_precision
from faq_tf.training.schedules import LR_KINDS, BatchSchedule, LearningRateSchedule

__all__ = ["TrainConfig", "Option", "options", "STRATEGIES", "DIAGNOSTICS", "NAN_POLICIES"]

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
DIAGNOSTICS = ("grad_noise",)  # what --diagnostics can switch on (faq_tf.diagnostics)
NAN_POLICIES = ("stop", "skip")

Check = Callable[[str, Any], None]


def _positive(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _non_negative(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def _fraction(name: str, value: Any) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def _unit_interval(name: str, value: Any) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _positive_float(name: str, value: Any) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _precise_bn(name: str, value: Any) -> None:
    if value in ("auto", "off") or (value.isdigit() and int(value) > 0):
        return
    raise ValueError(f"{name} must be auto, off or a positive number of batches, got {value!r}")


def _percentile(name: str, value: Any) -> None:
    check_percentile(value)


def _non_empty(name: str, value: Any) -> None:
    if not value:
        raise ValueError(f"{name} must be set")


def _precision(name: str, value: Any) -> None:
    if not is_tfmot_baseline(value):
        try:
            parse_precision(value)
        except ValueError as e:
            raise ValueError(f"{name}={value!r}: {e}") from None


def _overrides(name: str, value: Any) -> None:
    for layer, spec in value:
        try:
            parse_override(spec)
        except ValueError as e:
            raise ValueError(f"{name} {layer}={spec}: {e}") from None


def _subset_of(allowed: Sequence[str]) -> Check:
    def check(name: str, value: Any) -> None:
        unknown = set(value) - set(allowed)
        if unknown:
            raise ValueError(f"{name} {sorted(unknown)} unknown; available: {', '.join(allowed)}")

    return check


def _option(default: Any, help: str, check: Check | None = None, choices: Sequence[str] | None = None) -> Any:
    """A TrainConfig field: its default, the flag's help text, and how to validate it."""
    return dataclasses.field(default=default, metadata={"help": help, "check": check, "choices": choices})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; library code takes this, never absl FLAGS. One field per flag."""

    # model and weights
    model: str = _option("small_resnet", "Model name (faq_tf.models.MODELS).")
    pretrained: str = _option(
        "none",
        "imagenet | none | path to .h5 weights or a SavedModel of --model | a torchvision state_dict "
        "(.pth/.safetensors) of a torchvision-topology --model | path to a .keras fp32 model "
        "(Keras 3 or tf_keras; it replaces --model).",
    )
    image_size: int | None = _option(None, "Square input size (default: the model's).", _positive)
    preprocess: str = _option(
        "auto",
        "Pixels [0, 255] -> model input: auto (the model's own; a .keras model: none if it starts with "
        "Rescaling/Normalization, else unit) | unit (x/256) | symmetric (x/128-1) | torch (ImageNet mean/std) "
        "| none (raw pixels).",
        choices=("auto", "unit", "symmetric", "torch", "none"),
    )
    # data
    dataset: str = _option("fashion_mnist", "fashion_mnist | cifar10 | imagenet2012 | tfds:NAME | folder:PATH.")
    data_dir: str | None = _option(None, "Data folder (IDX files, TFDS data dir, ImageNet manual dir).")
    batch_size: int = _option(128, "Global real batch size (summed over replicas).", _positive)
    # quantization
    precision: str = _option(
        "fp32",
        "fp32 | w8a8 | w4a4 | w<b>a<b> (custom; see --layer_overrides) | "
        + " | ".join(TFMOT_BASELINES)
        + " (baselines).",
        _precision,
    )
    layer_overrides: tuple[tuple[str, str], ...] = _option(
        (), "Per-layer overrides NAME_OR_REGEX=SPEC, e.g. conv1=w8,fc=a8.", _overrides
    )
    calibrate: bool = _option(True, "Calibrate activation ranges (False: the random-init control).")
    calibration_batches: int = _option(DEFAULT_BATCHES, "Batches of training data for calibration.", _positive)
    calibration_percentile: float = _option(DEFAULT_PERCENTILE_8BIT, "Percentile for 8-bit tensors.", _percentile)
    calibration_percentile_low_bit: float = _option(DEFAULT_PERCENTILE_LOW_BIT, "Percentile below 8 bits.", _percentile)
    calibration_method_low_bit: str = _option(
        "percentile",
        "How tensors below 8 bits get their exponent: percentile (the paper's); beyond the paper, mse (the "
        "power-of-two grid with the least squared error on the calibration batches, searched around the "
        "percentile's) or output (from mse's grids, each moved while that brings the quantized model's "
        "outputs closer to the fp32 model's).",
        choices=CALIBRATION_METHODS,
    )
    # schedule
    epochs: int = _option(
        1,
        "Epochs. 0: no training; the starting model (fp32, or quantized and calibrated) is evaluated and "
        "saved, e.g. to check imported weights against their published accuracy before fine-tuning.",
        _non_negative,
    )
    steps_per_epoch: int | None = _option(None, "Real batches per epoch (default: the whole training set).", _positive)
    eval_steps: int | None = _option(None, "Test batches per evaluation (default: all).", _positive)
    lr: float = _option(1e-4, "Initial learning rate.")
    lr_schedule: str = _option("constant", "Per-epoch schedule.", choices=LR_KINDS)
    lr_final: float | None = _option(None, "Final learning rate (exp floor / step last value / cosine end).")
    lr_decay: float | None = _option(None, "exp: factor per epoch (default: reach lr_final); step: factor (0.1).")
    lr_boundaries: tuple[int, ...] = _option((), "step: epochs at which the learning rate drops.")
    batch_schedule: str = _option("", "Effective batch per epoch, e.g. 256@0,512@55.")
    # optimizer
    weight_decay: float = _option(0.0, "Weight decay.", _fraction)
    decoupled_weight_decay: bool = _option(False, "Decoupled instead of PyTorch-style L2.")
    momentum: float = _option(0.9, "SGD momentum.", _fraction)
    # beyond the paper (opt-in)
    distill: float = _option(
        0.0,
        "Distil from the fp32 model FAQ starts from: weight alpha of the distillation loss "
        "(0 = the paper's cross-entropy only).",
        _unit_interval,
    )
    distill_temperature: float = _option(1.0, "Softmax temperature of the distillation loss.", _positive_float)
    ema_decay: float = _option(
        0.0,
        "End the run with an exponential moving average of the weights, updated after every weight update "
        "with this decay (e.g. 0.999; 0 = the paper's last weights). The averaged model gets exact BatchNorm "
        "statistics (--precise_bn) and its own weight exponents. The average starts at the starting weights: "
        "use runs of many times 1/(1 - decay) updates.",
        _fraction,
    )
    jit_compile: bool = _option(False, "Compile the forward and backward pass with XLA.")
    # run
    strategy: str = _option("default", "tf.distribute.", choices=STRATEGIES)
    model_dir: str = _option("runs/faq", "Output and checkpoint folder; rerun to resume.", _non_empty)
    seed: int = _option(0, "Random seed.")
    eval_every: int = _option(1, "Evaluate every N epochs.", _positive)
    checkpoint_every_steps: int = _option(0, "Also checkpoint every N updates.", _non_negative)
    nan_policy: str = _option("stop", "On NaN/Inf gradients: stop or skip the step.", choices=NAN_POLICIES)
    precise_bn: str = _option(
        "auto",
        "Before the final evaluation and save, set BatchNorm statistics to exact averages over N training "
        "batches: N | off | auto (100, or as many as the run trained on if fewer, when the run is short for "
        "the BN momentum: more than 0.1% of the initial moving statistics left).",
        _precise_bn,
    )
    precise_bn_each_epoch: bool = _option(
        False,
        "Also set exact BatchNorm statistics (as --precise_bn, over the batches trained so far) before each "
        "epoch's evaluation, so that every epoch's test accuracy is that of its exact statistics.",
    )
    deterministic: bool = _option(False, "Bit-identical reruns (TF op determinism; slower on GPU).")
    diagnostics: tuple[str, ...] = _option(
        (),
        "Measurements to record: grad_noise (per-layer gradient noise, diagnostics.json).",
        _subset_of(DIAGNOSTICS),
    )

    def __post_init__(self):
        for opt in options():
            value = getattr(self, opt.name)
            if opt.choices is not None and value not in opt.choices:
                raise ValueError(f"{opt.name} must be one of {tuple(opt.choices)}, got {value!r}")
            if opt.check is not None:
                opt.check(opt.name, value)
        if "grad_noise" in self.diagnostics and (self.precision == "fp32" or is_tfmot_baseline(self.precision)):
            raise ValueError(
                "diagnostics=grad_noise measures the noise faq_tf's weight quantizers add; use a faq_tf "
                f"precision such as w8a8 or w4a4, not {self.precision!r}."
            )
        if self.calibration_method_low_bit != "percentile" and not self.calibrate:
            raise ValueError(
                f"calibration_method_low_bit={self.calibration_method_low_bit} chooses calibrated exponents, "
                "but calibrate=False skips calibration; drop --calibrate=false or use "
                "--calibration_method_low_bit=percentile."
            )
        if self.distill and (self.precision == "fp32" or is_tfmot_baseline(self.precision)):
            raise ValueError(
                f"distill={self.distill} teaches a faq_tf quantized model from its fp32 start; use a "
                f"precision such as w8a8 or w4a4 (not {self.precision!r}), or distill=0."
            )
        if self.distill and self.pretrained == "none":
            raise ValueError(
                f"distill={self.distill} needs trained fp32 weights to distil from; set --pretrained "
                "(imagenet or a weights file), or distill=0."
            )
        if self.ema_decay and self.precise_bn == "off":
            raise ValueError(
                f"ema_decay={self.ema_decay} ends the run with averaged weights, whose BatchNorm statistics "
                "must be recomputed; use --precise_bn=auto (or a number of batches), or ema_decay=0."
            )
        self.lr_schedule_fn()  # validates the schedule
        self.batch_schedule_obj().check(self.batch_size)

    def lr_schedule_fn(self) -> LearningRateSchedule:
        """The learning-rate schedule."""
        return LearningRateSchedule(
            self.lr_schedule, self.lr, max(self.epochs, 1), self.lr_final, self.lr_decay, tuple(self.lr_boundaries)
        )

    def batch_schedule_obj(self) -> BatchSchedule:
        """The effective-batch schedule (virtual batches)."""
        return BatchSchedule.parse(self.batch_schedule, self.batch_size)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)

    def save(self, model_dir: str | None = None) -> str:
        """Writes config.json into the model dir and returns its path."""
        path = os.path.join(model_dir or self.model_dir, "config.json")
        with open(path, "w") as f:
            f.write(self.to_json() + "\n")
        return path

    def to_argv(self) -> list[str]:
        """The faq-train flags that give this config (every value that differs from its default).

        Raises:
          ValueError: for a value no flag can express (None where the default is not).
        """
        argv = []
        for opt in options():
            value = getattr(self, opt.name)
            if value == opt.default:
                continue
            if opt.kind == "bool":
                argv.append(f"--{opt.name}" if value else f"--no{opt.name}")
            elif value is None:
                raise ValueError(f"{opt.name}=None cannot be written as a flag (its default is {opt.default!r})")
            elif opt.kind == "list":
                argv.append(f"--{opt.name}=" + ",".join(_item_text(item) for item in value))
            else:
                argv.append(f"--{opt.name}={value}")
        return argv

    @classmethod
    def from_flag_values(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Builds a config from parsed flag values (lists as lists of strings).

        Raises:
          ValueError: for a malformed list item or an invalid value, naming the flag.
        """
        fields = {}
        for opt in options():
            value = values[opt.name]
            if opt.kind == "list":
                value = tuple(_parse_item(opt, item) for item in value)
            fields[opt.name] = value
        return cls(**fields)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The inverse of `to_json` (lists back to tuples)."""
        values = dict(values)
        values["layer_overrides"] = tuple(tuple(x) for x in values.get("layer_overrides", ()))
        values["lr_boundaries"] = tuple(values.get("lr_boundaries", ()))
        values["diagnostics"] = tuple(values.get("diagnostics", ()))
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class Option:
    """One TrainConfig field as a flag.

    Attributes:
      name: the field and flag name.
      kind: "string", "integer", "float", "bool" or "list" (the absl flag type).
      item_type: for lists, the type of one item (str, int, or tuple for NAME=SPEC pairs).
      default: the default value.
      help: the help text.
      choices: the allowed values, for an enum flag.
      check: validates the value (raises ValueError naming the option).
    """

    name: str
    kind: str
    item_type: type | None
    default: Any
    help: str
    choices: Sequence[str] | None
    check: Check | None

    @property
    def flag_default(self) -> Any:
        """The default as the absl flag holds it (a list of strings for lists)."""
        return [_item_text(item) for item in self.default] if self.kind == "list" else self.default


_KINDS = {str: "string", int: "integer", float: "float", bool: "bool"}


def _flag_type(annotation: Any) -> tuple[str, type | None]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # X | None
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is tuple:
        item = typing.get_args(annotation)[0]
        return "list", typing.get_origin(item) or item
    return _KINDS[annotation], None


@functools.cache
def options() -> tuple[Option, ...]:
    """The options of `TrainConfig`, in field order."""
    hints = typing.get_type_hints(TrainConfig)
    result = []
    for field in dataclasses.fields(TrainConfig):
        kind, item_type = _flag_type(hints[field.name])
        meta = field.metadata
        result.append(Option(field.name, kind, item_type, field.default, meta["help"], meta["choices"], meta["check"]))
    return tuple(result)


def _item_text(item: Any) -> str:
    return "=".join(item) if isinstance(item, tuple) else str(item)


def _parse_item(opt: Option, text: str) -> Any:
    if opt.item_type is tuple:
        if "=" not in text:
            raise ValueError(f"--{opt.name} entry {text!r} must be NAME=SPEC, e.g. conv1=w8")
        return tuple(text.split("=", 1))
    if opt.item_type is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"--{opt.name} must be integers, got {text!r}") from None
    return text
