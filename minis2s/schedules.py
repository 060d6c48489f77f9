"""Learning-rate schedules as a function of the optimisation step.

The Transformer is trained with the schedule of "Attention is all you need" (section 5.3): the
rate rises linearly for ``warmup_steps`` steps, then falls as one over the square root of the
step. Here ``peak`` (``--lr``) is the rate reached at the end of the warm-up::

    lr(s) = peak * min(s / w, sqrt(w / s))          s = 1, 2, 3, ...  (the step about to be taken)

so ``lr(w) = peak``, ``lr(4 w) = peak / 2``. (The paper writes the same curve as
``d_model^-0.5 * min(s^-0.5, s * w^-1.5)``: its peak is ``(d_model * w)^-0.5``.)

Why a warm-up: Adam divides each step by a running estimate of the gradient's scale, and in the
first steps that estimate rests on a handful of gradients; a post-norm Transformer's early
gradients are also large near the output. Small first steps keep the first updates from throwing
the attention weights far off. The decay afterwards is slow, so no epoch count is needed.

``inverse_sqrt`` is a pure function of the step, so a resumed run gets exactly the rates of an
uninterrupted one (the trainer passes its global iteration count, which a checkpoint keeps).
"""
from __future__ import annotations

import math


def inverse_sqrt(step: int, peak: float, warmup_steps: int) -> float:
    """The learning rate for optimisation step ``step`` (counted from 1): a linear warm-up to
    ``peak`` over ``warmup_steps`` steps, then ``peak * sqrt(warmup_steps / step)``."""
    if step < 1:
        raise ValueError(f"inverse_sqrt: steps count from 1, got {step}")
    if warmup_steps < 1:
        raise ValueError(f"inverse_sqrt: warmup_steps must be at least 1, got {warmup_steps}")
    return peak * min(step / warmup_steps, math.sqrt(warmup_steps / step))


def inverse_sqrt_schedule(peak: float, warmup_steps: int):
    """``step -> lr``, for ``minis2s.trainer_core.Trainer(lr_for_step=...)``."""
    inverse_sqrt(1, peak, warmup_steps)                 # bad arguments fail here, not mid-run
    return lambda step: inverse_sqrt(step, peak, warmup_steps)
