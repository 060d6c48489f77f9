"""Every code reference in README.md and docs/**/*.md exists.

Inline code spans (single backticks, outside fenced blocks) are references when the whole span is

* a path ending in ``.py`` (``grad/functional.py``): the file exists relative to the repo root;
* a dotted name starting with ``grad.`` or ``minis2s.`` (``grad.functional.cross_entropy``,
  ``minis2s.models.Seq2Seq.beam_search``, also with call arguments ``minis2s.load(...)``): the
  longest importable module prefix is imported and the rest resolved with ``getattr`` (or, for a
  class, found as an annotated field or an ``self.NAME = ...`` assignment in its methods);
* ``path.py:name`` or ``path.py::name`` (``tests/test_train.py::test_x``, ``grad/ops.py:Add.backward``,
  a trailing ``[param-id]`` allowed): the file exists and defines ``name`` (a def, class or
  assignment at module level, or ``Class.member`` inside a class).

Other spans (``engine.state.epoch``, ``--epochs``, ``runs/dates``) are not checked.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_PATH = re.compile(r"[\w.\-]+(?:/[\w.\-]+)*\.py")
_DOTTED = re.compile(r"((?:grad|minis2s)(?:\.[A-Za-z_]\w*)+)(?:\(.*\))?")
_PATH_NAME = re.compile(rf"({_PATH.pattern})::?([A-Za-z_][\w.]*)(?:\[[^\]]*\])?")


@dataclass
class Ref:
    where: str      # file:line
    text: str       # the span
    kind: str       # "path", "name" or "path:name"


# ----------------------------------------------------------------------------- scanning
def scan(text: str, source: str) -> list[Ref]:
    """The code references among the inline code spans of a markdown text."""
    refs, fence = [], None
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if m and (fence is None or m[1][0] == fence[0] and len(m[1]) >= len(fence)):
            fence = m[1] if fence is None else None
            continue
        if fence is not None:
            continue
        for span in _SPAN.findall(line):
            span = span.strip()
            kind = ("path:name" if _PATH_NAME.fullmatch(span) else "path" if _PATH.fullmatch(span)
                    else "name" if _DOTTED.fullmatch(span) else None)
            if kind:
                refs.append(Ref(f"{source}:{lineno}", span, kind))
    return refs


# ----------------------------------------------------------------------------- checking
def check(ref: Ref, root: Path = ROOT) -> str | None:
    """Why the reference is broken, or None when it exists."""
    if ref.kind == "path":
        return None if (root / ref.text).is_file() else "no such file"
    if ref.kind == "path:name":
        path, name = _PATH_NAME.fullmatch(ref.text).groups()
        if not (root / path).is_file():
            return f"no such file {path}"
        tree = ast.parse((root / path).read_text(encoding="utf-8"))
        return None if _defines(tree.body, name.split(".")) else f"{path} does not define {name}"
    return resolve_name(_DOTTED.fullmatch(ref.text)[1])


def _defines(body, parts) -> bool:
    """Whether a module or class body defines the dotted ``parts`` (def, class or assignment)."""
    head, rest = parts[0], parts[1:]
    for node in body:
        names = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names = [node.target.id]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [(a.asname or a.name).split(".")[0] for a in node.names]
        elif isinstance(node, (ast.If, ast.Try)):                # definitions under if/try
            inner = node.body + node.orelse + [n for h in getattr(node, "handlers", []) for n in h.body]
            if _defines(inner, parts):
                return True
        if head in names:
            if not rest:
                return True
            if isinstance(node, ast.ClassDef) and (_defines(node.body, rest) or
                                                   (len(rest) == 1 and _self_assigns(node, rest[0]))):
                return True
    return False


def _self_assigns(cls_node, attr) -> bool:
    """Whether a method of the class assigns ``self.attr``."""
    return any(isinstance(n, ast.Attribute) and n.attr == attr and isinstance(n.value, ast.Name)
               and n.value.id == "self" and isinstance(n.ctx, ast.Store) for n in ast.walk(cls_node))


def resolve_name(dotted: str) -> str | None:
    """Import the longest importable prefix of ``dotted``, getattr the rest; None if it exists."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        module_name = ".".join(parts[:n])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is not None and module_name.startswith(e.name):
                continue                      # this prefix is not a module: try a shorter one
            return f"importing {module_name} failed: {e}"
        except Exception as e:                # noqa: BLE001 -- report any import error
            return f"importing {module_name} failed: {type(e).__name__}: {e}"
        for i, attr in enumerate(parts[n:]):
            if hasattr(obj, attr):
                obj = getattr(obj, attr)
            elif inspect.isclass(obj) and i == len(parts[n:]) - 1 and _class_has_instance_attr(obj, attr):
                return None
            else:
                return f"{'.'.join(parts[:n + i])} has no attribute {attr!r}"
        return None
    return f"no module {parts[0]}"


def _class_has_instance_attr(cls, attr) -> bool:
    """Dataclass fields without defaults and attributes set in methods (``self.attr = ...``)."""
    for klass in cls.__mro__:
        if attr in getattr(klass, "__annotations__", {}):
            return True
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        if any(_self_assigns(node, attr) for node in tree.body if isinstance(node, ast.ClassDef)):
            return True
    return False


def markdown_files(root: Path = ROOT) -> list[Path]:
    files = [root / "README.md"] if (root / "README.md").is_file() else []
    if (root / "docs").is_dir():
        files += sorted(p for p in (root / "docs").rglob("*.md") if p.is_file())
    return files


def broken_references(files, root: Path = ROOT) -> list[str]:
    problems = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        for ref in scan(path.read_text(encoding="utf-8"), rel):
            why = check(ref, root)
            if why:
                problems.append(f"{ref.where}: `{ref.text}`: {why}")
    return problems


# ----------------------------------------------------------------------------- the tests
def test_every_code_reference_in_the_docs_exists():
    files = markdown_files()
    if not files:
        pytest.skip("no README.md or docs/**/*.md in the repository yet")
    problems = broken_references(files)
    assert not problems, f"{len(problems)} broken code reference(s) in the docs:\n" + "\n".join(problems)


SAMPLE = """\
See `grad/functional.py` and `grad/no_such_file.py`, then `grad.functional.cross_entropy`
and `grad.functional.no_such_function`, `minis2s.engine.Engine.run`, `minis2s.engine.State.epoch`,
`minis2s.engine.Engine(process_fn)` and `minis2s.no_such_module.x`.

```python
x = `grad/not_checked_in_a_fence.py`
```

| `minis2s/engine.py:Engine.run` | `minis2s/engine.py::Engine.nope` | `tests/test_engine.py::test_order_of_events_for_2_epochs_of_3_iterations[x]` |

Not references: `engine.state.epoch`, `--epochs`, ``grad/double_backticks.py``, `runs/dates`,
`python grad/functional.py`, `minis2s/engine.py:State.iteration_in_epoch`.
"""


def test_the_scanner_finds_references_and_skips_fences_and_other_spans():
    refs = scan(SAMPLE, "doc.md")
    assert [(r.where, r.text, r.kind) for r in refs] == [
        ("doc.md:1", "grad/functional.py", "path"),
        ("doc.md:1", "grad/no_such_file.py", "path"),
        ("doc.md:1", "grad.functional.cross_entropy", "name"),
        ("doc.md:2", "grad.functional.no_such_function", "name"),
        ("doc.md:2", "minis2s.engine.Engine.run", "name"),
        ("doc.md:2", "minis2s.engine.State.epoch", "name"),
        ("doc.md:3", "minis2s.engine.Engine(process_fn)", "name"),
        ("doc.md:3", "minis2s.no_such_module.x", "name"),
        ("doc.md:9", "minis2s/engine.py:Engine.run", "path:name"),
        ("doc.md:9", "minis2s/engine.py::Engine.nope", "path:name"),
        ("doc.md:9", "tests/test_engine.py::test_order_of_events_for_2_epochs_of_3_iterations[x]", "path:name"),
        ("doc.md:12", "minis2s/engine.py:State.iteration_in_epoch", "path:name"),
    ]


def test_good_references_pass_and_bad_ones_are_reported(tmp_path):
    (tmp_path / "doc.md").write_text(SAMPLE, encoding="utf-8")
    for part in ("grad/functional.py", "minis2s/engine.py", "tests/test_engine.py"):
        (tmp_path / part).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / part).write_text((ROOT / part).read_text(encoding="utf-8"), encoding="utf-8")
    problems = broken_references([tmp_path / "doc.md"], tmp_path)
    assert [p.split(":")[1] + " " + p.split("`")[1] for p in problems] == [
        "1 grad/no_such_file.py", "2 grad.functional.no_such_function", "3 minis2s.no_such_module.x",
        "9 minis2s/engine.py::Engine.nope"]
    assert "no such file" in problems[0] and "has no attribute 'no_such_function'" in problems[1]
    assert "does not define Engine.nope" in problems[3]


def test_resolve_name_handles_modules_classes_and_instance_attributes():
    assert resolve_name("grad.functional") is None
    assert resolve_name("minis2s.engine.Events.ITERATION_COMPLETED") is None
    assert resolve_name("minis2s.engine.State.metrics") is None          # set in __init__
    assert "no attribute 'nope'" in resolve_name("minis2s.engine.State.nope")
    assert resolve_name("minis2s.nope") == "minis2s has no attribute 'nope'"
