"""faq_tf.models.import_torch against torchvision itself.

torchvision builds each Table 1 network with random weights and randomized BatchNorm
statistics, in eval mode (scripts/torchvision_reference.py, in a subprocess without
TensorFlow); its state_dict is imported into faq_tf's model of the same name, and the
logits on the same random images must agree to 1e-4 of the logit scale. Inputs are small
where the topology allows (64x64; Inception-v3's minimum 75x75; VGG-16-BN at 32x32, whose
1x1 feature map torchvision's adaptive pooling repeats 7x7). Then: .safetensors without
torch, the errors that name tensors, the CLI, --pretrained=FILE.pth, the fp32 baseline
check (--epochs=0), and one training step of every Table 1 flagfile from an imported
checkpoint.
"""

import dataclasses
import glob
import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags
from absl.testing import flagsaver

from faq_tf import train
from faq_tf.compat import keras
from faq_tf.models import MODELS, build_model
from faq_tf.models.import_torch import TorchImportError, import_torch_weights, load_torch_weights, read_state_dict
from faq_tf.training import TrainConfig, run
from faq_tf.training.errors import worker_guard
from faq_tf.training.run import build, finish
from faq_tf.training.run import train as train_epochs
from faq_tf.training.trainer import get_strategy

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None,
    reason="the torch extra is not installed (make test installs it: pip install -e '.[torch]')",
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {
    "resnet18": 64,
    "resnet34": 64,
    "resnet50": 64,
    "resnet152": 64,
    "inception_v3": 75,
    "densenet161": 64,
    "vgg16_bn": 32,
}
ENV = os.environ | {"PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> str:
    """torchvision's state_dicts, images and logits for the 7 networks (1000 classes)."""
    out = tmp_path_factory.mktemp("torchvision")
    models = ",".join(f"{name}:{size}" for name, size in SIZES.items())
    subprocess.run(
        [sys.executable, "-m", "scripts.torchvision_reference", "--out", str(out), "--models", models],
        cwd=REPO,
        env=ENV,
        check=True,
        timeout=900,
    )
    return str(out)


def _relative_error(model, name: str, reference: str) -> float:
    pixels = np.load(os.path.join(reference, f"{name}_pixels.npy"))
    expected = np.load(os.path.join(reference, f"{name}_logits.npy"))
    logits = model(MODELS[name].preprocess(pixels), training=False).numpy()
    return float(np.abs(logits - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("name", list(SIZES))
def test_imported_model_computes_torchvisions_logits(name, reference):
    model = import_torch_weights(name, os.path.join(reference, f"{name}.pth"), image_size=SIZES[name])
    assert model.output_shape == (None, 1000)
    assert _relative_error(model, name, reference) < 1e-4


def _write_safetensors(tensors: dict[str, np.ndarray], path: str) -> None:
    """The safetensors format: 8-byte header length, JSON header, raw little-endian data."""
    header, blobs, offset = {}, [], 0
    for key, value in tensors.items():
        value = np.ascontiguousarray(value)
        dtype = {np.float32: "F32", np.int64: "I64"}[value.dtype.type]
        header[key] = {"dtype": dtype, "shape": list(value.shape), "data_offsets": [offset, offset + value.nbytes]}
        blobs.append(value.tobytes())
        offset += value.nbytes
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw + b"".join(blobs))


def test_safetensors_import_needs_no_torch(reference, tmp_path):
    path = str(tmp_path / "resnet18.safetensors")
    _write_safetensors(read_state_dict(os.path.join(reference, "resnet18.pth")), path)
    script = (
        "import sys\n"
        "from faq_tf.models.import_torch import import_torch_weights\n"
        f"import_torch_weights('resnet18', {path!r}, output={str(tmp_path / 'r.h5')!r}, image_size=64)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, env=ENV, check=True, timeout=300)
    model, _ = build_model("resnet18", 1000, str(tmp_path / "r.h5"), image_size=64)
    assert _relative_error(model, "resnet18", reference) < 1e-4


@pytest.fixture(scope="module")
def resnet18_tensors(reference) -> dict[str, np.ndarray]:
    return read_state_dict(os.path.join(reference, "resnet18.pth"))


def _resnet18():
    return MODELS["resnet18"].builder(input_shape=(64, 64, 3), classes=1000)


def test_missing_tensor_is_named(resnet18_tensors):
    tensors = {k: v for k, v in resnet18_tensors.items() if k != "layer2.1.bn1.running_var"}
    with pytest.raises(TorchImportError, match=r"layer2\.1\.bn1\.running_var"):
        load_torch_weights(_resnet18(), tensors)
    tensors = {k: v for k, v in resnet18_tensors.items() if not k.startswith("layer4.0.downsample.0.")}
    with pytest.raises(TorchImportError, match="no tensors for Keras layers layer4_0_downsample_0"):
        load_torch_weights(_resnet18(), tensors)


def test_extra_tensor_is_named(resnet18_tensors):
    tensors = dict(resnet18_tensors, **{"layer5.0.conv1.weight": np.zeros((8, 8, 3, 3), np.float32)})
    with pytest.raises(TorchImportError, match=r"modules layer5\.0\.conv1 fit no layer"):
        load_torch_weights(_resnet18(), tensors)
    tensors = dict(resnet18_tensors, **{"layer1.0.conv1.bias": np.zeros(64, np.float32)})
    with pytest.raises(TorchImportError, match=r"unexpected tensors layer1\.0\.conv1\.bias"):
        load_torch_weights(_resnet18(), tensors)


def test_misshaped_tensor_is_named(resnet18_tensors):
    tensors = dict(resnet18_tensors)
    tensors["layer3.0.conv2.weight"] = tensors["layer3.0.conv2.weight"][:, :128]
    with pytest.raises(TorchImportError, match=r"layer3_0_conv2 .*module layer3\.0\.conv2 gives shape"):
        load_torch_weights(_resnet18(), tensors)
    model = MODELS["resnet18"].builder(input_shape=(64, 64, 3), classes=10)
    with pytest.raises(
        TorchImportError, match=r"module fc gives shape \(512, 1000\), the Keras layer needs \(512, 10\)"
    ):
        load_torch_weights(model, resnet18_tensors)


def test_another_networks_file_is_refused(reference):
    with pytest.raises(TorchImportError, match="no tensors for Keras layers layer1_2_conv1"):
        import_torch_weights("resnet34", os.path.join(reference, "resnet18.pth"), image_size=64)
    with pytest.raises(TorchImportError, match="has no torchvision counterpart"):
        import_torch_weights("ResNet50", os.path.join(reference, "resnet50.pth"))
    with pytest.raises(ValueError, match="model 'small_resnet' has no torchvision counterpart"):
        build_model("small_resnet", 10, os.path.join(reference, "resnet18.pth"))


def test_damaged_files_are_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(TorchImportError, match="bad.safetensors: not a safetensors file"):
        read_state_dict(str(bad))
    pth = tmp_path / "bad.pth"
    pth.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(TorchImportError, match="bad.pth: torch.load could not read it"):
        read_state_dict(str(pth))
    with pytest.raises(FileNotFoundError, match="missing.pth: no such file"):
        read_state_dict(str(tmp_path / "missing.pth"))


def test_cli_writes_h5_that_faq_train_loads(reference, tmp_path):
    out = tmp_path / "weights" / "densenet161.h5"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "faq_tf.models.import_torch",
            "--model=densenet161",
            f"--weights={reference}/densenet161.pth",
            f"--output={out}",
            "--image_size=64",
        ],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "faq-train --model=densenet161 --pretrained=" in result.stdout
    model, _ = build_model("densenet161", 1000, str(out), image_size=64)
    assert _relative_error(model, "densenet161", reference) < 1e-4


def _imagenet_config(tmp_path, **kwargs) -> TrainConfig:
    base = dict(
        dataset="imagenet2012",
        data_dir=str(tmp_path / "no_data"),
        batch_size=4,
        steps_per_epoch=1,
        eval_steps=1,
        calibration_batches=1,
        model_dir=str(tmp_path / "run"),
    )
    return TrainConfig(**(base | kwargs))


def test_epochs_0_evaluates_the_imported_fp32_model(reference, tmp_path):
    """The baseline check: --precision=fp32 --epochs=0 --pretrained=FILE.pth, on mock ImageNet."""
    config = _imagenet_config(
        tmp_path, model="resnet18", pretrained=f"{reference}/resnet18.pth", image_size=64, precision="fp32", epochs=0
    )
    with tfds.testing.mock_data(num_examples=8):
        final = run(config)
    assert {"test_top1", "test_top5"} <= set(final) and "train_loss" not in final
    saved, _ = build_model("resnet18", 1000, os.path.join(config.model_dir, "model.h5"), image_size=64)
    assert _relative_error(saved, "resnet18", reference) < 1e-4  # not trained: the imported weights


FLAGS = flags.FLAGS
train.define_flags()
TABLE1 = sorted(glob.glob(os.path.join(REPO, "flags", "imagenet", "table1_*.flags")))


def test_table1_flagfiles_name_the_torchvision_file():
    assert len(TABLE1) == 10
    for path in TABLE1:
        text = open(path).read()
        model = re.search(r"^--model=(\S+)", text, re.M)[1]
        pth = re.search(r"torchvision's (\S+)\.pth", text)[1]
        assert MODELS[model].torch_classifier, path
        assert re.search(rf"^--pretrained=weights/{re.escape(pth)}\.h5$", text, re.M), path
        assert f"import_torch --model={model} --weights={pth}.pth --output=weights/{pth}.h5" in text, path


@pytest.mark.parametrize("path", TABLE1, ids=os.path.basename)
def test_table1_flagfile_runs_one_step_from_an_imported_checkpoint(path, reference, tmp_path):
    with flagsaver.flagsaver():
        FLAGS(["faq-train", f"--flagfile={path}"])
        config = train.config_from_flags()
    size = 75 if config.model == "inception_v3" else 32
    weights = str(tmp_path / "imported.h5")
    imported = import_torch_weights(config.model, f"{reference}/{config.model}.pth", weights, image_size=size)
    config = dataclasses.replace(  # the flagfile's recipe, on tiny mock data
        config,
        epochs=1,
        steps_per_epoch=1,
        eval_steps=1,
        batch_size=4,
        batch_schedule="",
        image_size=size,
        pretrained=weights,
        data_dir=str(tmp_path / "no_data"),
        calibration_batches=1,
        model_dir=str(tmp_path / "run"),
    )
    kernel = next(layer for layer in imported.layers if isinstance(layer, keras.layers.Conv2D)).get_weights()[0]
    with tfds.testing.mock_data(num_examples=8):
        job = build(config, get_strategy(config.strategy))
        # The run starts from the imported weights: the quantized model holds the first conv's kernel as imported.
        assert any(np.array_equal(v.numpy(), kernel) for v in job.model.weights if tuple(v.shape) == kernel.shape)
        with worker_guard(job.strategy, job.state.manager):
            train_epochs(job)
        final = finish(job)
    assert "test_top1" in final and final["train_loss"] > 0 and final["epoch"] == 0
    assert os.path.exists(os.path.join(config.model_dir, "model.h5"))
