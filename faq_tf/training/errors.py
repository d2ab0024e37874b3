"""What can stop a faq-train run, and the guards that turn low-level failures into these errors.

`faq-train` maps them to exit codes: `WorkerLostError` 75 (EX_TEMPFAIL: restart the job),
`SaveError` and bad input (`ValueError`, `FileNotFoundError`) 2 with one line on stderr,
`NonFiniteLossError` 1 (the run diverged).
"""

from __future__ import annotations

import contextlib
import os
import re

from faq_tf.compat import tf

__all__ = [
    "NonFiniteLossError",
    "SaveError",
    "WorkerLostError",
    "check_writable",
    "saving",
    "worker_guard",
]


class NonFiniteLossError(RuntimeError):
    """Raised when a step's gradients are NaN/Inf and nan_policy is "stop"."""


class WorkerLostError(RuntimeError):
    """A worker of a multi-worker run died (preemption, crash); restart all of them to resume."""


class SaveError(OSError):
    """A checkpoint or model file could not be written (full disk, read-only folder).

    Files written before are intact: checkpoints are written to new files and the index
    is replaced atomically, and model.h5 / metrics.json are written beside and renamed.
    """


def check_writable(path: str) -> None:
    """Creates `path` if needed and checks that a file can be written there.

    Raises:
      SaveError: naming the folder and the reason, before anything is trained.
    """
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write_test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise SaveError(
            f"model_dir {path} is not writable ({e.strerror}): nothing was trained. Free space or fix the "
            "permissions, or choose another --model_dir."
        ) from e


@contextlib.contextmanager
def saving(what: str, path: str, last_checkpoint: str | None = None):
    """Runs a save; turns a write failure into a `SaveError` that says what is safe.

    Args:
      what: what is being written ("a checkpoint", "the model"), for the message.
      path: where.
      last_checkpoint: the newest checkpoint that was written completely, if any.
    """
    try:
        yield
    except (OSError, tf.errors.OpError) as error:
        reason = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
        raise SaveError(
            f"Could not write {what} to {path}: {reason.strip().splitlines()[0]}. The disk may be full or the "
            f"folder read-only. Nothing written before was changed; the last good checkpoint is "
            f"{last_checkpoint or 'none yet'}. Free space or fix the permissions and rerun the same command to "
            "resume."
        ) from error


@contextlib.contextmanager
def worker_guard(strategy: tf.distribute.Strategy, manager: tf.train.CheckpointManager):
    """Turns the collective-op failure a dead peer causes into a `WorkerLostError`."""
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError) as error:
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            raise
        detail = (getattr(error, "message", None) or str(error)).strip()
        resolver = strategy.cluster_resolver
        me = f"/job:{resolver.task_type}/replica:0/task:{resolver.task_id}"
        peers = sorted(set(re.findall(r"/job:\w+/replica:\d+/task:\d+", detail)) - {me})
        reason = detail.split("aborted by:")[-1].strip().splitlines()[0][:200]
        raise WorkerLostError(
            f"A worker of the cluster stopped ({', '.join(peers) or 'a peer of ' + me}: {reason}); it was "
            f"preempted or crashed. The last good checkpoint is {manager.latest_checkpoint or 'none yet'}; "
            "restart every worker with the same flags and TF_CONFIG to resume from it."
        ) from error
