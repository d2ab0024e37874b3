"""Every flagfile in flags/ parses into a valid config, and each distinct setup runs one step.

A "setup" is what changes the code path: model family, dataset, precision, calibration,
batch schedule or not, learning-rate schedule kind. One flagfile per setup runs one step of
faq-train on tiny data (TFDS mock_data; Table 1's from imported torchvision weights, in
test_import_torch.py); flagfiles that differ only in numbers (epochs,
rates, batch sizes) are covered by the parse/validation test. Epochs, steps, input size,
batch and pretrained weights are overridden; everything else comes from the flagfile.
"""

import dataclasses
import glob
import os
import re

import pytest
import tensorflow_datasets as tfds
from absl import flags
from absl.testing import flagsaver

from faq_tf import train
from faq_tf.training import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILES = sorted(glob.glob(os.path.join(REPO, "flags", "**", "*.flags"), recursive=True))
FLAGS = flags.FLAGS
train.define_flags()


def _parse(path):
    with flagsaver.flagsaver():
        FLAGS(["faq-train", f"--flagfile={path}"])
        return train.config_from_flags()


def test_there_are_flagfiles_for_every_experiment():
    names = {os.path.relpath(p, os.path.join(REPO, "flags")) for p in FLAGFILES}
    for required in (
        "imagenet/table1_resnet18_w8a8.flags",
        "imagenet/table1_resnet18_w4a4.flags",
        "imagenet/table1_resnet50_w4a4.flags",
        "imagenet/table1_vgg16_bn_w8a8.flags",
        "imagenet/table2_row4_batch_256_2048.flags",
        "imagenet/sec4_2_resnet18_w4a4_30ep.flags",
        "imagenet/sec4_3_resnet18_w4a4_scratch_exp.flags",
        "cifar10/w4a4.flags",
        "fashion_mnist/fp32.flags",
        "fashion_mnist/w8a8.flags",
        "fashion_mnist/w4a4.flags",
    ):
        assert required in names
    assert len([n for n in names if n.startswith("imagenet/table1_")]) == 10
    assert len([n for n in names if n.startswith("imagenet/table2_")]) == 7


@pytest.mark.parametrize("path", FLAGFILES, ids=lambda p: os.path.relpath(p, REPO))
def test_flagfile_header_names_the_experiment_and_accuracy(path):
    lines = open(path).read().splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    text = " ".join(header)
    assert header and re.search(r"Table|Section|Fashion-MNIST", header[0]), header
    assert re.search(r"\d\d\.\d\d|\d\d-\d\d%|at least the fp32|within about", text), text


def test_paper_values_are_explicit():
    four = _parse(os.path.join(REPO, "flags/imagenet/table1_resnet18_w4a4.flags"))
    assert (four.epochs, four.lr, four.lr_decay, four.lr_final) == (110, 0.0015, 0.936, 1e-6)
    assert (four.weight_decay, four.batch_size, four.momentum, four.precision) == (5e-5, 256, 0.9, "w4a4")
    assert four.lr_schedule_fn()(110) == pytest.approx(1.039e-6, rel=1e-3)
    eight = _parse(os.path.join(REPO, "flags/imagenet/table1_resnet50_w8a8.flags"))
    assert (eight.epochs, eight.lr, eight.lr_schedule, eight.precision) == (1, 1e-4, "constant", "w8a8")
    assert _parse(os.path.join(REPO, "flags/imagenet/table1_resnet50_w4a4.flags")).weight_decay == 1e-4
    row4 = _parse(os.path.join(REPO, "flags/imagenet/table2_row4_batch_256_2048.flags"))
    assert row4.batch_schedule_obj().accumulation_at(160, 256) == 8
    assert not _parse(os.path.join(REPO, "flags/imagenet/table2_row7_no_calibration.flags")).calibrate


def _tiny(config, tmp_path):
    scale = 4 / config.batch_size
    schedule = ",".join(f"{max(1, round(size * scale))}@{epoch}" for epoch, size in config.batch_schedule_obj().entries)
    size = {"small_resnet": 28, "inception_v3": 75}.get(config.model, 32)
    pretrained = config.pretrained if config.pretrained in ("none",) else "none"
    return dataclasses.replace(
        config,
        epochs=1,
        steps_per_epoch=1,
        eval_steps=1,
        batch_size=4,
        batch_schedule=schedule if config.batch_schedule else "",
        image_size=size,
        pretrained=pretrained,
        data_dir=str(tmp_path / "no_data"),  # Fashion-MNIST then falls back to (mocked) TFDS
        calibration_batches=1,
        model_dir=str(tmp_path / "run"),
    )


# Same builder, more blocks: one step of the smaller one exercises the same code.
_FAMILY = {"resnet34": "resnet18", "resnet152": "resnet50"}


def _setup(config):
    return (
        _FAMILY.get(config.model, config.model),
        config.dataset,
        config.precision,
        config.calibrate,
        bool(config.batch_schedule),
        config.lr_schedule,
    )


def _one_per_setup(paths):
    chosen = {}
    for path in paths:
        chosen.setdefault(_setup(_parse(path)), path)
    return sorted(chosen.values())


@pytest.mark.parametrize("path", FLAGFILES, ids=lambda p: os.path.relpath(p, REPO))
def test_every_flagfile_is_a_valid_config(path):
    config = _parse(path)  # TrainConfig validates precision, overrides, schedules, percentiles
    assert config.epochs >= 1 and config.model_dir
    assert config.lr_schedule_fn()(config.epochs - 1) > 0


# Table 1's flagfiles each run one step from an imported torchvision checkpoint in test_import_torch.py.
_NOT_TABLE1 = [p for p in FLAGFILES if not os.path.basename(p).startswith("table1_")]


@pytest.mark.parametrize("path", _one_per_setup(_NOT_TABLE1), ids=lambda p: os.path.relpath(p, REPO))
def test_flagfile_runs_one_step(path, tmp_path):
    config = _tiny(_parse(path), tmp_path)
    with tfds.testing.mock_data(num_examples=8):
        final = run(config)
    assert "test_top1" in final and final["batch_size"] == 4
    assert os.path.exists(os.path.join(config.model_dir, "model.h5"))
