"""The FAQ fine-tuning engine.

`config` (every option once), `run` (build, train, finish), `trainer` (the step and the
epoch loop), `checkpoints`, `records` (metrics, TensorBoard, diagnostics), `schedules`
and `errors`.
"""

from faq_tf.training.config import TrainConfig
from faq_tf.training.errors import NonFiniteLossError, SaveError, WorkerLostError
from faq_tf.training.run import run
from faq_tf.training.schedules import BatchSchedule, LearningRateSchedule
from faq_tf.training.trainer import Trainer, get_strategy

__all__ = [
    "BatchSchedule",
    "LearningRateSchedule",
    "NonFiniteLossError",
    "SaveError",
    "TrainConfig",
    "Trainer",
    "get_strategy",
    "run",
    "WorkerLostError",
]
