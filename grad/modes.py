"""Reference mode: one global switch that makes every fused fast path run its readable twin.

Each fused function with a hand-written backward (``layer_norm``, ``scaled_dot_product_attention``,
...) has a composed reference directly above it in the source, named as a pair
(``layer_norm_reference`` / ``layer_norm``), built from primitive ops and differentiated op by op.
Inside ``with grad.reference_mode():`` the fused function calls its twin instead, so a whole model
can be run (and its gradients compared) on the readable path without changing a line of it::

    with grad.reference_mode():
        y = F.layer_norm(x, (8,))        # runs F.layer_norm_reference
    grad.is_reference_mode()             # False again

The switch is a module-level flag, like ``grad.no_grad``: it is not thread-safe (two threads that
enter and leave it at different times see each other's setting). It is a way of running, not part
of a model: nothing about it is saved in a checkpoint.
"""
from __future__ import annotations

_reference = False


def is_reference_mode() -> bool:
    """Whether fused functions currently run their composed ``*_reference`` twins."""
    return _reference


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
