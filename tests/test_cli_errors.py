"""User errors at the binaries: one line `<prog>: error: ...` on stderr, exit code 2, no traceback.

Each case runs a binary as a user would (`python -m <module> ...` in a subprocess, from the
repository root), so argparse, imports and the exit code are the real ones. Each run imports
TensorFlow (5-20 s), so the table covers every kind of user error once rather than every
binary with every kind.

To add cases, append `Case`s to `CASES`. In `argv`, `{name}` is replaced by the path of the fixture file `name`
(see `files`), `{dir}` by the fixtures' folder and `{out}` by a fresh output path that must
not exist afterwards (nothing is written on a user error).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import faq_tf
from conftest import image_folder, residual_model
from export_tflite import convert
from faq_tf.compat import keras

REPO = Path(__file__).resolve().parents[1]
# TF/absl log lines: "I0000 00:00:...", "W0512 ...", "2025-01-01 12:00:00...", "WARNING: All log messages..."
_NOISE = re.compile(r"^([IWEF]\d{4} |\d{4}-\d\d-\d\d|WARNING[: ]|INFO[: ])")


@dataclasses.dataclass(frozen=True)
class Case:
    """One user error: the binary, its arguments and a substring the error line must contain.

    Attributes:
      module: what `python -m` runs ("export_tflite", "export_tflite.verify", ...).
      argv: its arguments, with `{name}` placeholders (see the module docstring).
      expected: a substring of the `<prog>: error:` line.
      id: the test id.
      usage: whether argparse's usage lines come first (a bad flag); else the error is alone.
      prog: the name the binary reports itself as (default `python -m <module>`).
    """

    module: str
    argv: tuple[str, ...]
    expected: str
    id: str
    usage: bool = False
    prog: str | None = None

    @property
    def program(self) -> str:
        return self.prog or f"python -m {self.module}"


_EXPORT = "export_tflite"
_VERIFY = "export_tflite.verify"
_EVALUATE = "export_tflite.evaluate"
_QUANTIZED = ("--model", "{quantized.h5}", "--output", "{out}")

CASES = [
    Case(
        _EXPORT, ("--model", "{dir}/missing.h5", "--output", "{out}"), "missing.h5 does not exist", "export-missing-h5"
    ),
    Case(_EXPORT, ("--model", "{truncated.h5}", "--output", "{out}"), "truncated.h5", "export-truncated-h5"),
    Case(_EXPORT, ("--model_dir", "{dir}/run", "--output", "{out}"), "/run has no model.h5", "export-model-dir-no-h5"),
    Case(_EXPORT, ("--model", "{dir}/model.keras", "--output", "{out}"), "model.keras", "export-keras-format"),
    Case(_EXPORT, ("--model", "{float.h5}", "--output", "{out}"), "has no faq_tf quantizers", "export-float-model"),
    Case(
        _EXPORT,
        ("--model", "{not_integer.h5}", "--output", "{out}"),
        "did not convert to a fully integer model",
        "export-not-integer",
    ),
    Case(
        _EXPORT, ("--model", "{quantized.h5}", "--output", "{dir}/no/such/dir/m.tflite"), "--output=", "export-output"
    ),
    Case(
        _EXPORT,
        (*_QUANTIZED, "--dataset=fashion_mnist", "--data_dir={dir}/no_data"),
        "--dataset=fashion_mnist",
        "export-missing-dataset",
    ),
    Case(_EXPORT, (*_QUANTIZED, "--dataset=imagenet_22k"), "--dataset=imagenet_22k", "export-unknown-dataset"),
    Case(
        _EXPORT,
        (*_QUANTIZED, "--dataset=fashion_mnist", "--model_name=resnet_9000"),
        "--model_name='resnet_9000' is unknown",
        "export-unknown-model-name",
    ),
    Case(_EXPORT, (*_QUANTIZED, "--io_dtype=int16"), "argument --io_dtype: invalid choice", "export-bad-flag", True),
    Case(_EXPORT, (*_QUANTIZED, "--labels={dir}/missing.txt"), "cannot read --labels=", "export-missing-labels"),
    Case(_VERIFY, ("{empty.tflite}",), "empty.tflite is empty", "verify-empty-tflite"),
    Case(_VERIFY, ("{random.tflite}",), "random.tflite is not a readable .tflite model", "verify-random-tflite"),
    Case(
        _EVALUATE,
        ("--tflite", "{truncated.tflite}", "--dataset=fashion_mnist"),
        "--tflite=",
        "evaluate-truncated-tflite",
    ),
    Case(
        _EVALUATE,
        ("--tflite", "{quantized.tflite}", "--dataset=fashion_mnist", "--json={dir}/no/such/dir/r.json"),
        "--json=",
        "evaluate-json-output",
    ),
]

_TRAIN = "faq_tf.train"
_RUN = ("--dataset=folder:{dir}/images", "--image_size=28", "--batch_size=4", "--steps_per_epoch=1")
CASES += [
    Case(_TRAIN, ("--precision=w17a8", "--model_dir={out}"), "got 17", "train-bad-bits", prog="faq-train"),
    Case(_TRAIN, ("--no_such_flag=1", "--model_dir={out}"), "no_such_flag", "train-unknown-flag", prog="faq-train"),
    Case(_TRAIN, ("--flagfile={dir}/missing.flags",), "missing.flags", "train-missing-flagfile", prog="faq-train"),
    Case(
        _TRAIN,
        (*_RUN, "--pretrained={truncated.h5}", "--model_dir={dir}/runs/damaged"),
        "is not a readable weights file",
        "train-damaged-pretrained",
        prog="faq-train",
    ),
    Case(
        _TRAIN,
        (*_RUN, "--pretrained={dir}/nope.h5", "--model_dir={dir}/runs/nope"),
        "nope.h5: no such file",
        "train-missing-pretrained",
        prog="faq-train",
    ),
    Case(
        _TRAIN,
        ("--dataset=fashion_mnist", "--data_dir={dir}/no_data", "--model_dir={out}"),
        "apt-get install dataset-fashion-mnist",
        "train-missing-data",
        prog="faq-train",
    ),
    Case(
        _TRAIN,
        (*_RUN, "--model_dir={float.h5}/run"),
        "is not writable",
        "train-unwritable-model-dir",
        prog="faq-train",
    ),
]

_IMPORT = "faq_tf.models.import_torch"
CASES += [
    Case(
        _IMPORT,
        ("--model=resnet18", "--weights={dir}/missing.pth", "--output={dir}/w.h5"),
        "missing.pth: no such file",
        "import-missing-weights",
    ),
    Case(
        _IMPORT,
        ("--model=resnet18", "--weights={bad.safetensors}", "--output={dir}/w.h5"),
        "bad.safetensors: not a safetensors file",
        "import-damaged-safetensors",
    ),
    Case(
        _IMPORT,
        ("--model=ResNet50", "--weights={bad.safetensors}", "--output={dir}/w.h5"),
        "--model=ResNet50 has no torchvision counterpart; use one of densenet161, inception_v3",
        "import-not-a-torchvision-model",
    ),
    Case(_IMPORT, ("--model=resnet18",), "--weights is required", "import-missing-flag"),
    Case(
        _TRAIN,
        ("--model=resnet18", *_RUN, "--pretrained={bad.safetensors}", "--model_dir={dir}/runs/bad_st"),
        "bad.safetensors: not a safetensors file",
        "train-damaged-torch-weights",
        prog="faq-train",
    ),
]

_DIAGNOSTICS = "faq_tf.diagnostics"
CASES += [
    Case(_DIAGNOSTICS, ("similarity", "{truncated.h5}", "{float.h5}"), "truncated.h5", "diagnostics-damaged-model"),
    Case(
        _DIAGNOSTICS,
        ("similarity", "{float.h5}"),
        "the following arguments are required",
        "diagnostics-bad-flag",
        usage=True,
        prog="python -m faq_tf.diagnostics similarity",
    ),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """The fixture files, name -> path: models (good, float, not integer) and damaged files."""
    root = tmp_path_factory.mktemp("cli")
    data = np.random.RandomState(1).rand(16, 16, 16, 3).astype("float32")
    keras.utils.set_random_seed(0)  # module fixtures run before the per-test seed
    quantized = faq_tf.quantize_model(residual_model(), "w8a8", data, verbose=False)
    faq_tf.save_model(quantized, root / "quantized.h5")
    faq_tf.save_model(residual_model(), root / "float.h5")
    i = keras.Input((16, 16, 3))
    x = keras.layers.Activation("softsign", name="odd")(keras.layers.Conv2D(4, 3, name="conv")(i))
    odd = keras.Model(i, keras.layers.Dense(2, name="fc")(keras.layers.Flatten()(x)))
    # Left float: softsign's ABS, ADD and DIV have no int8 kernels, so the converter keeps them float.
    odd = faq_tf.quantize_model(odd, "w8a8", data, layer_overrides={"odd": "skip"}, verbose=False)
    faq_tf.save_model(odd, root / "not_integer.h5")
    tflite = convert(quantized)
    h5 = (root / "quantized.h5").read_bytes()
    rng = np.random.RandomState(0)
    damaged = {
        "quantized.tflite": tflite,
        "truncated.tflite": tflite[: len(tflite) // 2],
        "empty.tflite": b"",
        "random.tflite": b"\x1c\x00\x00\x00TFL3" + rng.bytes(256),  # the right header, random body
        "truncated.h5": h5[: len(h5) // 3],
        "bad.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all",
    }
    for name, content in damaged.items():
        (root / name).write_bytes(content)
    image_folder(root)  # a folder: dataset for the faq-train cases
    (root / "run").mkdir()  # a model_dir without model.h5
    (root / "run" / "config.json").write_text('{"dataset": "fashion_mnist"}')
    paths = {p.name: str(p) for p in root.iterdir()}
    return paths | {"dir": str(root)}


def _run(case: Case, files: dict[str, str], out: str) -> subprocess.CompletedProcess:
    names = files | {"out": out}
    argv = [re.sub(r"\{([^{}]+)\}", lambda m: names[m[1]], arg) for arg in case.argv]
    env = os.environ | {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-m", case.module, *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_user_error_is_one_line_with_exit_code_2(case, files, tmp_path):
    out = str(tmp_path / "out.tflite")
    result = _run(case, files, out)
    lines = [line for line in result.stderr.splitlines() if not _NOISE.match(line)]
    errors = [line for line in lines if line.startswith(f"{case.program}: ")]
    context = f"exit code {result.returncode}, stderr:\n{result.stderr}"
    assert result.returncode == 2, context
    assert "Traceback" not in result.stderr, context
    assert len(errors) == 1 and errors[0].startswith(f"{case.program}: error: "), context
    assert case.expected in errors[0], context
    assert any(line.startswith("usage:") for line in lines) == case.usage, context
    assert not os.path.exists(out)
