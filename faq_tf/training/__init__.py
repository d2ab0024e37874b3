"""The FAQ fine-tuning engine: schedules, the tf.distribute trainer, checkpoints and `run`."""

from faq_tf.training.config import TrainConfig
from faq_tf.training.run import NonFiniteLossError, SaveError, WorkerLostError, run
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
