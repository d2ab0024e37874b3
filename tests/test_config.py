"""Each faq-train option is written once: the TrainConfig field gives the flag, its parsing and the argv."""

import dataclasses
import json

import pytest
from absl import flags
from absl.testing import flagsaver

from faq_tf import train
from faq_tf.training.config import TrainConfig, options

FLAGS = flags.FLAGS
train.define_flags()


def _parse(argv):
    with flagsaver.flagsaver():
        FLAGS(["faq-train", *argv])
        return train.config_from_flags()


def test_every_field_is_a_flag_with_its_default_and_help():
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    assert [opt.name for opt in options()] == names
    for opt in options():
        assert opt.name in FLAGS, opt.name
        assert FLAGS[opt.name].default == opt.flag_default, opt.name
        assert FLAGS[opt.name].help.endswith(opt.help) and len(opt.help) > 5, opt.name
    assert set(FLAGS["lr_schedule"].parser.enum_values) == {"exp", "step", "cosine", "constant"}
    assert _parse([]) == TrainConfig()


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(),
        # every kind of field away from its default: strings, optional ints and floats, enums,
        # bools both ways, lists of strings, ints and NAME=SPEC pairs
        TrainConfig(
            model="resnet18",
            dataset="folder:/data/x",
            data_dir="/data",
            image_size=96,
            precision="w4a8",
            layer_overrides=(("conv1", "w8"), ("fc.*", "a8")),
            calibrate=False,
            calibration_percentile=99.5,
            epochs=30,
            steps_per_epoch=7,
            lr=0.0015,
            lr_schedule="step",
            lr_decay=0.1,
            lr_boundaries=(10, 20),
            batch_schedule="128@0,256@10",
            weight_decay=5e-5,
            decoupled_weight_decay=True,
            momentum=0.0,
            strategy="mirrored",
            nan_policy="skip",
            deterministic=True,
            diagnostics=("grad_noise",),
            seed=-3,
        ),
    ],
)
def test_to_argv_parses_back_to_the_same_config(config):
    assert _parse(config.to_argv()) == config


def test_bool_defaulting_to_true_is_written_as_no_flag():
    assert TrainConfig(calibrate=False).to_argv() == ["--nocalibrate"]


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--layer_overrides=conv1"], "--layer_overrides entry 'conv1' must be NAME=SPEC"),
        (["--lr_boundaries=3,x"], "--lr_boundaries must be integers, got 'x'"),
        (["--precision=w4a4", "--layer_overrides=conv1=w1"], r"layer_overrides conv1=w1: .*\[2, 16\]"),
        (["--diagnostics=grad_noise,speed"], r"diagnostics \['speed'\] unknown"),
        (["--checkpoint_every_steps=-1"], "checkpoint_every_steps must be >= 0, got -1"),
        (["--momentum=1.0"], r"momentum must be in \[0, 1\), got 1.0"),
        (["--image_size=0"], "image_size must be a positive integer, got 0"),
    ],
)
def test_bad_values_name_the_flag(argv, match):
    with pytest.raises(ValueError, match=match):
        _parse(argv)


def test_enum_flags_reject_unknown_values():
    with pytest.raises(flags.IllegalFlagValueError, match="nan_policy"):
        _parse(["--nan_policy=ignore"])
    with pytest.raises(ValueError, match=r"strategy must be one of \('default'"):
        TrainConfig(strategy="horovod")


def test_config_json_round_trip():
    config = TrainConfig(
        layer_overrides=(("a", "w8"),), lr_boundaries=(2,), diagnostics=("grad_noise",), precision="w8a8"
    )
    assert TrainConfig.from_dict(json.loads(config.to_json())) == config
