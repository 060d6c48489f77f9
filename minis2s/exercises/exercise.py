"""One exercise: what the student writes, how it is checked, where its three files are."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Exercise:
    number: int
    title: str
    concept: str                  # where the idea is explained (docs/concepts.md section, ...)
    functions: tuple[str, ...]    # what the student writes
    check: Callable               # check(module, report) -> None, raises CheckFailed
    mistake: str                  # the plausible wrong solution's mistake, in a few words

    @property
    def file_name(self) -> str:
        return f"exercise_{self.number:02d}.py"

    def text(self, kind: str = "starters") -> str:
        """The ``starters``, ``solutions`` or ``wrong`` file of this exercise."""
        if kind not in ("starters", "solutions", "wrong"):
            raise ValueError(f"kind must be starters, solutions or wrong, got {kind!r}")
        return (HERE / kind / self.file_name).read_text(encoding="utf-8")
