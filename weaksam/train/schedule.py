"""Learning-rate schedules: the one multiplier of the base rate that every training loop uses.

Two schedules, each with an optional linear warm-up:

* ``step`` (the detectors): ``gamma ** (milestones passed)``, with the warm-up factor
  multiplied in (Detectron's ``WarmupMultiStepLR``);
* ``cosine`` (the classifier, SAM): 1 during the warm-up, then a half cosine from 1 at
  ``warmup`` to ``final`` at ``total``, held there after it.

The warm-up ramps linearly from ``warmup_factor`` at ``step + warmup_offset = 0`` to 1 at
``step + warmup_offset = warmup``. The offset exists because two loops count differently:
SAM's first step already trains at ``1 / warmup`` (offset 1) and the classifier starts at
``1e-3 / warmup_epochs`` of its epoch-progress ramp (offset ``1e-3``), where the detectors
start at ``warmup_factor`` (offset 0). The arithmetic is kept to the letter of the loops'
former copies, so every step's float is the same as before (``tests/train/test_schedule.py``).

:func:`step_decay_schedule` maps the detectors' ``train`` fields (``warmup_steps``,
``warmup_factor``, ``lr_steps``, ``gamma``) onto :func:`lr_factor`; SAM and the classifier map
their own fields in their training modules (``lr_schedule``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Protocol

SCHEDULES = ("step", "cosine")


def lr_factor(
    step: float,
    total: float,
    *,
    schedule: str,
    warmup: float = 0,
    warmup_factor: float = 0.0,
    warmup_offset: float = 0.0,
    milestones: Sequence[float] = (),
    gamma: float = 0.1,
    final: float = 0.05,
) -> float:
    """The learning-rate multiplier at ``step`` of ``total``.

    Args:
        step: 0-based optimiser step, or fractional epoch progress (the classifier).
        total: the schedule's length in the same unit (``cosine`` only).
        schedule: ``step`` or ``cosine`` (see the module docstring).
        warmup: warm-up length (0: none). warmup_factor: the ramp's value at its start.
        warmup_offset: added to ``step`` on the ramp (SAM 1, the classifier ``1e-3``).
        milestones / gamma: ``step`` multiplies by ``gamma`` at each milestone reached.
        final: ``cosine``'s factor at ``total``.

    Returns:
        A float, ``> 0`` for the loops' settings. Raises ``ValueError`` for an unknown
        ``schedule``.
    """
    if schedule == "step":
        factor = gamma ** sum(step >= m for m in milestones)
    elif schedule == "cosine":
        factor = 1.0
        if step >= warmup:
            t = (step - warmup) / max(1e-6, total - warmup)  # no division by 0 without decay
            factor = final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    else:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; known: {list(SCHEDULES)}")
    if step < warmup:
        alpha = (step + warmup_offset) / warmup
        factor *= warmup_factor * (1 - alpha) + alpha
    return float(factor)


class StepDecayConfig(Protocol):
    """The schedule fields of a loop trained with warm-up then step decay (the WSOD detector's
    and the retrained detectors' ``train`` sections)."""

    @property
    def steps(self) -> int: ...
    @property
    def warmup_steps(self) -> int: ...
    @property
    def warmup_factor(self) -> float: ...
    @property
    def lr_steps(self) -> Sequence[int]: ...
    @property
    def gamma(self) -> float: ...


def step_decay_schedule(cfg: StepDecayConfig) -> Callable[[int], float]:
    """The multiplier of each 0-based step of ``cfg``: linear warm-up from ``warmup_factor``
    over ``warmup_steps``, then x ``gamma`` at each of ``lr_steps``."""
    return partial(
        lr_factor,
        total=cfg.steps,
        schedule="step",
        warmup=cfg.warmup_steps,
        warmup_factor=cfg.warmup_factor,
        milestones=cfg.lr_steps,
        gamma=cfg.gamma,
    )
