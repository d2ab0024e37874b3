"""Learning-rate and batch-size schedules, both defined per epoch (paper sections 3.3 and 4).

* exp: lr_e = lr * decay^e, floored at lr_final. Without an explicit decay it is chosen
  so that lr reaches lr_final after the last epoch: decay = (lr_final / lr)^(1 / epochs)
  (the paper's 0.0015 * 0.936^110 = 1.0e-6).
* step: lr is multiplied by `decay` (default 0.1) at each boundary epoch; when lr_final
  is set, the last boundary drops straight to lr_final (section 4.3).
* cosine: lr_final + (lr - lr_final) * (1 + cos(pi * e / epochs)) / 2.
* constant: lr.

The batch schedule "256@0,512@55" gives the effective batch size per epoch. The real
batch stays fixed; larger effective batches are virtual (footnote 6): the gradients of
n real batches are averaged before one weight update.
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["LearningRateSchedule", "BatchSchedule", "LR_KINDS"]

LR_KINDS = ("exp", "step", "cosine", "constant")


@dataclasses.dataclass(frozen=True)
class LearningRateSchedule:
    """A per-epoch learning rate.

    Attributes:
      kind: "exp", "step", "cosine" or "constant".
      lr: the initial learning rate.
      epochs: the length of the run.
      lr_final: the floor (exp), the last value (step, cosine); None means none.
      decay: exp factor per epoch, or step factor per boundary; None: derived (exp) or 0.1.
      boundaries: epochs at which a step schedule drops.
    """

    kind: str
    lr: float
    epochs: int
    lr_final: float | None = None
    decay: float | None = None
    boundaries: tuple[int, ...] = ()

    def __post_init__(self):
        if self.kind not in LR_KINDS:
            raise ValueError(f"lr_schedule must be one of {LR_KINDS}, got {self.kind!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs!r}")
        if self.lr_final is not None and not (0 <= self.lr_final <= self.lr):
            raise ValueError(f"lr_final must be in [0, lr={self.lr}], got {self.lr_final!r}")
        if self.decay is not None and not (0 < self.decay <= 1):
            raise ValueError(f"lr_decay must be in (0, 1], got {self.decay!r}")
        if self.kind == "exp" and self.decay is None and not self.lr_final:
            raise ValueError("an exp schedule needs lr_decay or a positive lr_final")
        if self.kind == "step":
            if not self.boundaries:
                raise ValueError("a step schedule needs lr_boundaries, e.g. 30,60,85,95")
            if list(self.boundaries) != sorted(set(self.boundaries)) or self.boundaries[0] < 1:
                raise ValueError(f"lr_boundaries must be increasing epochs >= 1, got {list(self.boundaries)}")

    @property
    def exp_decay(self) -> float:
        """The exp factor per epoch (given, or derived from lr_final)."""
        if self.decay is not None:
            return self.decay
        return (self.lr_final / self.lr) ** (1.0 / self.epochs)

    def __call__(self, epoch: int) -> float:
        """The learning rate used throughout `epoch` (0-based)."""
        if self.kind == "constant":
            return self.lr
        if self.kind == "exp":
            lr = self.lr * self.exp_decay**epoch
            return max(lr, self.lr_final or 0.0)
        if self.kind == "cosine":
            final = self.lr_final or 0.0
            return final + (self.lr - final) * 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))
        passed = sum(1 for b in self.boundaries if epoch >= b)
        if self.lr_final is not None and passed == len(self.boundaries):
            return self.lr_final
        return self.lr * (self.decay if self.decay is not None else 0.1) ** passed


@dataclasses.dataclass(frozen=True)
class BatchSchedule:
    """Effective batch size per epoch, as (start_epoch, size) pairs starting at epoch 0."""

    entries: tuple[tuple[int, int], ...]

    def __post_init__(self):
        if not self.entries or self.entries[0][0] != 0:
            raise ValueError(f"a batch schedule must start at epoch 0, got {self._text()!r}")
        epochs = [e for e, _ in self.entries]
        if epochs != sorted(set(epochs)):
            raise ValueError(f"batch schedule epochs must increase, got {self._text()!r}")
        if any(size < 1 for _, size in self.entries):
            raise ValueError(f"batch sizes must be positive, got {self._text()!r}")

    def _text(self) -> str:
        return ",".join(f"{s}@{e}" for e, s in self.entries)

    @classmethod
    def parse(cls, text: str | None, batch_size: int) -> BatchSchedule:
        """Parses "256@0,512@55"; empty text means `batch_size` throughout."""
        if not text:
            return cls(((0, batch_size),))
        entries = []
        for part in text.split(","):
            try:
                size, epoch = part.strip().split("@")
                entries.append((int(epoch), int(size)))
            except ValueError:
                raise ValueError(
                    f"bad batch_schedule entry {part!r} in {text!r}: use SIZE@EPOCH, e.g. 256@0,512@55"
                ) from None
        return cls(tuple(entries))

    def size_at(self, epoch: int) -> int:
        """The effective batch size during `epoch`."""
        return [s for e, s in self.entries if e <= epoch][-1]

    def accumulation_at(self, epoch: int, batch_size: int) -> int:
        """n, the number of real batches of `batch_size` per weight update during `epoch`."""
        return self.size_at(epoch) // batch_size

    def check(self, batch_size: int) -> None:
        """Raises ValueError unless every size is a multiple of the real batch size."""
        bad = [s for _, s in self.entries if s % batch_size]
        if bad:
            raise ValueError(
                f"batch_schedule sizes {bad} are not multiples of batch_size={batch_size}; "
                "virtual batches are whole numbers of real batches."
            )
