"""What the export binaries share: user errors as one line and exit code 2.

`python -m export_tflite`, `python -m export_tflite.verify` and `python -m export_tflite.evaluate`
exit with

* 0: done (the model is fully integer / was evaluated);
* 1: the verifier found violations in a readable model (its report says which), or
  `python -m export_tflite --no_check` wrote a model that is not fully integer;
* 2: a user error: a missing or damaged input file, an unknown flag value, an unwritable
  output path, a model that cannot be exported. One line on stderr,
  `<prog>: error: <what is wrong, naming the file or flag, and what to do>`, no traceback.
  Bad flags are argparse's (a usage line, then the error line), also exit code 2.

Library code raises its own exceptions (ValueError, OSError, ExportError, ...); the helpers
here turn the ones a user can cause into `UsageError` with the flag named, so a bug still
shows its traceback.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the annotations only: this module itself imports no TensorFlow
    from export_tflite.converter import ExportError
    from faq_tf.compat import keras

__all__ = [
    "EXIT_OK",
    "EXIT_USAGE",
    "EXIT_VIOLATIONS",
    "UsageError",
    "check_output_path",
    "export_error_line",
    "fail",
    "load_keras_model",
    "one_line",
    "read_tflite",
    "write_output",
]

EXIT_OK, EXIT_VIOLATIONS, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A user error: the binary prints its message on one line and exits with `EXIT_USAGE`."""


def one_line(text: str) -> str:
    """`text` with its line breaks and runs of spaces collapsed (library messages may span lines)."""
    return " ".join(str(text).split())


def fail(prog: str, error: Exception | str) -> int:
    """Prints `<prog>: error: <message>` on stderr as one line; returns `EXIT_USAGE`."""
    print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
    return EXIT_USAGE


def _strerror(e: OSError) -> str:
    return e.strerror or one_line(e)


def _named(path: str, flag: str | None) -> str:
    return f"{flag}={path}" if flag else path


def read_tflite(path: str, flag: str | None = None) -> bytes:
    """The bytes of a .tflite file, checked to be a readable model.

    Args:
      path: the file.
      flag: the flag that gave it ("--tflite"), None for a positional argument.

    Raises:
      UsageError: for a missing, unreadable, empty or damaged file.
    """
    from export_tflite.reader import TfliteFormatError, read_model

    name = _named(path, flag)
    try:
        with open(path, "rb") as f:
            content = f.read()
    except OSError as e:
        raise UsageError(f"cannot read {name}: {_strerror(e)}") from e
    if not content:
        raise UsageError(f"{name} is empty: give a .tflite file written by python -m export_tflite")
    try:
        read_model(content)  # a clear error for damaged files before an interpreter sees them
    except TfliteFormatError as e:
        raise UsageError(
            f"{name} is not a readable .tflite model ({e}); re-export it with python -m export_tflite"
        ) from e
    return content


def load_keras_model(path: str, flag: str) -> keras.Model:
    """`faq_tf.load_model(path)`, with the user's errors as `UsageError`.

    An fp32 `.keras` file (Keras 3 or tf_keras) loads through `faq_tf.from_keras3`; the
    converter then says it needs quantizing first (faq-train --pretrained=FILE.keras).

    Raises:
      UsageError: for a missing or unreadable model file, a QAT `.keras` file or a Lambda.
    """
    import faq_tf

    if not os.path.exists(path):
        raise UsageError(f"{flag}={path} does not exist: give a faq_tf model saved as .h5 or a SavedModel folder")
    try:
        return faq_tf.load_model(path)
    except (OSError, ValueError) as e:
        # A damaged file fails inside Keras/h5py (chained); .keras and Lambda refusals say what to do.
        hint = " (expected a model saved by faq-train or faq_tf.save_model as .h5 or a SavedModel folder)"
        raise UsageError(f"{flag}: {e}{hint if e.__cause__ is not None else ''}") from e


def check_output_path(path: str, flag: str) -> None:
    """Refuses an output path that cannot be written, before any long work.

    Raises:
      UsageError: if the folder does not exist or is not writable, or the path is a folder.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{flag}={path} is a folder: give a file name")
    if not os.path.isdir(folder):
        raise UsageError(f"{flag}={path}: the folder {folder} does not exist; create it or write elsewhere")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{flag}={path}: the folder {folder} is not writable; write elsewhere")


def write_output(path: str, flag: str, content: bytes | str) -> None:
    """Writes `content` to `path`.

    Raises:
      UsageError: if the file cannot be written (the reason from the OS).
    """
    try:
        with open(path, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
    except OSError as e:
        raise UsageError(f"cannot write {_named(path, flag)}: {_strerror(e)}") from e


def export_error_line(e: ExportError, output: str) -> str:
    """An `ExportError` as one line: its first line, and for a verifier refusal the count and first violation.

    The full list stays in `e.report` (Python API) and `--no_check` writes the file so that
    `python -m export_tflite.verify` can list it.
    """
    head = one_line(str(e).splitlines()[0]).rstrip(":") if str(e) else type(e).__name__
    violations = e.report.violations if e.report is not None else []
    if not violations:
        return one_line(e)
    return (
        f"{head}: {len(violations)} violation(s), the first: {violations[0]}. "
        f"To list them all, rerun with --no_check (writes {output} anyway) "
        f"and run python -m export_tflite.verify {output}"
    )
