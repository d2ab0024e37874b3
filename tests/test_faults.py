"""Faults and hostile input: full disk, read-only folders, determinism, bad flags, code in files.

(Kill/resume, corrupt checkpoints, NaN steps and multi-worker runs are in test_training.py;
damaged .tflite files and wrong evaluator inputs in test_export.py.)
"""

import contextlib
import hashlib
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest

import faq_tf
from conftest import tiny_run_config
from faq_tf.compat import keras
from faq_tf.models import build_model
from faq_tf.training import SaveError, TrainConfig, run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mount_tmpfs(path, options):
    os.makedirs(path, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


@contextlib.contextmanager
def _small_disk(path, size="12m"):
    """A real small filesystem (tmpfs) when this machine lets us mount one.

    Otherwise the file-size limit (RLIMIT_FSIZE) makes large writes fail the same way.
    Yields fill(free_bytes): uses up the space but `free_bytes`.
    """
    if _mount_tmpfs(path, f"size={size}"):

        def fill(free_bytes):
            filler = os.path.join(path, "filler")
            with contextlib.suppress(OSError), open(filler, "ab", buffering=0) as f:
                while True:
                    f.write(b"\0" * (1 << 14))
            os.truncate(filler, max(0, os.path.getsize(filler) - free_bytes))

        try:
            yield fill
        finally:
            subprocess.run(["umount", "-l", str(path)], check=False)
        return
    os.makedirs(path, exist_ok=True)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes then fail with EFBIG

    def fill(free_bytes):
        resource.setrlimit(resource.RLIMIT_FSIZE, (max(free_bytes, 1), old_limit[1]))

    try:
        yield fill
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def _digests(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            if name == "filler":
                continue
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.relpath(os.path.join(root, name), folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_full_disk_stops_with_a_clear_error_and_loses_nothing(tmp_path):
    disk = tmp_path / "disk"
    with _small_disk(disk) as fill:
        cfg = tiny_run_config(tmp_path, epochs=1, steps_per_epoch=2, model_dir=str(disk / "run"))
        run(cfg)  # a finished run: checkpoints, model.h5, metrics.json
        before = _digests(cfg.model_dir)
        longer = TrainConfig(**{**cfg.__dict__, "epochs": 2})
        fill(64 * 1024)  # room for small files, not for a checkpoint: fails at the first save
        with pytest.raises(SaveError, match=r"Could not write .* last good checkpoint is .*ckpt-2.*Free space"):
            run(longer)
        fill(0)  # completely full: refused before training starts
        with pytest.raises(SaveError, match=r"is not writable .*nothing was trained. Free space"):
            run(longer)
        after = _digests(cfg.model_dir)
        changed = {k for k in before if after.get(k) != before[k]} - {"config.json"}
        assert not changed, f"files damaged by the failed saves: {changed}"
        loaded = faq_tf.load_model(os.path.join(cfg.model_dir, "model.h5"))
        assert faq_tf.quantized_tensors(loaded)


def test_read_only_model_dir_fails_before_training(tmp_path):
    ro = tmp_path / "ro"
    if not _mount_tmpfs(ro, "size=1m,ro"):
        if os.geteuid() == 0:
            pytest.skip("root ignores permissions and this machine forbids mounting a read-only tmpfs")
        ro.mkdir(exist_ok=True)
        ro.chmod(0o555)
    try:
        with pytest.raises(OSError, match=r"model_dir .*ro/run is not writable .*choose another --model_dir"):
            run(tiny_run_config(tmp_path, model_dir=str(ro / "run")))
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False, capture_output=True)


def test_same_seed_gives_bit_identical_runs(tmp_path):
    finals, weights = [], []
    for name in ("a", "b"):
        cfg = tiny_run_config(tmp_path, epochs=1, steps_per_epoch=3, model_dir=str(tmp_path / name))
        finals.append(run(cfg))
        weights.append(faq_tf.load_model(os.path.join(cfg.model_dir, "model.h5")).get_weights())
    for a, b in zip(*weights):
        assert np.array_equal(a, b)
    assert finals[0]["train_loss"] == finals[1]["train_loss"]
    assert finals[0]["test_top1"] == finals[1]["test_top1"]


@pytest.mark.parametrize("precision", ["w0a8", "w1a8", "w8a17", "w33a33"])
def test_absurd_bit_widths(tmp_path, precision):
    with pytest.raises(ValueError, match=rf"precision='{precision}': .*bits must be an integer in \[2, 16\], got"):
        tiny_run_config(tmp_path, precision=precision)


@pytest.mark.parametrize("spec", ["w1", "a17", "w33a8", "w0"])
def test_absurd_layer_override_bits(tmp_path, spec):
    with pytest.raises(ValueError, match=rf"layer_overrides stem_conv={spec}: .*bits must be an integer in \[2, 16\]"):
        tiny_run_config(tmp_path, layer_overrides=(("stem_conv", spec),))


def test_binary_reports_bad_flags_without_a_traceback(tmp_path):
    cmd = [sys.executable, "-m", "faq_tf.train", "--precision=w17a8", f"--model_dir={tmp_path / 'x'}"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
    assert done.returncode != 0
    assert "weight_bits must be an integer in [2, 16], got 17" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists(), "a rejected run must not create its model_dir"


def test_lambda_layers_are_never_deserialized(tmp_path):
    i = keras.Input((4,))
    model = keras.Model(i, keras.layers.Lambda(lambda x: x * 2)(i))
    for path in (tmp_path / "lam.h5", tmp_path / "lam_savedmodel"):
        model.save(path, save_format="h5" if str(path).endswith(".h5") else "tf")
        with pytest.raises(ValueError, match="contains a Lambda layer .*does not deserialize code"):
            faq_tf.load_model(path)


def test_weights_of_another_architecture(tmp_path):
    i = keras.Input((28, 28, 1))
    other = keras.Model(i, keras.layers.Dense(10)(keras.layers.Flatten()(i)))
    other.save(tmp_path / "other.h5")
    with pytest.raises(ValueError, match="does not fit model 'small_resnet'"):
        build_model("small_resnet", 10, str(tmp_path / "other.h5"))
    with pytest.raises(ValueError, match="does not fit model 'small_resnet'"):
        build_model("small_resnet", 7, os.path.join(REPO, "baselines", "fashion_mnist", "small_resnet_fp32.h5"))


@pytest.mark.parametrize("content", [b"", b"\x89HDF\r\n\x1a\n" + b"\0" * 50, os.urandom(4096)])
def test_damaged_pretrained_weights(tmp_path, content):
    path = tmp_path / "damaged.h5"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="damaged.h5"):
        build_model("small_resnet", 10, str(path))
