"""Code the docs (README.md, docs/*.md, docs/ko/*.md) quote from the project's source still occurs
in that source.

Marking a quote
===============
``<!-- quote: PATH -->`` (PATH relative to the repository root, e.g. ``grad/functional.py``)

* on its own line right above a fenced block (blank lines allowed between; above the
  ``<!-- not-run -->`` marker if the block has one) marks the block: every non-blank line of the
  block, stripped, must occur in PATH (as part of one of its lines, also stripped). A line that is just ``...`` marks an elision and is skipped.
* right before an inline code span in the same line (``the line <!-- quote: grad/optim.py
  -->`p.data = p.data - update```; renders as just the span) marks that span: its text must occur
  in PATH, whitespace runs counting as one space (so a quote may cover a statement that wraps
  lines); ``...`` inside the span elides up to 80 characters.

Which quotes must be marked (test_every_source_quote_carries_a_marker)
----------------------------------------------------------------------
* A fenced block that the docs test does not execute (any info string other than ``python``,
  ``console`` and ``output``, or a ``python`` block marked ``<!-- not-run -->``) whose non-blank
  lines, stripped, all occur in one project source file (a ``.py`` file under ``grad/``,
  ``minis2s/`` or ``tools/``), and at least one of which is 12 characters or longer, is a source
  quote and must be marked. (Executed blocks are examples, checked by running them.)
* An inline code span right after the words "the line" (how the walkthrough names breakpoints)
  or "the code" / "The code:" / "the code is exactly" / "The code is that (last) line," (how the
  derivations cite the backward) is a quote and must be marked. Other inline spans (names,
  formulas, commands) are not quotes; a writer may still mark one, and it is then checked.
"""
from __future__ import annotations

import re
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_runner import parse_markdown  # noqa: E402

_MARK_LINE = re.compile(r"^\s*<!--\s*quote:\s*(\S+)\s*-->\s*$")
_INLINE = re.compile(r"<!--\s*quote:\s*(\S+)\s*-->\s*`([^`\n]+)`")
_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_THE_LINE = re.compile(r"\b(the line|the code(?: is exactly| is that(?: last)? line,)?)\s*:?\s*$",
                       re.IGNORECASE)
SOURCE_DIRS = ("grad", "minis2s", "tools")


def markdown_files(root: Path = ROOT) -> list[Path]:
    """README.md, docs/*.md and docs/ko/*.md."""
    readme = [root / "README.md"] if (root / "README.md").is_file() else []
    docs = list((root / "docs").glob("*.md")) + list((root / "docs" / "ko").glob("*.md"))
    return readme + sorted(docs)


@lru_cache(maxsize=None)
def _source_lines(path: Path) -> tuple[str, ...]:
    return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines())


@lru_cache(maxsize=None)
def _source_flat(path: Path) -> str:
    """The file with every run of whitespace made one space (an inline quote may wrap lines)."""
    return " ".join(path.read_text(encoding="utf-8").split())


def span_occurs(span: str, flat: str) -> bool:
    """An inline quote occurs in the flattened file; ``...`` inside it stands for up to 80
    characters of elided code (``xp.mean(g_hat, ...)``)."""
    parts = [" ".join(part.split()) for part in span.split("...")]
    pattern = ".{0,80}?".join(re.escape(part) for part in parts)
    return re.search(pattern, flat) is not None


def source_files(root: Path = ROOT) -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in (root / d).rglob("*.py"))


def occurs(text: str, lines) -> bool:
    text = text.strip()
    return any(text in line for line in lines)


def _prose_lines(text: str):
    """(lineno, line) of the markdown lines outside fenced blocks."""
    fence = None
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if m and (fence is None or m[1][0] == fence[0] and len(m[1]) >= len(fence)):
            fence = m[1] if fence is None else None
            continue
        if fence is None:
            yield lineno, line


def marked_blocks(text: str, source: str):
    """(block, quoted path) for every fenced block with a quote marker above it."""
    lines = text.splitlines()
    out = []
    for block in parse_markdown(text, source):
        k = block.line - 2
        while k >= 0 and (not lines[k].strip() or re.match(r"^\s*<!--\s*not-run", lines[k])):
            k -= 1
        m = _MARK_LINE.match(lines[k]) if k >= 0 else None
        if m:
            out.append((block, m[1]))
    return out


def stale_quotes(text: str, source: str, root: Path = ROOT) -> list[str]:
    """One message per quoted line that no longer occurs in the file it names."""
    problems = []
    for block, rel in marked_blocks(text, source):
        path = root / rel
        if not path.is_file():
            problems.append(f"{block.id}: quotes {rel}, which does not exist")
            continue
        for i, line in enumerate(block.code.splitlines(), 1):
            if line.strip() and line.strip() != "..." and not occurs(line, _source_lines(path)):
                problems.append(f"{source}:{block.line + i}: not in {rel}: {line.strip()!r}")
    for lineno, line in _prose_lines(text):
        for rel, span in _INLINE.findall(line):
            path = root / rel
            if not path.is_file():
                problems.append(f"{source}:{lineno}: quotes {rel}, which does not exist")
            elif not span_occurs(span, _source_flat(path)):
                problems.append(f"{source}:{lineno}: not in {rel}: {span!r}")
    return problems


def unmarked_quotes(text: str, source: str, root: Path = ROOT) -> list[str]:
    """Blocks and spans that look like source quotes (the rule in the module docstring) but
    carry no marker."""
    sources = [(p.relative_to(root).as_posix(), _source_lines(p)) for p in source_files(root)]
    marked = {block.line for block, _ in marked_blocks(text, source)}
    problems = []
    for block in parse_markdown(text, source):
        executed = (block.lang in ("console", "output")
                    or (block.lang == "python" and not block.not_run))
        code = [line.strip() for line in block.code.splitlines() if line.strip()]
        if executed or block.line in marked or not code or max(map(len, code)) < 12:
            continue
        for rel, lines in sources:
            if all(occurs(line, lines) for line in code):
                problems.append(f"{block.id}: block quotes {rel} without a quote marker")
                break
    previous = ""
    for lineno, line in _prose_lines(text):
        quoted = {span for _, span in _INLINE.findall(line)}
        for m in _SPAN.finditer(line):
            span = m[1]
            before = line[:m.start()]
            if span in quoted:
                continue
            if _THE_LINE.search(before if before.strip() else previous):
                problems.append(f"{source}:{lineno}: `{span}` follows 'the line' or 'the code' "
                                "without a quote marker")
        previous = line
    return problems


# ----------------------------------------------------------------------------- the tests
def test_every_marked_quote_still_occurs_in_its_file():
    problems = []
    for path in markdown_files():
        problems += stale_quotes(path.read_text(encoding="utf-8"),
                                 path.relative_to(ROOT).as_posix())
    assert not problems, "stale quotes in the docs:\n" + "\n".join(problems)


def test_every_source_quote_carries_a_marker():
    problems = []
    for path in markdown_files():
        problems += unmarked_quotes(path.read_text(encoding="utf-8"),
                                    path.relative_to(ROOT).as_posix())
    assert not problems, "unmarked source quotes in the docs:\n" + "\n".join(problems)


def test_the_checker_catches_stale_and_unmarked_quotes(tmp_path):
    (tmp_path / "grad").mkdir()
    (tmp_path / "grad" / "m.py").write_text("def f(x):\n    return x * 2 + 1  # twice\n"
                                            "y = g(a, axis=1,\n      keepdims=True) - 3\n")
    good = ("<!-- quote: grad/m.py -->\n\n```python\ndef f(x):\n    ...\n    return x * 2 + 1\n```\n"
            "the line <!-- quote: grad/m.py -->`return x * 2 + 1`\n"
            "The code is that line, <!-- quote: grad/m.py -->`y = g(a, ...) - 3`\n")
    assert stale_quotes(good, "d.md", tmp_path) == []
    assert unmarked_quotes(good, "d.md", tmp_path) == []
    stale = ("<!-- quote: grad/m.py -->\n```text\nreturn x * 3\n```\n"
             "Breakpoint: the line <!-- quote: grad/m.py -->`return x - 1`\n"
             "and <!-- quote: grad/m.py -->`y = g(a, ...) - 4`\n"
             "<!-- quote: grad/gone.py -->\n```\nx\n```\n")
    assert [p.split(": ", 1)[1] for p in stale_quotes(stale, "d.md", tmp_path)] == [
        "not in grad/m.py: 'return x * 3'", "quotes grad/gone.py, which does not exist",
        "not in grad/m.py: 'return x - 1'", "not in grad/m.py: 'y = g(a, ...) - 4'"]
    unmarked = ("```text\ndef f(x):\n    return x * 2 + 1\n```\n\n"
                "```python\nreturn x * 2 + 1\n```\n"                  # executed: an example
                "Breakpoint: the line `y = 3`; also `return x * 2 + 1  # twice`.\n"
                "The code:\n`x * 2`\n")
    problems = unmarked_quotes(unmarked, "d.md", tmp_path)
    assert problems == ["d.md:1: block quotes grad/m.py without a quote marker",
                        "d.md:9: `y = 3` follows 'the line' or 'the code' without a quote marker",
                        "d.md:11: `x * 2` follows 'the line' or 'the code' without a quote marker"]
