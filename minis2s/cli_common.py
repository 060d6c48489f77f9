"""What ``minis2s`` (minis2s/cli.py) and ``minis2s lm`` (minis2s/lm/cli.py) share: argument
types, the one-line-error parser, options both offer (``--threads``, ``--max-memory``,
``--reference``, ``--dtype``) and the checks and helpers both run. Both CLIs import from here;
neither imports the other's module."""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import warnings


# ------------------------------------------------------------------------ argument types
def _number_type(convert, ok, expected: str):
    """An argparse type: ``convert`` the text, then require ``ok(value)``."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


_positive_int = _number_type(int, lambda v: v > 0, "a positive integer")
_nonneg_int = _number_type(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number_type(float, lambda v: v > 0, "a positive number")
_unit_float = _number_type(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
# dropout and label smoothing of 1 leave nothing to learn from: the valid range is [0, 1)
_unit_open_float = _number_type(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
_nonneg_float = _number_type(float, lambda v: v >= 0.0, "a number >= 0")


def _memory_size(text):
    from .memory import parse_size
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_max_memory(parser) -> None:
    """``--max-memory SIZE``: the memory the command may plan for (``minis2s.memory``)."""
    parser.add_argument("--max-memory", type=_memory_size, metavar="SIZE",
                        help="refuse settings estimated to need more memory than SIZE (512M, 4G; "
                             "default: the memory available, MemAvailable)")


class UsageError(ValueError):
    """Contradictory or impossible options."""


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, ``(default: 5)``, unless its text already says
    it; on/off flags (default off) and options with no default value say nothing more."""

    _FLAGS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction,
              argparse._VersionAction, argparse._CountAction)

    def _shows_default(self, action) -> bool:
        return (action.option_strings and not isinstance(action, self._FLAGS)
                and action.default not in (None, argparse.SUPPRESS)
                and "default" not in (action.help or ""))

    def _get_help_string(self, action):
        text = action.help or ""
        if self._shows_default(action):
            text = (text + " (default: %(default)s)").strip()
        return text

    def _format_action(self, action):
        if not action.help and self._shows_default(action):
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``minis2s: error: ...`` and exit code 2, like every other
    refusal of the command (argparse's default prints the whole usage block first); every
    ``--help`` entry shows its default (``_HelpFormatter``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"minis2s: error: {message} (see '{self.prog} --help')\n")


@contextlib.contextmanager
def _warnings_to_stderr():
    """Show the library's warnings (skipped lines, dropped pairs, unknown tokens, truncation) as
    ``minis2s: warning: ...`` lines on stderr, every time they occur."""
    from .distributed import world
    comm = world()
    with warnings.catch_warnings():
        if comm is not None and not comm.is_root:      # rank 0 says it once for all ranks
            warnings.simplefilter("ignore")
            yield
            return
        warnings.simplefilter("always")
        warnings.showwarning = lambda msg, *a, **k: print(f"minis2s: warning: {msg}", file=sys.stderr)
        yield


def add_threads_option(parser) -> None:
    """``--threads N|auto`` on every command that computes (minis2s/threads.py says how auto chooses)."""
    from .threads import threads_arg
    parser.add_argument("--threads", type=threads_arg, default="auto", metavar="N|auto",
                        help="BLAS threads (default auto: the idle cores this process may use, "
                             "1 for small models)")


def set_threads(args, hidden_size=None) -> dict:
    """Apply ``--threads``; returns the choice (minis2s.threads.apply_threads). In a
    data-parallel run ``auto`` is the cores this rank may use / the ranks on its node."""
    from .distributed import world
    from .threads import apply_threads
    comm = world()
    return apply_threads(getattr(args, "threads", "auto"), hidden_size,
                         local_ranks=comm.local_size if comm is not None else 1)


def add_check_every_option(parser) -> None:
    """``--check-every N``: data-parallel runs compare the ranks' parameter checksums."""
    parser.add_argument("--check-every", type=_positive_int, default=100, metavar="N",
                        help="data-parallel (mpiexec) runs: compare the ranks' parameter checksums "
                             "every N steps (and at every checkpoint); a difference stops the run")


def print_data_parallel(batch_size, threads) -> None:
    """Rank 0's line about a data-parallel run (nothing in a single-process run)."""
    from .distributed import world
    comm = world()
    if comm is not None:
        print(comm.header(batch_size, threads["blas_threads"]), flush=True)
        print(f"  BLAS threads per rank: {threads['threads_reason']} (--threads N to override)",
              flush=True)


def saved_train_value(run_dir, key, default=None):
    """A ``train`` setting of the run in ``run_dir`` (``default`` when unreadable)."""
    try:
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
            return json.load(f)["train"].get(key, default)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return default


def tune_allocator() -> None:
    """Training allocates and frees large arrays at every step: keep the freed memory for reuse
    (``grad.backend.tune_host_allocator``; about 15% of a medium step, docs/performance.md)."""
    from grad import backend
    backend.tune_host_allocator()


def add_reference_and_dtype(parser) -> None:
    """``--reference`` (how this process runs, like ``--threads``: not a setting of the run, so a
    run may resume in either mode) and ``--dtype`` (a setting: the weights and optimizer state
    are made in it and saved in it; a resumed run keeps its own)."""
    parser.add_argument("--reference", action="store_true",
                        help="run every fused fast path as its composed, op-by-op reference "
                             "(grad.reference_mode(); slower, for reading and stepping through)")
    parser.add_argument("--dtype", choices=["float32", "float64"],
                        help="dtype of the weights and optimizer state (float64 for checking and "
                             "teaching; default: float32, with --resume the run's own)")


@contextlib.contextmanager
def running_mode(reference: bool):
    """The block in reference mode when ``reference`` (``grad.reference_mode``), else as it is."""
    import grad
    with grad.reference_mode(reference) if reference else contextlib.nullcontext():
        yield


def check_out_dir(path, flag: str = "--out") -> None:
    """An output directory given on the command line must be a directory or not exist yet: an
    existing file or a dangling symbolic link is bad input (exit 2), said before any work."""
    if path and os.path.lexists(path) and not os.path.isdir(path):
        if os.path.islink(path) and not os.path.exists(path):
            raise UsageError(f"{flag} {path}: a symbolic link to {os.readlink(path)}, which does "
                             "not exist; expected a directory")
        raise UsageError(f"{flag} {path}: exists and is not a directory")


def _require_training_memory(what: str, n_params: int, optimizer: str) -> None:
    """Refuse model sizes whose training cannot fit, before the data is read. The parameters are
    counted at the smallest vocabulary, so the estimate is a lower bound."""
    from .memory import require, training_bytes
    require(training_bytes(n_params, optimizer), f"training {what} ({n_params:,} parameters or more)")


def _read_lines(path, lazy: bool = False):
    """Input lines of a file (read whole: a bad byte is an error naming the file and line) or of
    standard input (``lazy``: as they arrive, for ``translate`` to answer each batch at once)."""
    from .data.parallel import iter_text_lines, read_text_lines
    if path:
        return read_text_lines(path)          # a bad byte is an error naming the file and line
    if sys.stdin.isatty():
        print("minis2s: reading sentences from standard input, one per line (Ctrl-D to end)",
              file=sys.stderr)
    binary = getattr(sys.stdin, "buffer", None)
    if binary is None:                        # a text stream put in place of stdin (tests)
        lines = (line.rstrip("\r\n") for line in sys.stdin)
    else:
        # The bytes, decoded by the rules of --input: a bad byte or UTF-16 is an error naming
        # the line of <stdin>, never a silent <unk>; a UTF-8 byte-order mark is dropped.
        lines = iter_text_lines(binary, "<stdin>")
    return lines if lazy else list(lines)


def _saved_hidden_size(run_dir):
    """The hidden size a run or model directory was trained with (None when unreadable: the
    command that reads the directory reports the problem)."""
    try:
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
            model = json.load(f)["model"]
            return int(model["d_model"] if model.get("arch") == "transformer"     # seq2seq or LM
                       or "hidden_size" not in model else model["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


