"""The divergence guard: when a training step has gone numerically wrong, said exactly.

A step **diverges** when any of these holds:

1. the loss is not finite (inf or NaN);
2. a gradient element is not finite (seen as a non-finite global gradient norm);
3. a parameter element is not finite after the update;
4. a floating-point *overflow* or *invalid operation* (NumPy's error state) was flagged anywhere
   in the step: forward, backward, clipping or the optimiser update.

Why rule 4: whether a float32 overflow ends as ``inf``, as ``NaN`` or as a huge but finite loss
depends on the BLAS kernel (AVX-512 and Haswell kernels order their sums differently), so a guard
that waits for a NaN loss stops on one machine and saves a ruined model on another. The hardware
flag is raised wherever the overflow happens, so the rule is the same on every CPU. (CuPy has no
error state; there rules 1-3 apply.)

Norms are summed in float64 here, so that measuring a large but finite model does not overflow.

Outside training steps (validation, the final test), a flagged problem is not a divergence of
the update but is still worth knowing: it is reported once per kind and per run, as one
``warnings.warn`` line, instead of one NumPy warning per operation.
"""
from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np

from grad import backend as B


class TrainingError(RuntimeError):
    """Training cannot go on (the step diverged); the message says where and what."""


# NumPy's error-state kinds that count as a divergence; underflow is normal (exp of a very
# negative number), and divide-by-zero only makes infinities that rules 1-3 catch.
WATCHED = ("overflow", "invalid")
_KIND_WORDS = {"overflow": "floating-point overflow", "invalid": "invalid floating-point operation (NaN)"}


def param_norm(parameters) -> float:
    """The global L2 norm of the parameters, summed in float64 (finite for any finite model)."""
    xp = B.xp
    total = 0.0
    for p in parameters:
        a64 = xp.astype(p.data, xp.float64)
        total += float(B.to_numpy(xp.sum(a64 * a64)))
    return math.sqrt(total)


def all_finite(arrays) -> bool:
    """True when every element of every array is finite. A fast float32 sum is finite in the
    usual case; when it is not, the float64 sum decides (float32 values cannot add up to
    overflow a float64, so it is finite exactly when every element is)."""
    xp = B.xp
    total = None
    with np.errstate(over="ignore", invalid="ignore"):   # this check's own sums are not the step's
        for a in arrays:
            s = xp.sum(a)
            total = s if total is None else total + s
        if total is None or math.isfinite(float(B.to_numpy(total))):
            return True
        exact = sum(float(B.to_numpy(xp.sum(a, dtype=xp.float64))) for a in arrays)
    return math.isfinite(exact)


class DivergenceGuard:
    """Watches a training run for divergence (see the module docstring for the rules).

    Use ``with guard.run():`` around the whole run (steps, validation, test); inside it, each
    step runs as ``with guard.step(): ...`` and calls ``check_loss``, ``check_grad_norm`` and
    ``check_params`` at the three points of a step. A failed check returns a description of the
    problem (or ``None``); the trainer decides, by ``--nan-policy``, to stop or skip.
    """

    def __init__(self, warn=None):
        self._warn = warn or (lambda message: warnings.warn(message, RuntimeWarning, stacklevel=2))
        self._in_step = False
        self.step_flags: list[str] = []          # kinds flagged during the current step
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ error state
    def _on_flag(self, kind: str, flag: int) -> None:
        """NumPy's error callback: records the kind instead of printing a warning per op.
        NumPy names the kinds "overflow", "invalid value", "divide by zero", "underflow"."""
        kind = kind.split()[0]
        if self._in_step:
            if kind not in self.step_flags:
                self.step_flags.append(kind)
        else:
            self.warn_once(kind, f"{_KIND_WORDS.get(kind, kind)} outside a training step "
                                 "(validation or test); further ones are not shown")

    @contextlib.contextmanager
    def run(self):
        """The whole run under one error state: watched kinds call back, the rest are silent."""
        with np.errstate(over="call", invalid="call", divide="ignore", under="ignore",
                         call=self._on_flag):
            yield self

    @contextlib.contextmanager
    def step(self):
        self.step_flags = []
        self._in_step = True
        try:
            yield self
        finally:
            self._in_step = False

    def warn_once(self, kind: str, message: str) -> None:
        """One warning line per kind of problem, for the whole run."""
        if kind not in self._warned:
            self._warned.add(kind)
            self._warn(message)

    # ------------------------------------------------------------------ the three checks
    def _flagged(self, phase: str) -> str | None:
        if self.step_flags:
            kinds = " and ".join(_KIND_WORDS[k] for k in self.step_flags)
            return f"{kinds} in the {phase}"
        return None

    def check_loss(self, value: float) -> str | None:
        """After the forward pass: rule 1, and rule 4 for the forward pass."""
        flagged = self._flagged("forward pass")
        if not math.isfinite(value):
            return f"the loss became {value}" + (f" (after a {flagged})" if flagged else "")
        if flagged:
            return f"a {flagged} (loss {value:g})"
        return None

    def check_grad_norm(self, norm: float) -> str | None:
        """After backward and clipping: rule 2, and rule 4 for the backward pass."""
        if not math.isfinite(norm):
            return f"the gradient norm became {norm}"
        flagged = self._flagged("backward pass")
        return f"a {flagged}" if flagged else None

    def check_params(self, parameters) -> str | None:
        """After the optimiser update: rule 3, and rule 4 for the update."""
        named = list(parameters)
        if not all_finite([p.data for _, p in named]):
            bad = [name for name, p in named if not all_finite([p.data])]
            return f"a parameter became non-finite in the update ({', '.join(bad[:3])})"
        flagged = self._flagged("optimiser update")
        return f"a {flagged}" if flagged else None
