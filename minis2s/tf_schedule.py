"""Scheduled sampling: the teacher-forcing ratio as a function of the epoch.

With a *constant* ``tf_ratio`` every epoch feeds the reference with the same probability; that is
the teacher-forcing ratio, not scheduled sampling. *Scheduled sampling* (Bengio et al., 2015)
starts with (mostly) teacher forcing and lowers the ratio as training goes on, so the model first
learns from correct prefixes and later learns to continue from its own, possibly wrong, ones.

With ``i = epoch - 1`` (epochs count from 1, so epoch 1 always uses ``tf_ratio``), ``r0 =
tf_ratio``, ``d = tf_decay`` and the floor ``m = tf_min``::

    constant          r = r0
    linear            r = max(m, r0 - d i)                               d > 0, subtracted per epoch
    exponential       r = max(m, r0 d^i)                                 0 < d < 1, factor per epoch
    inverse-sigmoid   r = max(m, r0 (d + 1) / (d + exp(i / d)))          d >= 1, epochs to the bend

The inverse sigmoid is Bengio et al.'s ``k / (k + exp(i / k))`` scaled by ``(k + 1) / k`` so
that epoch 1 uses ``r0`` like the other schedules; it stays near ``r0`` for about ``d log d``
epochs, then falls. ``tf_ratio_for_epoch`` is a pure function of the configuration and the
epoch, so a resumed run gets the same ratios as an uninterrupted one.
"""
from __future__ import annotations

import math

TF_SCHEDULES = ("constant", "linear", "exponential", "inverse-sigmoid")
DEFAULT_DECAY = {"linear": 0.1, "exponential": 0.8, "inverse-sigmoid": 5.0}


def check_tf_schedule(schedule: str, tf_ratio: float, decay: float | None = None,
                      minimum: float = 0.0) -> float | None:
    """Validate a schedule's settings; returns the decay to use (the schedule's default when
    ``decay`` is None). Raises ``ValueError`` naming the option at fault."""
    if schedule not in TF_SCHEDULES:
        raise ValueError(f"--tf-schedule must be one of {', '.join(TF_SCHEDULES)}, got {schedule!r}")
    if not 0.0 <= tf_ratio <= 1.0:
        raise ValueError(f"--tf-ratio must be in [0, 1], got {tf_ratio}")
    if not 0.0 <= minimum <= 1.0:
        raise ValueError(f"--tf-min must be in [0, 1], got {minimum}")
    if schedule == "constant":
        if decay is not None:
            raise ValueError("--tf-decay needs a --tf-schedule that decays (linear, exponential or "
                             "inverse-sigmoid); the constant schedule has none")
        return None
    if minimum > tf_ratio:
        raise ValueError(f"--tf-min ({minimum}) is above the starting --tf-ratio ({tf_ratio})")
    d = DEFAULT_DECAY[schedule] if decay is None else float(decay)
    ok = {"linear": (d > 0, "> 0 (subtracted per epoch)"),
          "exponential": (0 < d < 1, "in (0, 1) (factor per epoch)"),
          "inverse-sigmoid": (d >= 1, ">= 1 (Bengio et al.'s k)")}[schedule]
    if not (ok[0] and math.isfinite(d)):
        raise ValueError(f"--tf-decay for the {schedule} schedule must be {ok[1]}, got {decay}")
    return d


def tf_ratio_for_epoch(cfg, epoch: int) -> float:
    """The teacher-forcing ratio for ``epoch`` (from 1) under ``cfg.tf_schedule``, starting at
    ``cfg.tf_ratio`` (see the module docstring for the formulas). ``cfg`` needs ``tf_ratio`` and
    may have ``tf_schedule`` (default ``"constant"``), ``tf_decay`` and ``tf_min``."""
    schedule = getattr(cfg, "tf_schedule", "constant")
    r0, floor = float(cfg.tf_ratio), float(getattr(cfg, "tf_min", 0.0))
    d = check_tf_schedule(schedule, r0, getattr(cfg, "tf_decay", None), floor)
    if epoch < 1:
        raise ValueError(f"epochs count from 1, got {epoch}")
    i = epoch - 1
    if schedule == "constant":
        return r0
    if schedule == "linear":
        r = r0 - d * i
    elif schedule == "exponential":
        r = r0 * d ** i
    else:
        r = r0 * (d + 1.0) / (d + math.exp(min(i / d, 700.0)))
    return max(floor, min(r0, r))
