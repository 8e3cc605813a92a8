"""Golden values of the one learning-rate schedule, for each loop's settings in configs/demo.yaml.

The values are the floats the four former per-package copies returned (exact equality: the
demo's and bench's figures depend on every bit); the comment beside each gives the hand
computation. They are read through what the loops call (``step_decay_schedule(cfg)``, the SAM
and classifier modules' ``lr_schedule(cfg)``), so each mapping of config fields stays the one
these values were computed with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from weaksam.cam.config import ClassifierConfig
from weaksam.cam.training import lr_schedule as classifier_schedule
from weaksam.detection.config import DetectorTrainConfig
from weaksam.sam.training import SamTrainConfig
from weaksam.sam.training import lr_schedule as sam_schedule
from weaksam.train.schedule import lr_factor, step_decay_schedule
from weaksam.wsod.config import WSODTrainConfig

# configs/demo.yaml: wsod.train (steps 600, warm-up 50 from 1/3, x0.1 at 480)
WSOD = WSODTrainConfig(steps=600, warmup_steps=50, warmup_factor=1 / 3, lr_steps=(480,))
WSOD_GOLDEN = [
    (0, 0.3333333333333333),  # warm-up start: warmup_factor
    (25, 0.6666666666666666),  # alpha 0.5: 1/3 * 0.5 + 0.5
    (49, 0.9866666666666667),  # alpha 0.98: 1/3 * 0.02 + 0.98
    (50, 1.0),  # warm-up end
    (479, 1.0),
    (480, 0.1),  # the milestone: gamma
    (599, 0.1),  # last step
]
# configs/demo.yaml: retrain.train / wsis.train (steps 400, warm-up 20 from 1e-3, x0.1 at 320)
DETECTOR = DetectorTrainConfig(steps=400, warmup_steps=20, warmup_factor=1e-3, lr_steps=(320,))
DETECTOR_GOLDEN = [
    (0, 0.001),
    (10, 0.5005),  # 1e-3 * 0.5 + 0.5
    (19, 0.95005),  # 1e-3 * 0.05 + 0.95
    (20, 1.0),
    (319, 1.0),
    (320, 0.1),
    (399, 0.1),
]
# configs/demo.yaml: sam_train (steps 6000, warm-up 200 counted at each step's end, cosine)
SAM = SamTrainConfig(steps=6000, warmup_steps=200)
SAM_GOLDEN = [
    (0, 0.005),  # 1 / 200
    (99, 0.5),  # 100 / 200
    (199, 1.0),  # warm-up end: 200 / 200
    (200, 1.0),  # cosine start
    (3100, 0.525),  # t = 0.5: 0.05 + 0.95 * 0.5
    (5999, 0.05000006967987479),  # t = 5799/5800: 0.05 + 0.475 * (pi / 5800)^2 / 2
]
# configs/demo.yaml: classifier (45 epochs, 1 warm-up epoch, per-step epoch progress)
CLASSIFIER = dataclasses.replace(ClassifierConfig(), epochs=45, warmup_epochs=1)
CLASSIFIER_GOLDEN = [
    (0.0, 0.001),  # (0 + 1e-3) / 1: never a zero rate
    (0.5, 0.501),
    (1.0, 1.0),  # warm-up end, cosine start
    (23.0, 0.525),  # t = 0.5
    (44 + 6 / 7, 0.05002470917020865),  # the last of 7 steps of the last epoch
]


VARIANTS: dict[str, tuple[Callable[[float], float], list[tuple[float, float]]]] = {
    "wsod": (step_decay_schedule(WSOD), WSOD_GOLDEN),
    "detector": (step_decay_schedule(DETECTOR), DETECTOR_GOLDEN),
    "sam": (sam_schedule(SAM), SAM_GOLDEN),
    "classifier": (classifier_schedule(CLASSIFIER), CLASSIFIER_GOLDEN),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_loop_schedule_matches_golden_values(name: str) -> None:
    schedule, golden = VARIANTS[name]
    for step, expected in golden:
        got = schedule(step)
        assert type(got) is float
        assert got == expected, f"{name} step {step}: {got!r} != {expected!r}"


def test_step_schedule_direct() -> None:
    kw = dict(schedule="step", warmup=50, warmup_factor=1 / 3, milestones=(480,), gamma=0.1)
    assert [lr_factor(s, 600, **kw) for s, _ in WSOD_GOLDEN] == [v for _, v in WSOD_GOLDEN]
    # two milestones, no warm-up
    assert lr_factor(35, 40, schedule="step", milestones=(20, 30)) == 0.1**2
    # a milestone inside the warm-up multiplies the ramp
    both = lr_factor(5, 40, schedule="step", warmup=10, warmup_factor=0.0, milestones=(2,))
    assert both == 0.1 * 0.5


def test_cosine_schedule_direct() -> None:
    assert lr_factor(0, 100, schedule="cosine") == 1.0  # no warm-up
    assert lr_factor(50, 100, schedule="cosine") == 0.525
    assert lr_factor(100, 100, schedule="cosine") == 0.05
    assert lr_factor(1000, 100, schedule="cosine") == 0.05  # held after the end
    assert lr_factor(100, 100, schedule="cosine", final=0.0) == 0.0
    # warm-up as long as the run: the ramp only, no division by zero
    assert lr_factor(4, 5, schedule="cosine", warmup=5, warmup_offset=1) == 1.0


def test_unknown_schedule_raises() -> None:
    with pytest.raises(ValueError, match="known: \\['step', 'cosine'\\]"):
        lr_factor(0, 10, schedule="poly")
