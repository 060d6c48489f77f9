"""Exercises with checkers: write a piece of the library yourself, and have it checked against
the library's own implementation.

``minis2s exercise list`` lists them; ``minis2s exercise show N`` writes ``exercise_NN.py`` (the
functions' signatures, docstrings and shapes, with the bodies left to write) into the current
directory; ``minis2s exercise check N`` imports that file and compares what it computes with the
library: values, and for the backward passes the gradients (against the library's autograd, and
with ``grad.gradcheck`` against finite differences of the forward). A failed check prints what
is wrong, the first wrong coordinate, the expected and the computed value, and a hint.
``python -m minis2s.exercises`` is the same command.

Each exercise ships three files in this package: ``starters/exercise_NN.py`` (what ``show``
writes), ``solutions/exercise_NN.py`` (a solution that calls the library's own function, so it
passes by construction) and ``wrong/exercise_NN.py`` (a plausible wrong solution, with the
mistake students really make, which the check must catch). The tests run all three.
"""
from __future__ import annotations

from .exercise import HERE, Exercise  # noqa: F401  (the record, in its own file: catalog.py imports it)


def exercises() -> dict[int, Exercise]:
    """All exercises by number."""
    from .catalog import EXERCISES
    return {ex.number: ex for ex in EXERCISES}


def get(number: int) -> Exercise:
    table = exercises()
    if number not in table:
        raise ValueError(f"no exercise {number}; there are exercises 1 to {max(table)} "
                         "(minis2s exercise list)")
    return table[number]
