"""Reference mode: one global switch that makes every fused fast path run its readable twin.

Each fast path (a fused function with a hand-written backward such as ``attention_lookup``, a
gradient kept in factored form, the in-place Adam update, the lazy gradient sums of the backward
sweep) has a composed reference directly above it in the source, named as a pair
(``attention_lookup_reference`` / ``attention_lookup``), built from primitive ops and
differentiated op by op. The fast one is declared with ``@fused(reference=...)``; inside
``with grad.reference_mode():`` calling it calls the reference instead, so a whole model can be
run (and its gradients compared) on the readable path without changing a line of it::

    with grad.reference_mode():
        y = F.layer_norm(x, (8,))        # runs F.layer_norm_reference
    grad.is_reference_mode()             # False again

Run the forward pass and its ``backward()`` in the same mode (a graph recorded on the fast path
holds factored gradients that only the fast accumulation sums).

The switch is a module-level flag, like ``grad.no_grad``: it is not thread-safe (two threads that
enter and leave it at different times see each other's setting). It is a way of running, not part
of a model: nothing about it is saved in a checkpoint.
"""
from __future__ import annotations

import functools

_reference = False
_fused = []                # every function declared with @fused, in the order they were defined


def is_reference_mode() -> bool:
    """Whether fused functions currently run their composed ``*_reference`` twins."""
    return _reference


def fused(reference):
    """Declare the decorated function the fast twin of ``reference`` (same arguments, same
    results; the tests gradcheck each pair against each other). The name it is defined under then
    calls ``reference`` inside ``grad.reference_mode()`` and the fast function otherwise: one flag
    test per call. The fast function is listed by ``fused_functions()``; the returned caller keeps
    both as ``.fast`` and ``.reference``."""
    def declare(fast):
        def call(*args, **kwargs):
            if _reference:
                return reference(*args, **kwargs)
            return fast(*args, **kwargs)
        functools.update_wrapper(call, fast)
        call.fast, call.reference = fast, reference
        _fused.append(fast)
        return call
    return declare


def fused_functions() -> tuple:
    """The fast functions declared with ``@fused`` (not their callers): none of them runs inside
    ``grad.reference_mode()``, which the tests check by tracing a training step."""
    return tuple(_fused)


class reference_mode:
    """Context manager (and decorator) that turns reference mode on, or off with
    ``reference_mode(False)``. Re-entrant: each exit restores the state its entry found, so nested
    blocks (even of the same object) unwind correctly."""

    def __init__(self, enabled: bool = True):
        self.enabled = bool(enabled)
        self._saved = []                       # one entry per active ``with`` of this object

    def __enter__(self):
        global _reference
        self._saved.append(_reference)
        _reference = self.enabled
        return self

    def __exit__(self, *exc_info):
        global _reference
        _reference = self._saved.pop()
        return False

    def __call__(self, fn):
        def wrapper(*args, **kwargs):
            with reference_mode(self.enabled):
                return fn(*args, **kwargs)
        wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
        return wrapper
