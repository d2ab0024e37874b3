"""Learning-rate and batch schedules against hand-computed values."""

import math

import pytest

from faq_tf.training.schedules import BatchSchedule, LearningRateSchedule


def test_exp_schedule_of_the_paper():
    s = LearningRateSchedule("exp", 0.0015, 110, lr_final=1e-6, decay=0.936)
    assert s(0) == 0.0015
    assert s(1) == pytest.approx(0.0015 * 0.936)
    # 0.0015 * 0.936^110 = 0.0015 * exp(110 * ln 0.936) = 0.0015 * 6.927e-4 = 1.039e-6:
    # the paper's run reaches 1e-6 at epoch 110
    assert s(110) == pytest.approx(1.039e-6, rel=1e-3)
    assert s(109) > 1.1e-6


def test_exp_schedule_with_derived_decay_hits_lr_final_exactly():
    s = LearningRateSchedule("exp", 0.0015, 110, lr_final=1e-6)
    assert s.exp_decay == pytest.approx((1e-6 / 0.0015) ** (1 / 110))
    assert s.exp_decay == pytest.approx(0.9357, abs=1e-4)  # the paper's 0.936
    assert s(110) == pytest.approx(1e-6)
    assert s(200) == 1e-6  # floored


def test_step_schedule_section_4_3():
    s = LearningRateSchedule("step", 0.1, 110, lr_final=1e-6, decay=0.1, boundaries=(30, 60, 85, 95))
    assert [s(e) for e in (0, 29)] == [0.1, 0.1]
    assert s(30) == pytest.approx(0.01)
    assert s(60) == pytest.approx(0.001)
    assert s(85) == pytest.approx(1e-4)
    assert s(95) == 1e-6 and s(109) == 1e-6  # last boundary drops to lr_final


def test_step_schedule_section_4_5():
    s = LearningRateSchedule("step", 1e-3, 110, lr_final=1e-6, boundaries=(30, 60, 90))
    assert [round(s(e), 12) for e in (0, 30, 60, 90)] == [1e-3, 1e-4, 1e-5, 1e-6]


def test_cosine_and_constant():
    s = LearningRateSchedule("cosine", 0.05, 8, lr_final=0.0)
    assert s(0) == 0.05
    assert s(4) == pytest.approx(0.025)
    assert s(8) == pytest.approx(0.0)
    assert LearningRateSchedule("constant", 1e-4, 1)(0) == 1e-4
    assert math.isclose(LearningRateSchedule("cosine", 0.1, 10, lr_final=0.01)(10), 0.01)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"kind": "linear"}, "lr_schedule must be one of"),
        ({"lr": -0.1}, "lr must be a positive number"),
        ({"lr": 0.0}, "lr must be a positive number"),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"lr_final": 1.0}, "lr_final must be in"),
        ({"decay": 1.5}, "lr_decay must be in"),
        ({"kind": "step", "boundaries": ()}, "needs lr_boundaries"),
        ({"kind": "step", "boundaries": (60, 30)}, "increasing"),
        ({"kind": "exp", "lr_final": None}, "needs lr_decay or a positive lr_final"),
    ],
)
def test_bad_lr_schedules(kwargs, match):
    args = {"kind": "exp", "lr": 0.0015, "epochs": 110, "lr_final": 1e-6}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        LearningRateSchedule(**args)


def test_batch_schedule_of_the_paper():
    s = BatchSchedule.parse("256@0,512@55,1024@150,2048@160", 256)
    assert [s.size_at(e) for e in (0, 54, 55, 149, 150, 159, 160, 164)] == [256, 256, 512, 512, 1024, 1024, 2048, 2048]
    assert [s.accumulation_at(e, 256) for e in (0, 55, 150, 160)] == [1, 2, 4, 8]
    s.check(256)
    assert BatchSchedule.parse("", 128).size_at(10) == 128


@pytest.mark.parametrize(
    "text,match",
    [
        ("512@55", "must start at epoch 0"),
        ("256@0,512@55,1024@40", "must increase"),
        ("256@0,abc", "bad batch_schedule entry 'abc'"),
        ("256-0", "bad batch_schedule entry"),
        ("0@0", "must be positive"),
    ],
)
def test_bad_batch_schedules(text, match):
    with pytest.raises(ValueError, match=match):
        BatchSchedule.parse(text, 256)


def test_batch_schedule_must_be_whole_real_batches():
    with pytest.raises(ValueError, match=r"\[300\] are not multiples of batch_size=256"):
        BatchSchedule.parse("256@0,300@5", 256).check(256)
