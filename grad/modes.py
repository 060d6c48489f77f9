"""Reference mode: a switch that makes fused fast paths run their readable twins, all of them
or a chosen few.

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

``reference_mode(only={...})`` swaps only the named fused functions (their short names, as
``fused_functions()`` lists them, or module-qualified ones such as
``"grad.functional.linear"``); every other one stays fast. It is how the cost of one fast path
is measured (``benchmarks/optimisations.py``: the same step with that function alone on its
reference)::

    with grad.reference_mode(only={"cross_entropy"}):
        loss = model.loss(*batch)        # cross_entropy_reference; linear, lstm_step ... fast
        loss.backward()
    grad.modes.reference_functions()     # () outside, ("cross_entropy",) inside

Only fused functions are swapped: ``grad.is_reference_mode()`` stays False inside a partial
block, so code that asks it (the seq2seq decoder's split input weight, for one) keeps its fast
layout. Some fast twins need another one: ``linear``, ``lstm_step``, ``attention_lookup`` and
``getitem`` send back gradients in factored or sparse form that only the fast ``accumulate``
sums (declared with ``@fused(..., requires=("accumulate",))``), so
``reference_mode(only={"accumulate"})`` is refused with a message naming them; swap them
together (``requirers("accumulate")`` lists them).

Run the forward pass and its ``backward()`` in the same mode (a graph recorded on the fast path
holds factored gradients that only the fast accumulation sums).

The switch is module-level state, like ``grad.no_grad``: it is not thread-safe (two threads that
enter and leave it at different times see each other's setting). It is a way of running, not
part of a model: nothing about it is saved in a checkpoint.
"""
from __future__ import annotations

import functools

_reference = False         # full reference mode: every fused function runs its reference
_only = frozenset()        # otherwise: the fast functions whose reference runs (reference_mode(only=))
_fused = []                # every function declared with @fused, in the order they were defined
_requires = {}             # fast function -> names of the fused functions it needs on their fast path


def is_reference_mode() -> bool:
    """Whether every fused function runs its composed ``*_reference`` twin (full reference mode;
    False under ``reference_mode(only=...)``, see ``reference_functions()``)."""
    return _reference


def reference_functions() -> tuple:
    """The names of the fused functions that run their reference now: all of them in full
    reference mode, the chosen ones under ``reference_mode(only=...)``, none otherwise."""
    return tuple(f.__name__ for f in _fused if _reference or f in _only)


def fused(reference, requires=()):
    """Declare the decorated function the fast twin of ``reference`` (same arguments, same
    results; the tests gradcheck each pair against each other). The name it is defined under then
    calls ``reference`` inside ``grad.reference_mode()`` (or when it is among ``only=``) and the
    fast function otherwise: one test per call. The fast function is listed by
    ``fused_functions()``; the returned caller keeps both as ``.fast`` and ``.reference``.

    ``requires``: names of fused functions whose FAST twin must run whenever this fast twin does
    (``linear`` sends factored weight gradients that only the fast ``accumulate`` sums);
    ``reference_mode(only=...)`` refuses a choice that would break that."""
    def declare(fast):
        def call(*args, **kwargs):
            if _reference or fast in _only:
                return reference(*args, **kwargs)
            return fast(*args, **kwargs)
        functools.update_wrapper(call, fast)
        call.fast, call.reference = fast, reference
        _fused.append(fast)
        _requires[fast] = tuple(requires)
        return call
    return declare


def fused_functions() -> tuple:
    """The fast functions declared with ``@fused`` (not their callers): none of them runs inside
    ``grad.reference_mode()``, which the tests check by tracing a training step."""
    return tuple(_fused)


def requirers(name: str) -> tuple:
    """Names of the fused functions whose fast twin needs ``name``'s fast twin (``requires=``):
    those that must run their reference too when ``name`` does."""
    target = _lookup(name)
    return tuple(f.__name__ for f in _fused if target.__name__ in _requires[f])


def _lookup(name: str):
    """The fast function called ``name`` (short or module-qualified), or a clear error."""
    found = [f for f in _fused if name in (f.__name__, f"{f.__module__}.{f.__name__}")]
    if not found:
        known = ", ".join(sorted(f.__name__ for f in _fused))
        raise ValueError(f"reference_mode(only=...): no fused function named {name!r} "
                         f"(known: {known})")
    if len(found) > 1:
        raise ValueError(f"reference_mode(only=...): {name!r} names several fused functions "
                         f"({', '.join(f'{f.__module__}.{f.__name__}' for f in found)}); "
                         f"use the module-qualified name")
    return found[0]


def _resolve(names) -> frozenset:
    """The fast functions called ``names``; refused when the choice swaps a function that a
    fast twin left fast needs (``requires=``)."""
    chosen = frozenset(_lookup(name) for name in ([names] if isinstance(names, str) else names))
    swapped = {f.__name__ for f in chosen}
    needers = sorted(f.__name__ for f in _fused if f not in chosen and set(_requires[f]) & swapped)
    if needers:
        missing = sorted({r for f in _fused if f.__name__ in needers for r in _requires[f]} & swapped)
        raise ValueError(f"reference_mode(only=...): {', '.join(missing)} cannot run its "
                         f"reference while {', '.join(needers)} "
                         f"{'runs' if len(needers) == 1 else 'run'} fast (their gradients need "
                         f"the fast {', '.join(missing)}); add them to only=")
    return chosen


class reference_mode:
    """Context manager (and decorator) that turns reference mode on, or off with
    ``reference_mode(False)``; ``reference_mode(only=names)`` turns it on for the named fused
    functions alone (checked when the object is made). Each entry sets the state outright (a
    block inside another replaces its setting, it does not add to it) and each exit restores the
    state its entry found, so nested blocks (even of the same object) unwind correctly."""

    def __init__(self, enabled: bool = True, *, only=None):
        self.enabled = bool(enabled)
        if only is not None and not self.enabled:
            raise ValueError("reference_mode(False, only=...): only= names the functions that run "
                             "their reference, so it needs enabled=True")
        self.only = None if only is None else _resolve(only)
        self._saved = []                       # one entry per active ``with`` of this object

    def __enter__(self):
        global _reference, _only
        self._saved.append((_reference, _only))
        if self.only is None:
            _reference, _only = self.enabled, frozenset()
        else:
            _reference, _only = False, self.only
        return self

    def __exit__(self, *exc_info):
        global _reference, _only
        _reference, _only = self._saved.pop()
        return False

    def __call__(self, fn):
        def wrapper(*args, **kwargs):
            with self._copy():
                return fn(*args, **kwargs)
        wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
        return wrapper

    def _copy(self) -> "reference_mode":
        copy = reference_mode(self.enabled)
        copy.only = self.only
        return copy
