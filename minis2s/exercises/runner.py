"""``minis2s exercise list | show N | check N``: the command (also ``python -m minis2s.exercises``).

Exit codes: 0 all checks passed (or list/show done), 1 a check failed, 2 bad input (no such
exercise, the file to write exists, the file to check is missing or cannot be imported).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def add_exercise_parser(sub) -> None:
    """Register ``exercise`` on the ``minis2s`` subcommand parser ``sub``."""
    ex = sub.add_parser("exercise", help="exercises with checkers: list, show N, check N",
                        description="Write a piece of the library yourself and have it checked "
                                    "against the library's own implementation.")
    _fill(ex)


def _fill(ex) -> None:
    esub = ex.add_subparsers(dest="exercise_command", metavar="ACTION")
    ls = esub.add_parser("list", help="list the exercises")
    ls.set_defaults(func=cmd_list)
    sh = esub.add_parser("show", help="write exercise_NN.py (the starter) into a directory")
    sh.add_argument("number", type=int, metavar="N")
    sh.add_argument("--dir", default=".", metavar="DIR", help="where to write it (default: here)")
    sh.add_argument("--force", action="store_true", help="overwrite an existing exercise_NN.py")
    sh.set_defaults(func=cmd_show)
    ck = esub.add_parser("check", help="check exercise_NN.py against the library")
    ck.add_argument("number", type=int, metavar="N")
    ck.add_argument("--file", metavar="PATH", help="the file to check (default: ./exercise_NN.py)")
    ck.set_defaults(func=cmd_check)
    ex.set_defaults(func=lambda args: ex.print_help() or 0)


def cmd_list(args) -> int:
    from . import exercises
    for ex in exercises().values():
        print(f"{ex.number:>3}  {ex.title:<52} {ex.concept}")
    print("\nminis2s exercise show N   writes exercise_NN.py here; "
          "minis2s exercise check N   checks it")
    return 0


def cmd_show(args) -> int:
    from . import get
    ex = get(args.number)
    out = Path(args.dir) / ex.file_name
    if not Path(args.dir).is_dir():
        raise ValueError(f"--dir {args.dir}: no such directory")
    if out.exists() and not args.force:
        raise ValueError(f"{out} already exists (your work?); check it with: minis2s exercise "
                         f"check {ex.number}, or overwrite it with --force")
    out.write_text(ex.text("starters"), encoding="utf-8")
    print(f"wrote {out}: write {', '.join(ex.functions)}, then run: minis2s exercise check {ex.number}"
          + (f" --file {out}" if Path(args.dir).resolve() != Path.cwd().resolve() else ""))
    return 0


def check_file(number: int, path) -> tuple[bool, list[str], object]:
    """Run exercise ``number``'s checks on the file ``path``: ``(passed, lines to print, the
    CheckFailed or None)``. Raises ``StudentFileError`` when the file is missing or cannot be
    imported."""
    import grad
    from . import get
    from .checking import CheckFailed, Report, load_student
    ex = get(number)
    module = load_student(path)
    report = Report()
    head = f"exercise {ex.number}: {ex.title}"
    try:
        with grad.backend.use("numpy"), np.errstate(all="ignore"):
            ex.check(module, report)
    except CheckFailed as failure:
        lines = [f"{head}: FAILED", *(f"  passed: {p}" for p in report.passed)]
        lines += ["  " + failure.lines()[0]] + ["    " + line for line in failure.lines()[1:]]
        return False, lines, failure
    return True, [f"{head}: all checks passed", *(f"  passed: {p}" for p in report.passed)], None


def cmd_check(args) -> int:
    from . import get
    from .checking import StudentFileError
    ex = get(args.number)
    path = Path(args.file) if args.file else Path(ex.file_name)
    try:
        ok, lines, _ = check_file(ex.number, path)
    except StudentFileError as exc:
        hint = f" (write it with: minis2s exercise show {ex.number})" if not path.exists() else ""
        print(f"minis2s: error: {exc}{hint}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0 if ok else 1


def main(argv=None) -> int:
    """``python -m minis2s.exercises ...``"""
    p = argparse.ArgumentParser(prog="python -m minis2s.exercises",
                                description="Exercises with checkers (the same as 'minis2s exercise').")
    p.error = lambda message: p.exit(2, f"minis2s: error: {message} (see '{p.prog} --help')\n")
    _fill(p)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"minis2s: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    sys.exit(main())
