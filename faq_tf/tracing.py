"""Export-only trace modes: what the quantizers emit while the TFLite converter traces a model.

Training and Keras inference never enter these contexts. `export_tflite.convert` traces
the model inside `export_trace()` (and, with `--pack_int4`, inside
`packed_sub8bit_weights()`); the quantizers ask `exporting()` and `packing()` which ops
to emit. The flags are thread-local, so a conversion in one thread does not change what
a model computes in another.

Example:

  with packed_sub8bit_weights(pack_int4), export_trace():
      concrete = tf.function(model).get_concrete_function(spec)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["packed_sub8bit_weights", "export_trace", "exporting", "packing"]

_STORAGE = threading.local()


@contextlib.contextmanager
def packed_sub8bit_weights(enabled: bool = True) -> Iterator[None]:
    """Within this context, weights below 8 bits trace as b-bit FakeQuant ops.

    The TFLite converter stores those as packed INT4 tensors (half the bytes, but not
    supported by every runtime, e.g. the Edge TPU). Outside it they trace as a clip to
    the b-bit range plus an 8-bit FakeQuant with the same step: int8 storage holding only
    b-bit values. Both compute the same numbers.

    Args:
      enabled: the flag's value inside the context (False turns packing off in a nested one).

    Yields:
      Nothing; the previous value is restored on exit.
    """
    with _tracing_flag("packed", enabled):
        yield


@contextlib.contextmanager
def export_trace() -> Iterator[None]:
    """Within this context, activation quantizers trace only ops the TFLite converter maps.

    Outside it, inference (training=False) also applies the integer runtime's tie rule
    (`faq_tf.quantizers.Rounding`), a few elementwise ops that the converter would keep
    as float, and unsigned sub-8-bit activations trace as one b-bit FakeQuant (same
    values, fewer ops) instead of the clip + 8-bit FakeQuant that converts to int8
    storage. `export_tflite.convert` traces the model inside this context.

    Yields:
      Nothing; the previous value is restored on exit.
    """
    with _tracing_flag("export", True):
        yield


@contextlib.contextmanager
def _tracing_flag(name: str, value: bool) -> Iterator[None]:
    previous = getattr(_STORAGE, name, False)
    setattr(_STORAGE, name, value)
    try:
        yield
    finally:
        setattr(_STORAGE, name, previous)


def exporting() -> bool:
    """Returns True inside `export_trace()` (in this thread)."""
    return getattr(_STORAGE, "export", False)


def packing() -> bool:
    """Returns True inside `packed_sub8bit_weights()` (in this thread)."""
    return getattr(_STORAGE, "packed", False)
