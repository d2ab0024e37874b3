"""Restoring the newest checkpoint that is intact."""

from __future__ import annotations

from absl import logging

from faq_tf.compat import tf

__all__ = ["restore_latest_good"]


def restore_latest_good(checkpoint: tf.train.Checkpoint, manager: tf.train.CheckpointManager) -> str | None:
    """Restores the newest readable checkpoint of `manager`, skipping damaged ones.

    A truncated or corrupted checkpoint is reported by name and the previous one is
    tried. If checkpoints exist but none can be read, the run says so and starts fresh.

    Returns:
      The restored checkpoint path, or None when starting from scratch.
    """
    candidates = list(reversed(manager.checkpoints))
    for path in candidates:
        try:
            checkpoint.restore(path).assert_existing_objects_matched()
            return path
        except Exception as e:  # noqa: BLE001 - any failure to read means: try the previous one
            logging.error("Checkpoint %s is unreadable (%s); trying the previous one.", path, str(e).splitlines()[0])
    if candidates:
        logging.error(
            "None of the checkpoints %s could be restored: starting from scratch (the damaged files are left "
            "in place).",
            candidates,
        )
    return None
