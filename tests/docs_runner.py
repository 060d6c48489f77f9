"""Run the code blocks of README.md and docs/**/*.md (tests/test_docs.py runs this under pytest).

Conventions for doc writers
===========================

Fenced blocks (```` ``` ```` or ``~~~``, any indentation) are classified by the first word of
their info string:

``python``
    Executed in order, all the ``python`` blocks of one markdown file sharing one namespace (a
    later block can use what an earlier one defined), with ``__name__ == "__main__"``.  Stdout is
    captured.  If the block is followed, with only blank lines between, by a block whose info
    string is ``output``, the captured stdout must equal that block (see *Comparing output*).
    Without an ``output`` block only "it runs without raising" is checked.

``console``
    Shell commands, each on a line starting with ``$ `` (a line ending in ``\\`` continues on
    the next line).  The other lines, up to the next ``$ ``, are the expected stdout of the
    command before them; with none, the output is not compared.  Each command runs on its own
    as ``bash -c COMMAND`` (so ``cd`` or ``export`` do not carry over to the next ``$`` line;
    chain with ``&&``) and must exit with code 0.  Stderr is not compared (it is shown on failure).

``output``
    The expected output of the ``python`` block just before it; never run.

anything else (``text``, ``bash``, ``mermaid``, ``json``, no info string, ...)
    Shown, never run.  Use ``console`` for commands that are run.

Where things run
----------------
The blocks of one markdown file run in order in a fresh temporary directory (the working
directory for ``python`` blocks and ``console`` commands alike, so a file written by one block
can be read by a later one, and nothing lands in the repository), with the repository root first
on ``sys.path`` and on ``PYTHONPATH``.  ``console`` commands get a ``PATH`` that starts with a
directory holding ``python`` and ``python3`` shims that run the interpreter running the tests
(and a ``minis2s`` shim running ``python -m minis2s``, unless the interpreter's own bin directory
has the installed ``minis2s`` script), then that bin directory; and ``COLUMNS=80``,
``MPLBACKEND=Agg``, ``PYTHONIOENCODING=utf-8``.  A command is killed after 600 seconds
(``MINIS2S_DOCS_TIMEOUT`` overrides).

Not run: ``<!-- not-run -->``
-----------------------------
An HTML comment ``<!-- not-run -->`` (``<!-- not-run: any reason -->`` also works) on the line
before the fence (blank lines allowed between) shows a block without running it, for commands
that take minutes, need a GPU or install things.  It is still checked:

* ``python``: compiled (a syntax check); an ``output`` block after it is not compared.
* ``console``: every command of every ``$`` line (split at ``&&``, ``||``, ``;``, ``|``; leading
  ``VAR=value`` assignments skipped) must be known.  ``minis2s ...`` (or ``python -m minis2s
  ...``): ``minis2s SUBCOMMAND... --help`` must succeed and list every ``--flag`` (and ``-f``)
  the command uses.  ``python PATH.py``: the file must exist in the repository.  Otherwise the
  command may be preceded by an MPI launcher and its options (``mpiexec -n 2``, ``srun -N 2``;
  ``LAUNCHERS`` below), which is checked as the command it launches.  Otherwise the
  command must start with one of ``ALLOWED_PREFIXES`` below (``pip``, ``python -m pytest``,
  ``git``, ``bash .ci/run``, ...) or be one of ``ALLOWED_PROGRAMS`` (``printf``, ``cat``, ...).

Comparing output
----------------
Both sides have trailing whitespace removed from every line and trailing blank lines dropped,
then must be equal line by line, except that in the expected text

* a line that is just ``...`` matches any number of lines (zero or more), and
* ``[...]`` inside a line matches any text within that line (e.g. ``done in [...]s``).

Command line: ``python tests/docs_runner.py [FILE.md ...]`` runs the files (default: all) and
prints one line per block.
"""
from __future__ import annotations

import atexit
import contextlib
import difflib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_LANGS = ("python", "console")
ALLOWED_PREFIXES = (("pip",), ("pip3",), ("python", "-m", "pip"), ("python", "-m", "pytest"),
                    ("pytest",), ("git",), ("bash", ".ci/run"), (".ci/run",), ("nvidia-smi",))
ALLOWED_PROGRAMS = ("printf", "echo", "cat", "head", "tail", "ls", "cd", "mkdir", "rm", "cp",
                    "mv", "export", "grep", "wc", "diff", "sort", "uniq", "cut", "tr", "tee",
                    "touch", "sleep", "kill", "time")
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*?)[ \t]*$")
_NOT_RUN = re.compile(r"^\s*<!--\s*not-run\b.*-->\s*$")


@dataclass
class Block:
    """One fenced block: ``line`` is the 1-based line of its opening fence."""
    path: str
    line: int
    lang: str
    code: str
    not_run: bool = False
    expected: str | None = None     # python: the following ``output`` block, if any

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class Result:
    ok: bool
    message: str = ""


# ----------------------------------------------------------------------------- parsing
def parse_markdown(text: str, path: str = "<doc>") -> list[Block]:
    """Every fenced block of ``text``, in order; ``output`` blocks are attached to the ``python``
    block right before them (and also kept in the list, with lang ``output``)."""
    lines = text.splitlines()
    blocks, i, previous_end = [], 0, None
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        lang = (m["info"].split() or [""])[0].lower()
        j, body = i + 1, []
        while j < len(lines):
            close = _FENCE.match(lines[j])
            if close and close["fence"][0] == fence[0] and len(close["fence"]) >= len(fence) \
                    and not close["info"]:
                break
            body.append(_dedent(lines[j], indent))
            j += 1
        k = i - 1                                  # the marker: skip blank lines upwards
        while k >= 0 and not lines[k].strip():
            k -= 1
        block = Block(path, i + 1, lang, "\n".join(body) + ("\n" if body else ""),
                      not_run=k >= 0 and bool(_NOT_RUN.match(lines[k])))
        if lang == "output" and blocks and blocks[-1].lang == "python" and previous_end is not None \
                and all(not line.strip() for line in lines[previous_end + 1:i]):
            blocks[-1].expected = block.code
        blocks.append(block)
        previous_end, i = j, j + 1
    return blocks


def _dedent(line: str, indent: int) -> str:
    n = 0
    while n < indent and n < len(line) and line[n] in " \t":
        n += 1
    return line[n:]


def markdown_files(root: Path = ROOT) -> list[Path]:
    """README.md and docs/**/*.md that exist under ``root``, sorted."""
    files = [root / "README.md"] if (root / "README.md").is_file() else []
    if (root / "docs").is_dir():
        files += sorted(p for p in (root / "docs").rglob("*.md") if p.is_file())
    return files


def runnable_blocks(path: Path, root: Path = ROOT) -> list[Block]:
    rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    return [b for b in parse_markdown(path.read_text(encoding="utf-8"), rel) if b.lang in RUN_LANGS]


# ----------------------------------------------------------------------------- comparing
def _normalize(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _line_matches(pattern: str, line: str) -> bool:
    if "[...]" not in pattern:
        return pattern == line
    regex = ".*".join(re.escape(part) for part in pattern.split("[...]"))
    return re.fullmatch(regex, line, flags=re.DOTALL) is not None


def output_matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` matches ``expected`` with the ``...`` and ``[...]`` wildcards."""
    exp, act = _normalize(expected), _normalize(actual)
    # ok[j]: exp[:i] matches act[:j]; built row by row over the expected lines.
    ok = [True] + [False] * len(act)
    for pattern in exp:
        if pattern.strip() == "...":
            ok = [any(ok[:j + 1]) for j in range(len(act) + 1)]
        else:
            ok = [False] + [ok[j] and _line_matches(pattern, act[j]) for j in range(len(act))]
    return ok[len(act)]


def _diff(expected: str, actual: str) -> str:
    return "\n".join(difflib.unified_diff(_normalize(expected), _normalize(actual),
                                          "expected", "actual", lineterm=""))


# ----------------------------------------------------------------------------- console parsing
def parse_console(code: str) -> list[tuple[str, str | None]]:
    """``[(command, expected output or None), ...]`` from a console block."""
    commands, lines = [], code.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("$ ") and line.rstrip() != "$":
            if line.strip():
                raise ValueError(f"console block line {i + 1} is neither a '$ ' command nor "
                                 f"the output of one: {line!r}")
            i += 1
            continue
        command = [line[2:]]
        while command[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            command.append(lines[i])
        i += 1
        output = []
        while i < len(lines) and not lines[i].startswith("$ ") and lines[i].rstrip() != "$":
            output.append(lines[i])
            i += 1
        text = "\n".join(output)
        commands.append(("\n".join(command), text if text.strip() else None))
    return [(c, o) for c, o in commands if c.strip()]


def simple_commands(command: str) -> list[list[str]]:
    """The words of each simple command of a shell line, split at ``&& || ; | &``, with
    redirections and leading ``VAR=value`` assignments removed."""
    lexer = shlex.shlex(command.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    parts, current, skip_next = [], [], False
    for token in lexer:
        if skip_next:
            skip_next = False
        elif token in ("&&", "||", ";", "|", "&", "(", ")"):
            parts.append(current)
            current = []
        elif set(token) <= set("<>&") and token:          # > >> < >& &> ...: drop the target too
            skip_next = True
        elif not current and re.fullmatch(r"[A-Za-z_]\w*=.*", token):
            continue
        else:
            current.append(token)
    parts.append(current)
    return [p for p in parts if p]


# ----------------------------------------------------------------------------- environment
_SHIMS: Path | None = None


def _shim_dir() -> Path:
    global _SHIMS
    if _SHIMS is None:
        _SHIMS = Path(tempfile.mkdtemp(prefix="docs-shims-"))
        atexit.register(shutil.rmtree, _SHIMS, True)
        names = ["python", "python3"]
        if not (Path(sys.executable).parent / "minis2s").exists():
            names.append("minis2s")
        for name in names:
            module = " -m minis2s" if name == "minis2s" else ""
            shim = _SHIMS / name
            shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)}{module} "$@"\n')
            shim.chmod(0o755)
    return _SHIMS


def console_env() -> dict:
    env = dict(os.environ)
    path = [str(_shim_dir()), str(Path(sys.executable).parent), env.get("PATH", "")]
    env["PATH"] = os.pathsep.join(path)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(COLUMNS="80", MPLBACKEND="Agg", PYTHONIOENCODING="utf-8")
    return env


def run_shell(command: str, cwd) -> subprocess.CompletedProcess:
    timeout = float(os.environ.get("MINIS2S_DOCS_TIMEOUT", "600"))
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=console_env(), capture_output=True,
                          text=True, encoding="utf-8", errors="replace", timeout=timeout,
                          stdin=subprocess.DEVNULL)


# ----------------------------------------------------------------------------- checking
_HELP_CACHE: dict[tuple, subprocess.CompletedProcess] = {}


def _minis2s_help(words: list[str]) -> tuple[str | None, str]:
    """``minis2s SUBCOMMANDS --help`` for the longest prefix of the leading non-flag words that
    gives help (at least the first word when there is one): (help text or None, message)."""
    subs = []
    for w in words:
        if w.startswith("-"):
            break
        subs.append(w)
    for n in range(len(subs), 0 if subs else -1, -1):
        key = tuple(subs[:n])
        if key not in _HELP_CACHE:
            _HELP_CACHE[key] = run_shell(shlex.join(["minis2s", *key, "--help"]), ROOT)
        if _HELP_CACHE[key].returncode == 0:
            return _HELP_CACHE[key].stdout, ""
    cmd = shlex.join(["minis2s", *subs[:1], "--help"])
    return None, f"`{cmd}` failed: {_HELP_CACHE[tuple(subs[:1])].stderr.strip()[-500:]}"


LAUNCHERS = ("mpiexec", "mpirun", "srun")


def _launched(words: list[str]) -> list[str]:
    """The command an MPI launcher (``mpiexec -n 2 -hosts a,b minis2s train``) or ``srun`` runs:
    the words after the launcher's own options (``-x VALUE`` or ``--x=VALUE`` each)."""
    i = 1
    while i < len(words) and words[i].startswith("-"):
        i += 1 if "=" in words[i] else 2
    return words[i:]


def check_not_run_command(words: list[str]) -> str | None:
    """Why this command of a not-run console block is wrong, or None if it looks right."""
    if words[0] in LAUNCHERS:
        rest = _launched(words)
        if not rest:
            return f"`{shlex.join(words)}`: no command after the launcher's options"
        return check_not_run_command(rest)
    if words[:3] in (["python", "-m", "minis2s"], ["python3", "-m", "minis2s"]):
        words = ["minis2s", *words[3:]]
    if words[0] == "minis2s":
        text, message = _minis2s_help(words[1:])
        if text is None:
            return message
        flags = [w.split("=", 1)[0] for w in words[1:] if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", w)]
        missing = [f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
        return f"{shlex.join(words)}: option(s) {', '.join(missing)} not in its --help" if missing else None
    if words[0] in ("python", "python3") and len(words) > 1 and words[1].endswith(".py"):
        return None if (ROOT / words[1]).is_file() else f"{words[1]}: no such file in the repository"
    if any(tuple(words[:len(p)]) == p for p in ALLOWED_PREFIXES) or words[0] in ALLOWED_PROGRAMS:
        return None
    return (f"`{shlex.join(words)}` is not a known command for a not-run console block "
            f"(see ALLOWED_PREFIXES/ALLOWED_PROGRAMS in tests/docs_runner.py)")


class DocSession:
    """Runs the runnable blocks of one markdown file in order, in a temporary directory, with one
    namespace; ``result(i)`` runs blocks up to ``i`` (once each) and returns block ``i``'s result."""

    def __init__(self, blocks: list[Block]):
        self.blocks = blocks
        self.results: list[Result] = []
        self.namespace = {"__name__": "__main__"}
        self.tmp = tempfile.mkdtemp(prefix="docs-run-")
        atexit.register(shutil.rmtree, self.tmp, True)

    def result(self, index: int) -> Result:
        while len(self.results) <= index:
            block = self.blocks[len(self.results)]
            try:
                res = self._run(block)
            except Exception:                       # a bug in the runner or an odd block
                res = Result(False, traceback.format_exc())
            earlier = [b.id for b, r in zip(self.blocks, self.results) if not r.ok]
            if not res.ok and earlier:
                res.message += f"\n(note: earlier blocks in this file failed: {', '.join(earlier)})"
            self.results.append(res)
        return self.results[index]

    def _run(self, block: Block) -> Result:
        if block.lang == "python":
            return self._python(block)
        return self._console(block)

    def _python(self, block: Block) -> Result:
        source = "\n" * (block.line) + block.code          # tracebacks show the markdown's lines
        try:
            code = compile(source, block.path, "exec")
        except SyntaxError as e:
            return Result(False, f"{block.id}: syntax error: {e}")
        if block.not_run:
            return Result(True)
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        out, cwd = io.StringIO(), os.getcwd()
        np = sys.modules.get("numpy")
        printopts = np.get_printoptions() if np else None
        try:
            os.chdir(self.tmp)
            # The docs show NumPy-backed output: run them on NumPy whatever GRAD_BACKEND says.
            from grad import backend as grad_backend
            with contextlib.redirect_stdout(out), grad_backend.use("numpy"):
                exec(code, self.namespace)
        except (Exception, SystemExit) as e:
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            return Result(False, f"{block.id}: raised\n{tb}\nstdout so far:\n{out.getvalue()}")
        finally:
            os.chdir(cwd)
            if printopts is not None:
                np.set_printoptions(**printopts)
        if block.expected is not None and not output_matches(block.expected, out.getvalue()):
            return Result(False, f"{block.id}: the output differs from the ```output block\n"
                                 + _diff(block.expected, out.getvalue()))
        return Result(True)

    def _console(self, block: Block) -> Result:
        try:
            commands = parse_console(block.code)
        except ValueError as e:
            return Result(False, f"{block.id}: {e}")
        problems = []
        for command, expected in commands:
            if block.not_run:
                for words in simple_commands(command):
                    why = check_not_run_command(words)
                    if why:
                        problems.append(why)
                continue
            proc = run_shell(command, self.tmp)
            if proc.returncode != 0:
                return Result(False, f"{block.id}: `$ {command}` exited with code {proc.returncode}\n"
                                     f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
            if expected is not None and not output_matches(expected, proc.stdout):
                return Result(False, f"{block.id}: the output of `$ {command}` differs\n"
                                     + _diff(expected, proc.stdout) + f"\nstderr:\n{proc.stderr}")
        if problems:
            return Result(False, f"{block.id} (not-run): " + "\n".join(problems))
        return Result(True)


def run_text(text: str, path: str = "<doc>") -> list[tuple[Block, Result]]:
    """Run every runnable block of a markdown string; for tests of the runner itself."""
    blocks = [b for b in parse_markdown(text, path) if b.lang in RUN_LANGS]
    session = DocSession(blocks)
    return [(b, session.result(i)) for i, b in enumerate(blocks)]


def main(argv: list[str]) -> int:
    files = [Path(a).resolve() for a in argv] or markdown_files()
    failed = 0
    for path in files:
        blocks = runnable_blocks(path)
        session = DocSession(blocks)
        for i, block in enumerate(blocks):
            res = session.result(i)
            failed += not res.ok
            print(f"{'ok  ' if res.ok else 'FAIL'} {block.id} {block.lang}{' (not-run)' * block.not_run}")
            if not res.ok:
                print("    " + res.message.replace("\n", "\n    "))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
