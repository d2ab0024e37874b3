"""`TrainConfig`: the frozen, validated description of one faq-train run."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from faq_tf.baselines import is_tfmot_baseline
from faq_tf.calibration import DEFAULT_BATCHES, DEFAULT_PERCENTILE_8BIT, DEFAULT_PERCENTILE_LOW_BIT, check_percentile
from faq_tf.policy import parse_override, parse_precision
from faq_tf.training.schedules import BatchSchedule, LearningRateSchedule

__all__ = ["TrainConfig", "STRATEGIES", "DIAGNOSTICS"]

# What --diagnostics can switch on (faq_tf.diagnostics).
DIAGNOSTICS = ("grad_noise",)

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; library code takes this, never absl FLAGS.

    See `faq_tf/train.py` for the meaning of each field (one flag each).
    """

    model: str = "small_resnet"
    pretrained: str = "none"
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    batch_size: int = 128
    image_size: int | None = None
    precision: str = "fp32"
    layer_overrides: tuple[tuple[str, str], ...] = ()
    calibrate: bool = True
    calibration_batches: int = DEFAULT_BATCHES
    calibration_percentile: float = DEFAULT_PERCENTILE_8BIT
    calibration_percentile_low_bit: float = DEFAULT_PERCENTILE_LOW_BIT
    epochs: int = 1
    steps_per_epoch: int | None = None
    eval_steps: int | None = None
    lr: float = 1e-4
    lr_schedule: str = "constant"
    lr_final: float | None = None
    lr_decay: float | None = None
    lr_boundaries: tuple[int, ...] = ()
    batch_schedule: str = ""
    weight_decay: float = 0.0
    decoupled_weight_decay: bool = False
    momentum: float = 0.9
    strategy: str = "default"
    model_dir: str = "runs/faq"
    seed: int = 0
    eval_every: int = 1
    checkpoint_every_steps: int = 0
    nan_policy: str = "stop"
    deterministic: bool = False
    diagnostics: tuple[str, ...] = ()

    def __post_init__(self):
        def positive_int(name, value, allow_none=False):
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

        positive_int("batch_size", self.batch_size)
        positive_int("epochs", self.epochs)
        positive_int("calibration_batches", self.calibration_batches)
        positive_int("eval_every", self.eval_every)
        positive_int("steps_per_epoch", self.steps_per_epoch, allow_none=True)
        positive_int("eval_steps", self.eval_steps, allow_none=True)
        positive_int("image_size", self.image_size, allow_none=True)
        if self.checkpoint_every_steps < 0:
            raise ValueError(f"checkpoint_every_steps must be >= 0, got {self.checkpoint_every_steps}")
        if not is_tfmot_baseline(self.precision):
            try:
                parse_precision(self.precision)
            except ValueError as e:
                raise ValueError(f"precision={self.precision!r}: {e}") from None
        for name, spec in self.layer_overrides:
            try:
                parse_override(spec)
            except ValueError as e:
                raise ValueError(f"layer_overrides {name}={spec}: {e}") from None
        check_percentile(self.calibration_percentile)
        check_percentile(self.calibration_percentile_low_bit)
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0.0 <= self.weight_decay < 1.0:
            raise ValueError(f"weight_decay must be in [0, 1), got {self.weight_decay}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        unknown = set(self.diagnostics) - set(DIAGNOSTICS)
        if unknown:
            raise ValueError(f"diagnostics {sorted(unknown)} unknown; available: {', '.join(DIAGNOSTICS)}")
        if "grad_noise" in self.diagnostics and (self.precision == "fp32" or is_tfmot_baseline(self.precision)):
            raise ValueError(
                "diagnostics=grad_noise measures the noise faq_tf's weight quantizers add; use a faq_tf "
                f"precision such as w8a8 or w4a4, not {self.precision!r}."
            )
        if self.nan_policy not in ("stop", "skip"):
            raise ValueError(f"nan_policy must be 'stop' or 'skip', got {self.nan_policy!r}")
        if not self.model_dir:
            raise ValueError("model_dir must be set")
        self.lr_schedule_fn()  # validates the schedule
        self.batch_schedule_obj().check(self.batch_size)

    def lr_schedule_fn(self) -> LearningRateSchedule:
        """The learning-rate schedule."""
        return LearningRateSchedule(
            self.lr_schedule, self.lr, self.epochs, self.lr_final, self.lr_decay, tuple(self.lr_boundaries)
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

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        values = dict(values)
        values["layer_overrides"] = tuple(tuple(x) for x in values.get("layer_overrides", ()))
        values["lr_boundaries"] = tuple(values.get("lr_boundaries", ()))
        return cls(**values)
