"""No import circles between the files of ``grad/`` and ``minis2s/``.

Every module is parsed with ``ast`` (not imported), and every import statement counts, also one
inside a function (the usual way a circle is hidden: it works until someone moves the import to
the top). Relative imports are resolved against the importing file's package; ``from P import
name`` points at the file ``P/name.py`` when that module exists, else at ``P`` itself. A package's
``__init__.py`` that Python runs on the way to a submodule is not counted as imported (every
file would then import its own package, and a package imports its files)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("grad", "minis2s")


def module_files() -> dict:
    """``{dotted module name: path}`` for every ``.py`` file of the packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict) -> set:
    """The modules of ``modules`` that the file ``path`` (module ``name``) imports anywhere."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:     # import a.b.c of a non-module attribute
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict):
    """One import circle as a list ``[a, b, ..., a]``, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle_between_files():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_parser_sees_imports_inside_functions_relative_ones_and_cycles():
    """The checker itself: a function-level relative import closing a circle is found."""
    modules = module_files()
    graph = import_graph()
    assert "minis2s.search" in graph["minis2s.models.seq2seq"]          # top-level relative
    assert "minis2s.translator" in graph["minis2s"]                     # inside a function
    assert "minis2s.cli_common" in graph["minis2s.lm.cli"]              # two dots up
    assert "minis2s.cli" not in graph["minis2s.lm.cli"]
    assert set(graph) == set(modules)
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
